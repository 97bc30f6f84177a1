//! The generated OpenAPI document validates with openapi-spec-validator
//! (from PyPI, in the project's own virtual environment that
//! `scripts/lib/pyvenv.sh` makes). Nothing is skipped: if the tool cannot be
//! installed, the test fails and says why.

use std::path::Path;
use std::process::Command;

use corebank_gateway::openapi::document;
use corebank_gateway::routes::RouteTable;
use prost_reflect::DescriptorPool;

fn validate(pool: &DescriptorPool, name: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = Command::new("bash")
        .arg(root.join("scripts/lib/pyvenv.sh"))
        .output()
        .expect("run scripts/lib/pyvenv.sh");
    assert!(
        venv.status.success(),
        "scripts/lib/pyvenv.sh could not provide openapi-spec-validator: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let venv = String::from_utf8(venv.stdout).expect("a path");
    let validator = Path::new(venv.trim()).join("bin/openapi-spec-validator");

    let table = RouteTable::from_pool(pool).expect("routes");
    let dir = root.join("target/openapi");
    std::fs::create_dir_all(&dir).expect("target/openapi");
    let file = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&document(&table)).expect("json");
    std::fs::write(&file, text).expect("write the document");

    let checked = Command::new(&validator)
        .arg(&file)
        .output()
        .expect("run the validator");
    assert!(
        checked.status.success(),
        "{} does not validate:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn the_corebank_openapi_document_validates() {
    let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("pool");
    validate(&pool, "corebank");
}

#[test]
fn the_document_with_a_later_added_service_validates() {
    let pool = corebank_gateway::testing::echo_pool().expect("test protos");
    validate(&pool, "corebank-with-echo");
}
