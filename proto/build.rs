//! Compiles `proto/` with protox (no `protoc` binary) and writes the encoded
//! descriptor set that reflection and the REST facade read.

use std::path::PathBuf;

const FILES: &[&str] = &[
    "corebank/v1/auth.proto",
    "corebank/v1/common.proto",
    "corebank/v1/customer.proto",
    "corebank/v1/account.proto",
    "corebank/v1/messages.proto",
    "corebank/v1/transaction.proto",
    "corebank/v1/orchestrator.proto",
    "corebank/v1/fraud.proto",
    "corebank/v1/reporting.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;
    // Encoded by protox itself: re-encoding prost_types would drop the
    // google.api.http extension options.
    std::fs::write(
        out_dir.join("corebank_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // Type names let the CLI and the REST facade find each message's descriptor.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}
