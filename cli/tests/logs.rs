//! What `corebank up` writes to a log collector: run as a service manager
//! runs it (stderr a pipe, the default log level), through customers, funded
//! accounts and transfers, and stopped with SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use corebank_tests::harness::{TestDb, lease_namespace};
use serde_json::Value;
use tokio::io::AsyncReadExt;

#[path = "common/mod.rs"]
mod common;
use common::workload::{
    Clients, Load, open_funded_accounts, operator, until_every_transaction_ends,
};
use common::{Launch, counter, database_url, free_port, free_ports, signal};

const TRANSFERS: usize = 80;

/// Every line is a JSON object (no colour codes), the broker's return of an
/// event nobody subscribes to is not logged (its bytes least of all), nothing
/// is logged at ERROR, no customer's name or email appears, and the whole
/// log stays small per saga.
#[tokio::test(flavor = "multi_thread")]
async fn logs_off_a_terminal_are_json_lines_without_message_dumps_errors_or_customer_data() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let ports = free_ports();
    let key = std::env::temp_dir().join(format!(
        "corebank-logs-{}.key.pem",
        corebank_tests::harness::key()
    ));
    let operator = operator(&key);
    let metrics = free_port();
    let database_url = database_url(&db.name);
    let amqp_url = corebank_tests::harness::amqp_url();
    let launch = Launch {
        database_url: &database_url,
        broker_url: &amqp_url,
        namespace: lease.namespace().as_str(),
        ports: &ports,
        key: &key,
        // The level a deployment runs at, not the tests' usual `warn`.
        env: &[("RUST_LOG", "info")],
        metrics,
    };
    let mut corebank = launch
        .command(&["up"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("corebank starts");
    let mut stderr = corebank.stderr.take().expect("a piped stderr");
    let log = tokio::spawn(async move {
        let mut text = String::new();
        stderr
            .read_to_string(&mut text)
            .await
            .expect("read the log");
        text
    });

    let clients = Clients::connect(&ports, &operator).await;
    let accounts = open_funded_accounts(&clients, 4, "500.00").await;
    let load = Load::start(
        &clients,
        accounts,
        TRANSFERS,
        4,
        Duration::ZERO,
        Duration::from_secs(60),
    );
    let accepted = load.finish().await;
    until_every_transaction_ends(&db.owner, Duration::from_secs(60))
        .await
        .expect("every transaction ends");
    let unroutable = counter(metrics, "corebank_messaging_unroutable_total", "").await;
    signal(&corebank, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(60), corebank.wait())
        .await
        .expect("corebank stops")
        .expect("wait for corebank");
    assert!(status.success(), "corebank exited with {status}");
    let text = log.await.expect("the log reader");
    let _ = std::fs::remove_file(&key);

    let sagas: i64 = sqlx::query_scalar("select count(*) from orchestrator.saga")
        .fetch_one(&db.owner)
        .await
        .expect("count sagas");
    let bytes_per_saga = text.len() as f64 / sagas as f64;
    eprintln!(
        "{} log lines, {} bytes for {sagas} sagas ({accepted} transfers): {bytes_per_saga:.0} \
         bytes per saga; {unroutable} events went to no subscriber",
        text.lines().count(),
        text.len()
    );
    assert!(
        unroutable > 0.0,
        "no event went unrouted: the quiet path was not exercised"
    );
    assert!(!text.contains('\u{1b}'), "colour codes in the log");
    for line in text.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        let level = event["level"].as_str().unwrap_or_default();
        assert!(!level.is_empty(), "a line without a level: {line}");
        assert_ne!(level, "ERROR", "an error was logged: {line}");
    }
    assert!(
        !text.contains("returned us a message"),
        "an unrouted event was logged with its bytes"
    );
    for personal in ["Load Test", "@example.com"] {
        assert!(
            !text.contains(personal),
            "the log holds customer data ({personal})"
        );
    }
    assert!(
        bytes_per_saga < 1536.0,
        "{bytes_per_saga:.0} bytes of log per saga at INFO"
    );
}
