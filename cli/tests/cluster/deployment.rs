//! The deployment under test: a three-node RabbitMQ cluster of its own, a
//! fresh database on the shared PostgreSQL, `corebank migrate` once, and two
//! `corebank serve` processes of every service.
//!
//! How callers reach two replicas: no balancer stands in front of them, and
//! a service's peer flags (`--customer-endpoint`, `--transaction-account-endpoint`,
//! `--ledger-endpoint`, `--gateway-*-endpoint`) name one address. Every
//! service calls the first replica of its callee, and the replica killed is
//! the second of each service, so no surviving service loses a callee. The
//! second replicas still carry their share of the work the bus hands out
//! (each consumes the same quorum queues, relays its outbox and claims saga
//! timers), and the test's own clients, like a load balancer, spread their
//! requests over both replicas of the gateway and of the transaction service
//! and move to the other when one stops answering.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use corebank_cli::services::{self, SERVICES};
use corebank_faults::PrivateRabbitCluster;
use corebank_platform::service::Peers;
use corebank_tests::harness::TestDb;
use tokio::process::{Child, Command};

use crate::common::{Launch, connect, counter, database_url, free_port, free_ports, port};

/// Nodes of the RabbitMQ cluster.
pub const NODES: usize = 3;
/// Processes of each service.
pub const REPLICAS: usize = 2;
/// The broker node killed: the one `corebank migrate` declared the topology
/// through, so it leads every quorum queue, and losing it makes every queue
/// elect a new leader.
pub const NODE_KILLED: usize = 0;
/// The replica of each service killed (see the module's note).
pub const REPLICA_KILLED: usize = 1;
/// The namespace: the cluster is the deployment's alone.
pub const NAMESPACE: &str = "corebank";
/// The production step timeout (the tests' usual 1 s would turn every slow
/// moment of a loaded two-core machine into re-sent commands).
const STEP_TIMEOUT_MS: &str = "10000";

/// One `corebank serve` process.
pub struct Process {
    pub service: &'static str,
    pub replica: usize,
    /// Where it serves gRPC (HTTP for the gateway).
    pub listen: SocketAddr,
    /// Where it serves its metrics.
    pub metrics: SocketAddr,
    pub child: Child,
}

impl Process {
    /// Whether it still runs, or how it ended.
    pub fn state(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "running".to_owned(),
            Ok(Some(status)) => format!("exited: {status}"),
            Err(error) => format!("unknown: {error}"),
        }
    }
}

/// The whole deployment. Dropping it kills every process (`kill_on_drop`,
/// and the parent-death signal should the test itself be killed), then
/// every broker node and their folders, then the database.
pub struct Deployment {
    pub processes: Vec<Process>,
    /// Each replica's ports, by replica.
    pub ports: Vec<Peers>,
    pub key: KeyFile,
    pub cluster: PrivateRabbitCluster,
    pub db: TestDb,
}

impl Deployment {
    /// Starts the cluster, provisions a fresh database and the topology, and
    /// starts two replicas of every service; returns once each listens.
    pub async fn start() -> Deployment {
        let db = TestDb::create(&[]).await;
        let cluster = PrivateRabbitCluster::start(NODES)
            .await
            .expect("a three-node rabbitmq cluster");
        eprintln!(
            "cluster: {NODES} rabbitmq nodes joined: {:?}",
            cluster.running_nodes().await.expect("the running nodes")
        );
        let key = KeyFile(std::env::temp_dir().join(format!(
            "corebank-cluster-{}.key.pem",
            corebank_tests::harness::key()
        )));
        let database_url = database_url(&db.name);
        migrate(&database_url, &cluster.urls()[NODE_KILLED]).await;
        assert_queues_on_every_node(&cluster).await;

        let ports: Vec<Peers> = (0..REPLICAS).map(|_| free_ports()).collect();
        let broker_urls = cluster.url_list();
        let mut processes = Vec::new();
        for service in SERVICES {
            for replica in 0..REPLICAS {
                let service = service.name();
                // Its own port; every callee is the first replica's.
                let mut own = ports[0].clone();
                own.insert(service, port(&ports[replica], service));
                let metrics = free_port();
                let mut command = Launch {
                    database_url: &database_url,
                    broker_url: &broker_urls,
                    namespace: NAMESPACE,
                    ports: &own,
                    key: &key.0,
                    env: &[("COREBANK_SAGA_STEP_TIMEOUT_MS", STEP_TIMEOUT_MS)],
                    metrics,
                }
                .command(&["serve", service]);
                // `Launch` gives each process a pool of 3 connections:
                // fourteen processes share the shared PostgreSQL's hundred
                // with the test.
                command
                    .args(endpoint_flags(&ports[0]))
                    // The load is one partner's: the per-partner limit is
                    // lifted so the limiter is not what is measured.
                    .args(["--rate-limit-per-second", "1000000"])
                    .args(["--rate-limit-burst", "1000000"]);
                processes.push(Process {
                    service,
                    replica,
                    listen: port(&own, service),
                    metrics,
                    child: command.spawn().expect("corebank serve starts"),
                });
            }
        }
        for process in &processes {
            connect(process.listen).await;
        }
        eprintln!(
            "cluster: {} corebank processes listen ({REPLICAS} of each service)",
            processes.len()
        );
        Deployment {
            processes,
            ports,
            key,
            cluster,
            db,
        }
    }

    /// The first replica's ports: what the services call, and the checks use.
    pub fn primary(&self) -> &Peers {
        &self.ports[0]
    }

    /// Where each replica of `service` listens, in replica order.
    pub fn addrs(&self, service: &str) -> Vec<SocketAddr> {
        self.ports
            .iter()
            .map(|ports| port(ports, service))
            .collect()
    }

    /// How many messages each process of a service that consumes from the
    /// bus has handled so far: (service, replica, handled).
    pub async fn handled(&self) -> Vec<(&'static str, usize, f64)> {
        let mut handled = Vec::new();
        for process in &self.processes {
            let consumes =
                services::find(process.service).is_some_and(|service| !service.queues().is_empty());
            if consumes {
                let count = counter(process.metrics, "corebank_messaging_handled_total", "").await;
                handled.push((process.service, process.replica, count));
            }
        }
        handled
    }

    /// Kills broker node [`NODE_KILLED`] and replica [`REPLICA_KILLED`] of
    /// every service with SIGKILL, all at once.
    pub async fn kill(&mut self) {
        for process in &mut self.processes {
            if process.replica == REPLICA_KILLED {
                process.child.start_kill().expect("SIGKILL a replica");
            }
        }
        self.cluster
            .kill(NODE_KILLED)
            .await
            .expect("kill a broker node");
        for process in &mut self.processes {
            if process.replica == REPLICA_KILLED {
                process.child.wait().await.expect("reap a killed replica");
            }
        }
    }

    /// The processes that were not killed, each still running.
    pub fn assert_survivors_run(&mut self) {
        for process in &mut self.processes {
            if process.replica != REPLICA_KILLED {
                let state = process.state();
                assert_eq!(
                    state, "running",
                    "replica {} of {} stopped",
                    process.replica, process.service
                );
            }
        }
    }
}

/// `corebank migrate` against the database and one broker node: schemas,
/// roles, migrations, and every exchange and quorum queue.
async fn migrate(database_url: &str, broker_url: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_corebank"))
        .args(["migrate", "--database-url", database_url])
        .args(["--amqp-url", broker_url, "--namespace", NAMESPACE])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("corebank migrate runs");
    assert!(
        output.status.success(),
        "corebank migrate failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every queue `migrate` declared is a quorum queue with a member on each
/// node of the cluster.
async fn assert_queues_on_every_node(cluster: &PrivateRabbitCluster) {
    let nodes: Vec<&str> = cluster.nodes().iter().map(|node| node.node()).collect();
    let killed = nodes[NODE_KILLED];
    let queues = cluster.queues().await.expect("list the queues");
    let ours: Vec<_> = queues
        .iter()
        .filter(|queue| queue.name.starts_with(&format!("{NAMESPACE}.")))
        .collect();
    assert!(!ours.is_empty(), "migrate declared no queue: {queues:?}");
    for queue in &ours {
        assert_eq!(queue.kind, "quorum", "{queue:?}");
        let mut members: Vec<&str> = queue.members.iter().map(String::as_str).collect();
        members.sort_unstable();
        let mut expected = nodes.clone();
        expected.sort_unstable();
        assert_eq!(members, expected, "{} is not on every node", queue.name);
        assert_eq!(queue.leader, killed, "{} is led elsewhere", queue.name);
    }
    eprintln!(
        "cluster: {} quorum queues, each with a member on all {NODES} nodes, all led by {killed}",
        ours.len()
    );
}

/// The endpoint flags of every caller, all naming the first replica.
fn endpoint_flags(primary: &Peers) -> Vec<String> {
    let url = |service: &str| format!("http://{}", port(primary, service));
    let mut flags = vec![
        "--transaction-account-endpoint".to_owned(),
        url("account"),
        "--ledger-endpoint".to_owned(),
        url("account"),
    ];
    for backend in [
        "customer",
        "account",
        "transaction",
        "orchestrator",
        "fraud",
        "reporting",
    ] {
        flags.push(format!("--gateway-{backend}-endpoint"));
        flags.push(url(backend));
    }
    flags
}

/// The token signing key the services trust, removed with the deployment.
pub struct KeyFile(pub PathBuf);

impl KeyFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
