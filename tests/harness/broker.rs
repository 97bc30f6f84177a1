//! The test broker: namespaces, their topology, and forging or cutting
//! connections for fault tests.

use super::*;

/// The broker every test uses, each under its own namespace.
pub fn amqp_url() -> String {
    corebank_platform::config::amqp_url_from_env()
}

/// How many namespaces the tests take turns with: far more than run at once.
const NAMESPACE_SLOTS: i32 = 32;
/// The advisory-lock class of the namespace leases ("cbt" in ASCII).
const NAMESPACE_LOCK_CLASS: i32 = 0x0063_6274;
/// How long a test waits for the broker before saying it does not answer.
const BROKER_PATIENCE: Duration = Duration::from_secs(60);

/// A broker namespace one test has to itself until it is dropped.
///
/// A full system declares 56 quorum queues, and RabbitMQ books about three
/// file handles for each existing one: declaring and deleting them per test
/// (thousands a run, plus the leftovers of killed tests) exhausted a broker
/// started with 1024 open files, which then accepted TCP and never answered
/// AMQP. So tests take turns with a fixed set of namespaces instead: a lease
/// is a PostgreSQL advisory lock (released even when the test is killed),
/// and its namespace's topology is declared once and emptied per lease.
#[derive(Debug)]
pub struct NamespaceLease {
    namespace: Namespace,
    _lock: PgConnection,
}

impl NamespaceLease {
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }
}

/// Leases a free namespace of the set, with every queue of a full system
/// declared, no consumer left on it and no message in it.
pub async fn lease_namespace() -> NamespaceLease {
    let admin = PgConnectOptions::from_str(&admin_url()).expect("DATABASE_URL parses");
    let mut lock = PgConnection::connect_with(&admin)
        .await
        .expect("connect to PostgreSQL as admin");
    // The cluster's port in the name: a run against another PostgreSQL
    // (the password guard's) has locks, and so namespaces, of its own.
    let port = admin.get_port();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        for slot in 0..NAMESPACE_SLOTS {
            let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, $2)")
                .bind(NAMESPACE_LOCK_CLASS)
                .bind(slot)
                .fetch_one(&mut lock)
                .await
                .expect("try a namespace lock");
            if taken {
                let namespace = Namespace::new(format!("cbt{port}s{slot}"));
                let prepared = tokio::time::timeout(BROKER_PATIENCE, empty_namespace(&namespace));
                prepared.await.unwrap_or_else(|_| {
                    panic!(
                        "RabbitMQ at {} did not prepare namespace {} within {BROKER_PATIENCE:?}: \
                         a consumer of an earlier test is still attached, or the broker is \
                         wedged (rabbitmqctl status)",
                        amqp_url(),
                        namespace.as_str()
                    )
                });
                return NamespaceLease {
                    namespace,
                    _lock: lock,
                };
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "all {NAMESPACE_SLOTS} test namespaces stayed leased for two minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Declares every queue of a full system in `namespace` (again, after a
/// change of their arguments), waits until the last lessee's consumers are
/// gone (their unacknowledged messages are back in the queues by then),
/// and purges every queue, delay queues first.
async fn empty_namespace(namespace: &Namespace) {
    let connection = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .expect("connect to RabbitMQ");
    let specs = all_queue_specs();
    let mut channel = connection.create_channel().await.expect("broker channel");
    if declare_topology(&channel, namespace, &specs).await.is_err() {
        // Declared by an older build with other arguments: start afresh.
        channel = connection.create_channel().await.expect("broker channel");
        delete_topology(&channel, namespace, &specs)
            .await
            .expect("delete an outdated test topology");
        declare_topology(&channel, namespace, &specs)
            .await
            .expect("declare the test topology");
    }
    let queues: Vec<String> = specs
        .iter()
        .flat_map(|spec| spec.queue_names(namespace))
        .collect();
    for queue in &queues {
        loop {
            let state = inspect(&channel, queue).await;
            if state.consumer_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for queue in &queues {
        channel
            .queue_purge(queue.clone().into(), Default::default())
            .await
            .expect("purge a test queue");
    }
    let _ = connection.close(200, "namespace ready".into()).await;
}

async fn declare_topology(
    channel: &lapin::Channel,
    namespace: &Namespace,
    specs: &[QueueSpec],
) -> lapin::Result<()> {
    declare_exchanges(channel, namespace).await?;
    for spec in specs {
        declare_queue(channel, namespace, spec).await?;
    }
    Ok(())
}

/// A lazily connecting broker handle in `namespace`.
pub fn broker(namespace: &Namespace, name: &str) -> Broker {
    Broker::new(BrokerConfig::new(
        SecretString::from(amqp_url()),
        namespace.clone(),
        format!("{}-{name}", namespace.as_str()),
    ))
}

/// Every queue a full system declares.
pub fn all_queue_specs() -> Vec<QueueSpec> {
    services::queues()
}

/// Publishes a raw message as a participant or the orchestrator would, for
/// tests that duplicate or forge messages.
pub async fn publish(namespace: &Namespace, message: &OutgoingMessage) {
    let broker = broker(namespace, "forger");
    let token = CancellationToken::new();
    let channel = broker.channel(&token).await.expect("broker channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            namespace.exchange(message.exchange).into(),
            message.routing_key.clone().into(),
            lapin::options::BasicPublishOptions::default(),
            &message.payload,
            message.properties("forger"),
        )
        .await
        .expect("publish");
    confirm.await.expect("publisher confirm");
    token.cancel();
    broker.close().await;
}

/// How many messages wait in `namespace`'s queue `name` (ready, not yet
/// delivered to a consumer).
pub async fn queued(namespace: &Namespace, name: &str) -> u32 {
    let connection = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("broker channel");
    let state = inspect(&channel, &namespace.queue(name)).await;
    let _ = connection.close(200, "inspected".into()).await;
    state.message_count()
}

/// A queue's message and consumer counts, declaring nothing (passive).
async fn inspect(channel: &lapin::Channel, queue: &str) -> lapin::Queue {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.to_owned().into(), passive, Default::default())
        .await
        .expect("inspect a test queue")
}

/// Closes, from the broker's side, every connection of `namespace`; returns
/// how many. Needs `rabbitmqctl` (run as root or the rabbitmq user).
pub async fn close_broker_connections(namespace: &Namespace) -> usize {
    let listing = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let needle = format!("{{\"connection_name\",\"{}-", namespace.as_str());
    let mut closed = 0;
    for line in listing.lines().filter(|line| line.contains(&needle)) {
        let pid = line.split_whitespace().next().expect("pid column");
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by a fault test"])
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl close_connection failed"
        );
        closed += 1;
    }
    closed
}
