//! A whole corebank as a real process (`corebank up`) on free ports, its
//! services trusting the test's signing key, for the tests that run the
//! binary as a user would.

#![allow(dead_code)]

pub mod http;
pub mod workload;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_faults::FaultProxy;
use corebank_platform::service::Peers;
use corebank_tests::harness::amqp_url;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A port nothing listens on, below Linux's ephemeral range (32768 on):
/// the other tests' services bind port 0 and their connections take local
/// ports from that range, so a port chosen here is not handed out again
/// between this test releasing it and `corebank up` binding it.
///
/// A port is handed out once per test process: a test that starts several
/// processes (replicas, metrics listeners) chooses all their ports before any
/// binds, and a port released by one choice must not be chosen again by the
/// next.
pub fn free_port() -> SocketAddr {
    free_listener().local_addr().unwrap()
}

fn free_listener() -> TcpListener {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            handed_out.insert(port);
            return listener;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// A free port for every service of the list.
pub fn free_ports() -> Peers {
    // `free_port` never hands a port out twice.
    SERVICES
        .iter()
        .map(|service| (service.name(), free_port()))
        .collect()
}

pub fn port(ports: &Peers, service: &str) -> SocketAddr {
    ports.addr(service).expect("a port for every service")
}

const SETPRIV: &str = "/usr/bin/setpriv";

/// `corebank up` on `ports`, trusting `key`, with `env` set besides.
pub fn spawn_corebank_with(
    database_url: &str,
    namespace: &str,
    ports: &Peers,
    key: &Path,
    env: &[(&str, &str)],
) -> Child {
    spawn_corebank_on(database_url, &amqp_url(), namespace, ports, key, env)
}

/// `corebank up` against the given PostgreSQL database (an owner login; the
/// database, roles and schemas are made if missing) and RabbitMQ, on
/// `ports`, trusting `key`, with `env` set besides.
pub fn spawn_corebank_on(
    database_url: &str,
    broker_url: &str,
    namespace: &str,
    ports: &Peers,
    key: &Path,
    env: &[(&str, &str)],
) -> Child {
    Launch {
        database_url,
        broker_url,
        namespace,
        ports,
        key,
        env,
        metrics: "127.0.0.1:0".parse().expect("an address"),
    }
    .spawn(&["up"])
}

/// How a test runs the binary: which database, broker and namespace, the
/// services' ports, the signing key its services trust, the environment
/// besides, and where it serves its metrics.
pub struct Launch<'a> {
    pub database_url: &'a str,
    pub broker_url: &'a str,
    pub namespace: &'a str,
    pub ports: &'a Peers,
    pub key: &'a Path,
    pub env: &'a [(&'a str, &'a str)],
    pub metrics: SocketAddr,
}

impl Launch<'_> {
    /// Runs `corebank <run>` (`up`, or `serve <service>`) so launched.
    pub fn spawn(&self, run: &[&str]) -> Child {
        self.command(run).spawn().expect("corebank starts")
    }

    /// The command [`Launch::spawn`] runs, to adjust before spawning it.
    pub fn command(&self, run: &[&str]) -> Command {
        // Killed with the test even when the test process itself is killed (a
        // timeout), so that no corebank outlives its test holding connections
        // and consumers: util-linux's setpriv sets the parent-death signal.
        let binary = env!("CARGO_BIN_EXE_corebank");
        let mut command = if std::path::Path::new(SETPRIV).exists() {
            let mut command = Command::new(SETPRIV);
            command.args(["--pdeathsig", "KILL", "--", binary]);
            command
        } else {
            Command::new(binary)
        };
        command.args(run).args([
            "--database-url",
            self.database_url,
            "--amqp-url",
            self.broker_url,
            "--namespace",
            self.namespace,
        ]);
        for service in SERVICES {
            let flag = format!("--{}-addr", service.name());
            command.args([flag, port(self.ports, service.name()).to_string()]);
        }
        // Small pools, unless the test sets its own: several whole systems
        // run at once beside the in-process tests, on PostgreSQL's 100
        // connections (7 services of 3 connections each).
        if !self
            .env
            .iter()
            .any(|(name, _)| *name == "COREBANK_DB_POOL_SIZE")
        {
            command.args(["--db-pool-size", "3"]);
        }
        // A short step timeout, unless the test sets its own.
        if !self
            .env
            .iter()
            .any(|(name, _)| *name == "COREBANK_SAGA_STEP_TIMEOUT_MS")
        {
            command.args(["--saga-step-timeout-ms", "1000"]);
        }
        command
            .args([
                "--customer-endpoint",
                &format!("http://{}", port(self.ports, "customer")),
            ])
            .args(["--metrics-addr", &self.metrics.to_string()])
            .env("RUST_LOG", "warn")
            // Its services trust, and sign their own tokens with, the test's key.
            .env("COREBANK_DEV_SIGNING_KEY", self.key)
            .envs(self.env.iter().copied())
            .stdout(Stdio::null())
            // Warnings and errors land in the test's own output, shown when it fails.
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        command
    }
}

/// The sum of the Prometheus counter `name` over the series whose labels
/// hold `label` (`queue="account.commands"`; empty for all) in the metrics
/// served at `addr`: 0 when none has been counted yet.
pub async fn counter(addr: SocketAddr, name: &str, label: &str) -> f64 {
    let (_, text) = http::http(addr, "GET", "/metrics", &[], "").await;
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(0.0, |sum, value| sum + value)
}

/// `corebank up` against the test's PostgreSQL database and the shared RabbitMQ.
pub fn spawn_corebank(database_url: &str, namespace: &str, ports: &Peers, key: &Path) -> Child {
    spawn_corebank_with(database_url, namespace, ports, key, &[])
}

/// The database `TestDb` made, as a URL the binary can log in with.
pub fn database_url(name: &str) -> String {
    let admin = corebank_tests::harness::admin_url();
    let (base, _) = admin.rsplit_once('/').expect("a database in the admin URL");
    format!("{base}/{name}")
}

pub async fn connect(addr: SocketAddr) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..600 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("corebank did not listen on {addr}");
}

/// `url` with its host and port replaced by `proxy`'s, and the address the
/// proxy must forward to (the URL's own host and port).
pub async fn through_proxy(url: &str) -> (String, FaultProxy) {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (credentials, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let upstream = tokio::net::lookup_host(authority)
        .await
        .expect("the address resolves")
        .next()
        .expect("an address");
    let proxy = FaultProxy::start(upstream).await.expect("a fault proxy");
    let at = if credentials.is_empty() { "" } else { "@" };
    let proxied = format!("{scheme}://{credentials}{at}{}/{path}", proxy.addr());
    (proxied, proxy)
}

/// Terminates every backend of the database `pool` is connected to but the
/// one asking; how many there were.
pub async fn terminate_backends(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        // Materialized, so that no plan terminates a backend before the
        // filter has ruled out every other database's.
        "with target as materialized (
             select pid from pg_stat_activity
              where datname = current_database() and pid <> pg_backend_pid())
         select count(*) from target where pg_terminate_backend(pid)",
    )
    .fetch_one(pool)
    .await
    .expect("terminate backends")
}

/// Sends `signal` (`-TERM`, `-KILL`, `-USR1`) to the running corebank `child`.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("corebank runs").to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {signal} {pid} failed");
}
