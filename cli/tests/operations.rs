//! What the people who run corebank see of it: the log a collector reads
//! and the metrics Prometheus scrapes, from a whole `corebank up` run as a
//! service manager runs it (stderr a pipe, the default log level) through
//! customers, funded accounts, transfers and REST calls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_platform::auth::{Audience, DevKey, PARTNER_SCOPES, TokenSpec};
use corebank_platform::service::Peers;
use corebank_tests::harness::{NamespaceLease, TestDb, lease_namespace};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::Child;

#[path = "common/mod.rs"]
mod common;
use common::http::http;
use common::workload::{
    Clients, Load, open_funded_accounts, operator, until_every_transaction_ends,
};
use common::{Launch, counter, database_url, free_port, free_ports, port, signal};

const TRANSFERS: usize = 80;

/// A whole corebank with `env` set besides the usual, its stderr piped.
struct System {
    db: TestDb,
    _lease: NamespaceLease,
    ports: Peers,
    key: PathBuf,
    metrics: SocketAddr,
    corebank: Child,
    clients: Clients,
}

impl System {
    async fn start(name: &str, env: &[(&str, &str)]) -> System {
        let db = TestDb::create(&[]).await;
        let lease = lease_namespace().await;
        let ports = free_ports();
        let key = std::env::temp_dir().join(format!(
            "corebank-{name}-{}.key.pem",
            corebank_tests::harness::key()
        ));
        let operator = operator(&key);
        let metrics = free_port();
        let database_url = database_url(&db.name);
        let amqp_url = corebank_tests::harness::amqp_url();
        let corebank = Launch {
            database_url: &database_url,
            broker_url: &amqp_url,
            namespace: lease.namespace().as_str(),
            ports: &ports,
            key: &key,
            env,
            metrics,
        }
        .command(&["up"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("corebank starts");
        let clients = Clients::connect(&ports, &operator).await;
        System {
            db,
            _lease: lease,
            ports,
            key,
            metrics,
            corebank,
            clients,
        }
    }

    /// Funded accounts and [`TRANSFERS`] transfers among them, every one ended.
    async fn move_money(&self) -> i64 {
        let accounts = open_funded_accounts(&self.clients, 4, "500.00").await;
        let load = Load::start(
            &self.clients,
            accounts,
            TRANSFERS,
            4,
            Duration::ZERO,
            Duration::from_secs(60),
        );
        let accepted = load.finish().await;
        until_every_transaction_ends(&self.db.owner, Duration::from_secs(60))
            .await
            .expect("every transaction ends");
        accepted
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key);
    }
}

/// Every line is a JSON object (no colour codes), the broker's return of an
/// event nobody subscribes to is not logged (its bytes least of all), nothing
/// is logged at ERROR, no customer's name or email appears, and the whole
/// log stays small per saga.
#[tokio::test(flavor = "multi_thread")]
async fn logs_off_a_terminal_are_json_lines_without_message_dumps_errors_or_customer_data() {
    // The level a deployment runs at, not the tests' usual `warn`.
    let mut system = System::start("logs", &[("RUST_LOG", "info")]).await;
    let mut stderr = system.corebank.stderr.take().expect("a piped stderr");
    let log = tokio::spawn(async move {
        let mut text = String::new();
        stderr
            .read_to_string(&mut text)
            .await
            .expect("read the log");
        text
    });

    let accepted = system.move_money().await;
    let unroutable = counter(system.metrics, "corebank_messaging_unroutable_total", "").await;
    signal(&system.corebank, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(60), system.corebank.wait())
        .await
        .expect("corebank stops")
        .expect("wait for corebank");
    assert!(status.success(), "corebank exited with {status}");
    let text = log.await.expect("the log reader");

    let sagas: i64 = sqlx::query_scalar("select count(*) from orchestrator.saga")
        .fetch_one(&system.db.owner)
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

/// After money moved through gRPC and REST, the scrape holds the metrics the
/// README's catalogue promises for that work, with the labels it names: saga
/// outcomes and whole-saga durations that agree in number, step latencies,
/// the gauges of running sagas and of the review queue, outbox and consumer
/// lag, screening decisions, the projection's lag, gRPC requests, and the
/// gateway's requests by route template and status, rate-limit refusals
/// among them.
#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_of_moving_money_through_grpc_and_rest_are_scraped_with_their_labels() {
    let system = System::start(
        "metrics",
        &[
            ("COREBANK_RATE_LIMIT_PER_SECOND", "1"),
            ("COREBANK_RATE_LIMIT_BURST", "2"),
        ],
    )
    .await;
    system.move_money().await;

    // A partner's burst through the REST gateway, beyond its limit.
    let signing_key = DevKey::load_or_create_at(&system.key).expect("the signing key");
    let partner = signing_key
        .issue(&TokenSpec::new(
            "partner-metrics",
            PARTNER_SCOPES.join(" "),
            Audience::Partner,
        ))
        .expect("a partner token");
    let gateway = port(&system.ports, "gateway");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, _) = http(
            gateway,
            "GET",
            "/v1/accounts/01a2445f-a781-70f6-9c0a-8e453fb6cbde",
            &[("Authorization", &format!("Bearer {partner}"))],
            "",
        )
        .await;
        statuses.push(status);
    }
    assert!(
        statuses.contains(&429),
        "no request was rate limited: {statuses:?}"
    );
    // The gauges are sampled every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, scrape) = http(system.metrics, "GET", "/metrics", &[], "").await;

    let series = |name: &str, labels: &[&str]| {
        scrape.lines().any(|line| {
            line.starts_with(name)
                && line[name.len()..].starts_with(['{', ' '])
                && labels.iter().all(|label| line.contains(label))
        })
    };
    let expected: &[(&str, &[&str])] = &[
        ("corebank_saga_started_total", &["saga_type=\"transfer\""]),
        (
            "corebank_saga_outcomes_total",
            &["saga_type=\"transfer\"", "outcome=\"completed\""],
        ),
        (
            "corebank_saga_duration_seconds_count",
            &["saga_type=\"deposit\"", "outcome=\"completed\""],
        ),
        (
            "corebank_saga_step_duration_seconds_count",
            &["step=\"reserve\"", "direction=\"forward\""],
        ),
        ("corebank_saga_active", &[]),
        ("corebank_saga_requires_attention", &[]),
        ("corebank_saga_parked", &[]),
        ("corebank_saga_oldest_active_seconds", &[]),
        ("corebank_messaging_outbox_pending", &["schema=\"account\""]),
        (
            "corebank_messaging_outbox_lag_seconds",
            &["schema=\"orchestrator\""],
        ),
        (
            "corebank_messaging_published_total",
            &["schema=\"transaction\""],
        ),
        ("corebank_messaging_handled_total", &["queue="]),
        ("corebank_messaging_consumer_lag_seconds_count", &["queue="]),
        ("corebank_fraud_decisions_total", &["outcome=\"approve\""]),
        ("corebank_fraud_screen_seconds_count", &[]),
        ("corebank_fraud_reviews_open", &[]),
        ("corebank_fraud_review_oldest_open_seconds", &[]),
        ("reporting_projection_lag_seconds", &[]),
        ("reporting_entries_total", &["outcome=\"applied\""]),
        (
            "grpc_server_requests_total",
            &["service=\"transaction\"", "code=\"Ok\""],
        ),
        (
            "corebank_gateway_requests_total",
            &["route=\"/v1/accounts/{account_id}\"", "status=\"429\""],
        ),
        (
            "corebank_gateway_request_duration_seconds_count",
            &["route=\"/v1/accounts/{account_id}\"", "method=\"GET\""],
        ),
        ("corebank_gateway_rate_limited_total", &[]),
    ];
    let missing: Vec<String> = expected
        .iter()
        .filter(|(name, labels)| !series(name, labels))
        .map(|(name, labels)| format!("{name}{labels:?}"))
        .collect();
    assert!(missing.is_empty(), "not scraped: {missing:#?}");

    // Each saga that ended counted once as an outcome and once as a duration.
    let outcomes = counter(system.metrics, "corebank_saga_outcomes_total", "").await;
    let durations = counter(system.metrics, "corebank_saga_duration_seconds_count", "").await;
    let ended: i64 = sqlx::query_scalar(
        "select count(*) from orchestrator.saga where state in ('completed', 'compensated', 'failed')",
    )
    .fetch_one(&system.db.owner)
    .await
    .expect("count ended sagas");
    assert_eq!(
        outcomes, ended as f64,
        "outcomes counted against sagas ended"
    );
    assert_eq!(
        durations, ended as f64,
        "durations recorded against sagas ended"
    );
    let limited = counter(system.metrics, "corebank_gateway_rate_limited_total", "").await;
    let refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!(limited, refused as f64, "rate-limit refusals counted");
}

/// `corebank up` binds every service's port before it connects anywhere: a
/// connection it opens (to PostgreSQL, RabbitMQ, a peer) takes its local
/// port from Linux's ephemeral range, which holds the default ports, and a
/// pool's connection lives long enough to keep a service started later
/// from binding. Here its database and broker accept connections and never
/// answer, so `up` is stuck on its first connection, and every port must
/// already be bound (not served yet: a client is refused meanwhile).
#[tokio::test(flavor = "multi_thread")]
async fn up_binds_every_services_port_before_it_connects_anywhere() {
    // Accepts and holds every connection, answering nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let held = tokio::spawn({
        let reached = reached.clone();
        async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = silent.accept().await {
                connections.push(connection);
                reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let ports = free_ports();
    let key = std::env::temp_dir().join(format!(
        "corebank-bind-first-{}.key.pem",
        corebank_tests::harness::key()
    ));
    let _operator = operator(&key);
    let database_url = format!("postgres://corebank:secret@{silent_addr}/corebank");
    let broker_url = format!("amqp://guest:guest@{silent_addr}/%2f");
    let mut corebank = Launch {
        database_url: &database_url,
        broker_url: &broker_url,
        namespace: "bind-first",
        ports: &ports,
        key: &key,
        env: &[],
        metrics: free_port(),
    }
    .spawn(&["up"]);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut waiting: Vec<&str> = SERVICES.iter().map(|service| service.name()).collect();
    while !waiting.is_empty() {
        assert!(
            corebank.try_wait().unwrap().is_none(),
            "corebank exited while its database never answered"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "ports free while stuck on its first connection: {waiting:?}"
        );
        let mut still = Vec::new();
        for name in waiting {
            // What a connection's local port needs: the port free.
            let probe = tokio::net::TcpSocket::new_v4().unwrap();
            match probe.bind(port(&ports, name)) {
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {}
                _ => still.push(name),
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It is stuck there: it did connect, and got no answer.
    while reached.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "corebank never connected to its database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(corebank.try_wait().unwrap().is_none(), "still starting");
    for service in SERVICES {
        let refused = tokio::net::TcpStream::connect(port(&ports, service.name())).await;
        assert!(
            refused.is_err(),
            "{} serves before it started",
            service.name()
        );
    }
    corebank.kill().await.unwrap();
    held.abort();
    let _ = std::fs::remove_file(&key);
}
