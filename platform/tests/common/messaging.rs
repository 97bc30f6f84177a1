//! Test harness for the messaging tests: a fresh database and a fresh broker
//! namespace per test, a recording handler (`handler.rs`), and bounded waits.

use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use corebank_platform::messaging::dlq::{ParkedMessage, list_parked};
use corebank_platform::messaging::{
    Broker, BrokerConfig, ConsumerConfig, Exchange, Namespace, OUTBOX_INBOX_DDL, OutboxRelay,
    OutgoingMessage, QueueConsumer, QueueSpec, RelayConfig, declare_queue, delete_topology,
    enqueue, unpack,
};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation};
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "handler.rs"]
mod handler;
pub use handler::TestHandler;

/// The broker: `AMQP_URL`, or the local default.
pub fn amqp_url() -> String {
    corebank_platform::config::amqp_url_from_env()
}

/// The admin login tests create their databases with: `DATABASE_URL`'s
/// server and credentials, on the `postgres` database.
pub fn postgres_url() -> String {
    corebank_platform::config::with_database(
        &corebank_platform::config::database_url_from_env(),
        "postgres",
    )
}
/// The bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// One test's private world.
pub struct TestEnv {
    pub db_name: String,
    pub pool: PgPool,
    pub ns: Namespace,
    pub broker: Broker,
    pub shutdown: CancellationToken,
    pub channel: Channel,
    tools: lapin::Connection,
    pub specs: Vec<QueueSpec>,
    pub extra_queues: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestEnv {
    pub async fn new() -> Self {
        let suffix = Uuid::now_v7().simple().to_string();
        let db_name = format!("msgtest_{}", &suffix[suffix.len() - 16..]);
        let mut admin = PgConnection::connect(&postgres_url())
            .await
            .expect("postgres reachable");
        sqlx::query(AssertSqlSafe(format!("create database {db_name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();

        let options = PgConnectOptions::from_str(&postgres_url())
            .unwrap()
            .database(&db_name);
        let mut owner = PgConnection::connect_with(&options)
            .await
            .expect("connect test database");
        sqlx::raw_sql("create schema svc; set search_path to svc")
            .execute(&mut owner)
            .await
            .unwrap();
        // Twice: the DDL must be idempotent.
        for _ in 0..2 {
            sqlx::raw_sql(OUTBOX_INBOX_DDL)
                .execute(&mut owner)
                .await
                .expect("outbox ddl");
        }
        sqlx::raw_sql(
            "create table effect (message_id uuid not null, message_type text not null, \
             attempt integer not null, recorded_at timestamptz not null default now())",
        )
        .execute(&mut owner)
        .await
        .unwrap();
        owner.close().await.ok();
        let pool = corebank_platform::db::connect(options, "svc", 10)
            .await
            .expect("pool");

        let ns = Namespace::new(format!("t{}", &suffix[suffix.len() - 12..]));
        let broker = Broker::connect(BrokerConfig::new(
            SecretString::from(amqp_url()),
            ns.clone(),
            format!("corebank-test-{ns}"),
        ))
        .await
        .expect("rabbitmq reachable");
        // The test's own channel, on a separate connection so that closing the
        // broker's connection does not take the test's tools down with it.
        let tools = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = tools.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();

        Self {
            db_name,
            pool,
            ns,
            broker,
            shutdown: CancellationToken::new(),
            channel,
            tools,
            specs: Vec::new(),
            extra_queues: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// The test's own broker connection, separate from the one under test.
    pub fn tools(&self) -> &lapin::Connection {
        &self.tools
    }

    /// Declares `spec` (twice, to check idempotence) and remembers it for teardown.
    pub async fn declare(&mut self, spec: &QueueSpec) {
        for _ in 0..2 {
            declare_queue(&self.channel, &self.ns, spec)
                .await
                .expect("declare queue");
        }
        self.specs.push(spec.clone());
    }

    /// A plain sink queue (quorum unless `arguments` say otherwise) bound to
    /// the events exchange, for counting raw deliveries.
    pub async fn sink(&mut self, name: &str, pattern: &str, arguments: FieldTable) -> String {
        let queue = self.ns.queue(name);
        self.channel
            .queue_declare(
                queue.clone().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .expect("declare sink");
        self.channel
            .queue_bind(
                queue.clone().into(),
                self.ns.exchange(Exchange::Events).into(),
                pattern.into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.extra_queues.push(queue.clone());
        queue
    }

    pub fn spawn_relay(&mut self, config: RelayConfig) {
        let relay = OutboxRelay::new(self.pool.clone(), self.broker.clone()).with_config(config);
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            relay.run(shutdown).await.expect("relay runs");
        }));
    }

    pub fn spawn_consumer(&mut self, spec: QueueSpec, handler: TestHandler) {
        self.spawn_consumer_with(spec, handler, ConsumerConfig::default());
    }

    pub fn spawn_consumer_with(
        &mut self,
        spec: QueueSpec,
        handler: TestHandler,
        config: ConsumerConfig,
    ) {
        let consumer = QueueConsumer::new(self.broker.clone(), self.pool.clone(), spec, handler)
            .with_config(config);
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(consumer.run(shutdown)));
    }

    /// When `message_id`'s effect was recorded: the start of the
    /// transaction that applied it.
    pub async fn applied_at(&self, message_id: Uuid) -> chrono::DateTime<chrono::Utc> {
        sqlx::query_scalar("select recorded_at from effect where message_id = $1")
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Enqueues `message` in a transaction that commits.
    pub async fn enqueue_committed(&self, message: OutgoingMessage) {
        let mut tx = self.pool.begin().await.unwrap();
        enqueue(&mut tx, message).await.expect("enqueue");
        tx.commit().await.unwrap();
    }

    /// Publishes straight to an exchange, bypassing the outbox (to simulate
    /// redeliveries and foreign, malformed producers).
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                payload,
                properties,
            )
            .await
            .unwrap();
        assert!(matches!(confirm.await.unwrap(), Confirmation::Ack(None)));
    }

    /// Publishes `messages` straight to the events exchange, bypassing the outbox.
    pub async fn publish_events(&self, messages: impl IntoIterator<Item = &OutgoingMessage>) {
        let events = self.ns.exchange(Exchange::Events);
        for message in messages {
            self.publish_raw(
                &events,
                &message.routing_key,
                &message.payload,
                message.properties("test"),
            )
            .await;
        }
    }

    /// Up to ten messages parked for consumer `queue`, left where they are.
    pub async fn parked(&self, queue: &str) -> Vec<ParkedMessage> {
        list_parked(self.tools(), &self.ns, queue, 10)
            .await
            .expect("list parked messages")
    }

    /// The messages parked for consumer `queue`, once there are `count`.
    pub async fn parked_once(&self, queue: &str, count: usize) -> Vec<ParkedMessage> {
        eventually(&format!("{count} parked on {queue}"), || async {
            let parked = self.parked(queue).await;
            (parked.len() == count).then_some(parked)
        })
        .await
    }

    /// Takes everything currently in `queue`, acking it; returns message ids
    /// (those inside a batch envelope each on its own).
    pub async fn drain(&self, queue: &str) -> Vec<String> {
        let mut ids = Vec::new();
        while let Some(got) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            let tag = got.delivery.delivery_tag;
            for message in unpack(got.delivery) {
                let id = message
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string());
                ids.push(id.unwrap_or_default());
            }
            self.channel
                .basic_ack(tag, BasicAckOptions::default())
                .await
                .unwrap();
        }
        ids
    }

    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let declared = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        declared.message_count()
    }

    pub async fn scalar(&self, sql: &'static str, message_id: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn effects(&self, message_id: Uuid) -> i64 {
        self.scalar(
            "select count(*) from effect where message_id = $1",
            message_id,
        )
        .await
    }

    pub async fn pending(&self) -> i64 {
        sqlx::query_scalar("select count(*) from outbox where sent_at is null")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Stops the tasks, removes the namespace's queues and exchanges and drops the database.
    pub async fn teardown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("task stops")
                .expect("task did not panic");
        }
        // Cleanup only: what the test asserts has passed by now, so a close
        // that stalls is reported and the database is dropped regardless.
        let cleanup = async {
            self.broker.close().await;
            for queue in &self.extra_queues {
                self.channel
                    .queue_delete(queue.clone().into(), QueueDeleteOptions::default())
                    .await
                    .ok();
            }
            delete_topology(&self.channel, &self.ns, &self.specs)
                .await
                .ok();
            self.tools.close(200, "test done".into()).await.ok();
            self.pool.close().await;
        };
        if tokio::time::timeout(WAIT, cleanup).await.is_err() {
            eprintln!("teardown: closing the broker topology or the pool took over {WAIT:?}");
        }
        let mut admin = PgConnection::connect(&postgres_url()).await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "drop database if exists {} with (force)",
            self.db_name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let checked = tokio::time::timeout(WAIT, check()).await;
        let checked = checked.unwrap_or_else(|_| panic!("checking {what} hung for {WAIT:?}"));
        if let Some(value) = checked {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Closes, from the broker side, every connection named `connection_name`;
/// returns how many were closed.
pub async fn close_connections_named(connection_name: &str) -> usize {
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
    let needle = format!("{{\"connection_name\",\"{connection_name}\"}}");
    let mut closed = 0;
    for line in listing.lines().filter(|line| line.contains(&needle)) {
        let pid = line.split_whitespace().next().expect("pid column");
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by messaging test"])
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

/// A relay that polls every 200 ms besides listening, so a test never waits
/// long for a row whose notification it missed.
pub fn fast_relay() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(200),
        ..RelayConfig::default()
    }
}

/// The tests' consumer queue: every `test.*` event.
pub fn ledger_spec() -> QueueSpec {
    QueueSpec::new("ledger").bind(Exchange::Events, "test.#")
}
