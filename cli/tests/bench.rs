//! The benches against a real corebank process: a run completes every saga
//! it starts, keeps every invariant and reports its figures as JSON. No
//! figure is judged (speed is for `scripts/bench` on a quiet machine).

use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_tests::harness::{TestDb, lease_namespace};
use serde_json::Value;
use tokio::process::Command;

mod common;
use common::{connect, database_url, free_ports, port, spawn_corebank_with};

/// Runs `corebank args…` against the services on `ports`, presenting
/// tokens signed with `key`; its JSON report, once it exits 0.
async fn run(args: &[&str], key: &std::path::Path) -> Value {
    let output = tokio::time::timeout(
        Duration::from_secs(240),
        Command::new(env!("CARGO_BIN_EXE_corebank"))
            .args(args)
            .env("COREBANK_DEV_SIGNING_KEY", key)
            .env_remove("COREBANK_TOKEN")
            .output(),
    )
    .await
    .expect("the bench ends")
    .expect("the bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{args:?}: not JSON on stdout ({error}); stderr: {stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_saga_bench_and_the_gateway_bench_run_against_a_real_corebank_and_report() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let namespace = lease.namespace();
    let database_url = database_url(&db.name);
    let ports = free_ports();
    let key = std::env::temp_dir().join(format!("{}-signing.key.pem", db.name));
    corebank_platform::auth::DevKey::load_or_create_at(&key).expect("a signing key");
    // The gateway bench reads as fast as it can: lift the per-partner limit.
    let _corebank = spawn_corebank_with(
        &database_url,
        namespace.as_str(),
        &ports,
        &key,
        &[
            ("COREBANK_RATE_LIMIT_PER_SECOND", "1000000"),
            ("COREBANK_RATE_LIMIT_BURST", "1000000"),
        ],
    );
    for service in SERVICES {
        connect(port(&ports, service.name())).await;
    }
    let endpoint = |name: &str| format!("http://{}", port(&ports, name));
    let (customer, account, transaction) = (
        endpoint("customer"),
        endpoint("account"),
        endpoint("transaction"),
    );

    let report = run(
        &[
            "bench",
            "--json",
            "--accounts",
            "4",
            "--transfers",
            "40",
            "--concurrency",
            "4",
            "--seed",
            "7",
            "--zipf",
            "1.1",
            "--mix",
            "transfer=3,deposit=1,withdrawal=1",
            "--stats-settle-ms",
            "0",
            "--database-url",
            &database_url,
            "--customer-endpoint",
            &customer,
            "--account-endpoint",
            &account,
            "--transaction-endpoint",
            &transaction,
        ],
        &key,
    )
    .await;
    assert_eq!(report["completed"], 40, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert_eq!(report["zipf"], 1.1);
    assert_eq!(report["mix"], "transfer=0.60,deposit=0.20,withdrawal=0.20");
    assert!(report["sagas_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    // Every message travels in some AMQP message, and a batch envelope
    // carries one or more: between one publish per saga and one per message.
    let messages = report["messages_per_saga"].as_f64().unwrap();
    let publishes = report["publishes_per_saga"].as_f64().unwrap();
    assert!(publishes >= 1.0 && publishes <= messages, "{report}");
    // The hops: every transfer's reserve went from the orchestrator to the
    // account service, enqueued before it was published and published
    // before it was handled.
    let hops = report["hops"].as_array().expect("hops");
    let reserve = hops
        .iter()
        .find(|hop| {
            hop["from"] == "orchestrator"
                && hop["to"] == "account"
                && hop["message_type"] == "corebank.v1.ReserveFundsCommand"
        })
        .unwrap_or_else(|| panic!("no reserve hop: {report}"));
    // Transfers and withdrawals reserve; deposits do not.
    assert!(reserve["messages"].as_i64().unwrap() >= 1, "{report}");
    for field in ["outbox_p50_ms", "delivery_p50_ms"] {
        let ms = reserve[field].as_f64().unwrap();
        assert!(ms >= 0.0, "{field}: {report}");
    }
    // The CPU the transfers cost, read from /proc: the local PostgreSQL
    // served every saga, so its share is above nothing.
    if std::path::Path::new("/proc/stat").exists() {
        let cpu = &report["cpu"];
        assert!(cpu["total_ms_per_saga"].as_f64().unwrap() > 0.0, "{report}");
        assert!(
            cpu["ms_per_saga"]["postgres"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        let busy = cpu["busy_pct"].as_f64().unwrap();
        assert!(busy > 0.0 && busy <= 100.0, "{report}");
    }

    let gateway = endpoint("gateway");
    let report = run(
        &[
            "bench-gateway",
            "--json",
            "--concurrency",
            "2",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--gateway-url",
            &gateway,
            "--account-endpoint",
            &account,
        ],
        &key,
    )
    .await;
    for path in ["grpc", "rest"] {
        assert!(report[path]["requests"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report[path]["errors"], 0, "{report}");
    }

    drop(_corebank);
    let _ = std::fs::remove_file(&key);
}
