//! The README's CLI quick start, command for command, against a real
//! corebank process, as a person would type it (ids read from `--json`).

use std::path::Path;
use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_tests::harness::{TestDb, lease_namespace};
use serde_json::Value;
use tokio::process::Command;

mod common;
use common::{connect, database_url, free_ports, port, spawn_corebank};

/// `corebank args…` presenting the CLI's own default credentials (the
/// development operator token it signs with `key`); stdout as JSON.
async fn corebank(args: &[&str], endpoints: &[String], key: &Path) -> Value {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_corebank"))
            .args(args)
            .args(endpoints)
            .arg("--json")
            .env("COREBANK_DEV_SIGNING_KEY", key)
            .env_remove("COREBANK_TOKEN")
            .output(),
    )
    .await
    .expect("the command ends")
    .expect("the command runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "corebank {args:?}: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_quick_start_works_with_the_clis_own_credentials() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let namespace = lease.namespace();
    let ports = free_ports();
    let key = std::env::temp_dir().join(format!("{}-signing.key.pem", db.name));
    corebank_platform::auth::DevKey::load_or_create_at(&key).expect("a signing key");
    let _corebank = spawn_corebank(&database_url(&db.name), namespace.as_str(), &ports, &key);
    for service in SERVICES {
        connect(port(&ports, service.name())).await;
    }
    let endpoints: Vec<String> = [
        "customer",
        "account",
        "transaction",
        "orchestrator",
        "fraud",
    ]
    .iter()
    .flat_map(|name| {
        [
            format!("--{name}-endpoint"),
            format!("http://{}", port(&ports, name)),
        ]
    })
    .collect();

    let customer = corebank(
        &[
            "customer",
            "create",
            "--legal-name",
            "Ada Lovelace",
            "--email",
            "ada@example.com",
            "--date-of-birth",
            "1990-12-10",
            "--country",
            "GB",
            "--national-id",
            "AB123456C",
        ],
        &endpoints,
        &key,
    )
    .await;
    let customer_id = text(&customer, "customerId");
    let verified = corebank(
        &[
            "customer",
            "verify",
            &customer_id,
            "--reason",
            "passport checked",
        ],
        &endpoints,
        &key,
    )
    .await;
    assert_eq!(verified["kycStatus"], "KYC_STATUS_VERIFIED", "{verified}");
    let open_args = [
        "account",
        "open",
        "--customer-id",
        &customer_id,
        "--currency",
        "USD",
    ];
    let from = text(&corebank(&open_args, &endpoints, &key).await, "accountId");
    let to = text(&corebank(&open_args, &endpoints, &key).await, "accountId");
    let moves: [&[&str]; 3] = [
        &[
            "deposit",
            "--account-id",
            &from,
            "--amount",
            "100.00",
            "--currency",
            "USD",
        ],
        &[
            "transfer",
            "--from",
            &from,
            "--to",
            &to,
            "--amount",
            "30.50",
            "--currency",
            "USD",
        ],
        &[
            "withdraw",
            "--account-id",
            &from,
            "--amount",
            "10",
            "--currency",
            "USD",
        ],
    ];
    for args in moves {
        let moved = corebank(args, &endpoints, &key).await;
        assert_eq!(
            moved["status"], "TRANSACTION_STATUS_COMPLETED",
            "{args:?}: {moved}"
        );
    }
    let balance = corebank(&["account", "balance", &from], &endpoints, &key).await;
    assert_eq!(balance["ledger"]["amount"], "59.50", "{balance}");
    let sagas = corebank(&["saga", "list"], &endpoints, &key).await;
    assert_eq!(sagas["sagas"].as_array().map(Vec::len), Some(3), "{sagas}");

    drop(_corebank);
    let _ = std::fs::remove_file(&key);
}
