//! The saga engine against real PostgreSQL and RabbitMQ. The test plays the
//! participants: it consumes the `commands` exchange (routing keys `account`,
//! `fraud` and `transaction`) and answers on `replies`, scripted per test.
//! Where time decides (parking deadlines, running out of attempts) a test
//! injects a [`ManualClock`] and moves it by hand.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use corebank_orchestrator::{Application, EngineConfig, Settings};
use corebank_platform::auth::{
    Audience, AuthedChannel, Credentials, DevKey, ServiceAuth, TokenSpec,
};
use corebank_platform::clock::{self, ManualClock, SharedClock};
use corebank_platform::messaging::{
    Broker, BrokerConfig, Namespace, OutgoingMessage, declare_exchanges, declare_queue,
    delete_topology,
};
use corebank_platform::time::to_timestamp;
use corebank_proto::v1 as pb;
use corebank_proto::v1::saga_admin_service_client::SagaAdminServiceClient;
use corebank_proto::wire;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Connection, ConnectionProperties};
use prost::Message;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestDb, key, reason};

/// The subject of the admin client's token: the actor saga admin records.
const OPERATOR: &str = "ops-test";

mod flows;
mod load;
mod operators;
mod parallel;
mod parking;
mod participants;
mod refusals;
mod script;

use participants::{Received, participants};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

fn amqp_url() -> String {
    corebank_platform::config::amqp_url_from_env()
}

/// Fast timings: 300 ms step timeouts, three attempts.
fn fast() -> EngineConfig {
    EngineConfig {
        step_timeout: Duration::from_millis(300),
        backoff_base: Duration::from_millis(200),
        backoff_cap: Duration::from_millis(800),
        max_attempts: 3,
        tick: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// [`fast`] timings for a scripted saga among a couple of hundred in flight
/// (a load), on a machine that may answer a command late: a step times out
/// after 2 s, and a forward step is tried five times.
fn loaded() -> EngineConfig {
    EngineConfig {
        step_timeout: Duration::from_secs(2),
        max_attempts: 5,
        ..fast()
    }
}

/// Timings slow enough that nothing times out during a test.
fn patient() -> EngineConfig {
    EngineConfig {
        step_timeout: Duration::from_secs(60),
        tick: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// One running orchestrator instance.
struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// An orchestrator on a fresh database and broker namespace, with the test
/// playing every participant.
struct SagaTest {
    db: TestDb,
    namespace: Namespace,
    clock: SharedClock,
    config: EngineConfig,
    orchestrator: Option<Running>,
    admin: Option<SagaAdminServiceClient<AuthedChannel>>,
    /// The orchestrator's auth (a fresh key per test).
    auth: ServiceAuth,
    /// What the admin client presents: an operator token.
    operator: Credentials,
    /// Signs the tokens of this test.
    key: DevKey,
    /// Where the orchestrator listens, while it runs.
    orchestrator_addr: Option<std::net::SocketAddr>,
    publisher: lapin::Channel,
    _connection: Connection,
    commands: mpsc::UnboundedReceiver<Received>,
    buffered: VecDeque<Received>,
    background: load::Background,
}

impl SagaTest {
    async fn start(config: EngineConfig) -> SagaTest {
        Self::start_with_clock(config, clock::system()).await
    }

    /// An orchestrator whose clock only moves when the test says so.
    async fn start_manual(config: EngineConfig) -> (SagaTest, Arc<ManualClock>) {
        let manual = ManualClock::new(Utc::now().trunc_subsecs(6));
        let test = Self::start_with_clock(config, manual.clone()).await;
        (test, manual)
    }

    async fn start_with_clock(config: EngineConfig, clock: SharedClock) -> SagaTest {
        let db = TestDb::create(&[corebank_orchestrator::SCHEMA]).await;
        let namespace = Namespace::new(format!("sagatest-{}", Uuid::new_v4().simple()));
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let publisher = connection.create_channel().await.expect("channel");
        declare_exchanges(&publisher, &namespace)
            .await
            .expect("declare exchanges");
        // Declared up front so that no request published before the
        // orchestrator's consumer starts is dropped as unroutable.
        for spec in corebank_orchestrator::queue_specs() {
            declare_queue(&publisher, &namespace, &spec)
                .await
                .expect("declare orchestrator queue");
        }
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let commands = participants(&connection, &namespace).await;
        let key = DevKey::generate().expect("a token signing key");
        let operator = Credentials::signed(
            key.clone(),
            TokenSpec::new(OPERATOR, "ops:admin", Audience::Internal),
        );
        let mut test = SagaTest {
            auth: ServiceAuth::development(&key, "orchestrator"),
            operator,
            key,
            orchestrator_addr: None,
            db,
            namespace,
            clock,
            config,
            orchestrator: None,
            admin: None,
            publisher,
            _connection: connection,
            commands,
            buffered: VecDeque::new(),
            background: load::Background::default(),
        };
        test.start_orchestrator().await;
        test
    }

    async fn start_orchestrator(&mut self) {
        let broker = Broker::connect(BrokerConfig::new(
            SecretString::from(amqp_url()),
            self.namespace.clone(),
            "orchestrator-test",
        ))
        .await
        .expect("broker");
        let app = Application::build(
            Settings {
                pool: self
                    .db
                    .service_pool(&corebank_orchestrator::SCHEMA, 10)
                    .await,
                clock: self.clock.clone(),
                broker,
                engine: self.config.clone(),
                idempotency: Default::default(),
                auth: self.auth.clone(),
            },
            "127.0.0.1:0".parse().expect("loopback"),
        )
        .await
        .expect("build orchestrator");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
        let channel = self
            .operator
            .connect_lazy(endpoint)
            .expect("channel to the orchestrator");
        self.admin = Some(SagaAdminServiceClient::new(channel));
        self.orchestrator_addr = Some(addr);
        self.orchestrator = Some(Running { shutdown, handle });
    }

    /// Cancels the orchestrator's shutdown token and waits for it to stop.
    async fn stop_orchestrator(&mut self) {
        let running = self
            .orchestrator
            .take()
            .expect("an orchestrator is running");
        running.shutdown.cancel();
        tokio::time::timeout(WAIT, running.handle)
            .await
            .expect("orchestrator stops in time")
            .expect("orchestrator task")
            .expect("orchestrator ran cleanly");
        self.admin = None;
    }

    /// An admin client acting as operator `subject`.
    fn admin_as(&self, subject: &str) -> SagaAdminServiceClient<AuthedChannel> {
        let addr = self.orchestrator_addr.expect("an orchestrator is running");
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
        let credentials = Credentials::signed(
            self.key.clone(),
            TokenSpec::new(subject, "ops:admin", Audience::Internal),
        );
        SagaAdminServiceClient::new(credentials.connect_lazy(endpoint).expect("channel"))
    }

    fn admin(&self) -> SagaAdminServiceClient<AuthedChannel> {
        self.admin.clone().expect("an orchestrator is running")
    }

    async fn saga_id_of(&self, transaction_id: &str) -> String {
        let transaction_id = Uuid::parse_str(transaction_id).expect("uuid");
        let deadline = Instant::now() + WAIT;
        loop {
            let found: Option<Uuid> = sqlx::query_scalar(
                "select saga_id from orchestrator.saga where transaction_id = $1",
            )
            .bind(transaction_id)
            .fetch_optional(&self.db.owner)
            .await
            .expect("query saga");
            if let Some(saga_id) = found {
                return saga_id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no saga for transaction {transaction_id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn saga(&self, saga_id: &str) -> pb::Saga {
        self.admin()
            .get_saga(pb::GetSagaRequest {
                saga_id: saga_id.to_owned(),
            })
            .await
            .expect("get saga")
            .into_inner()
    }

    /// Polls until the saga satisfies `done`.
    async fn wait_for(
        &self,
        saga_id: &str,
        what: &str,
        done: impl Fn(&pb::Saga) -> bool,
    ) -> pb::Saga {
        let deadline = Instant::now() + WAIT;
        loop {
            let saga = self.saga(saga_id).await;
            if done(&saga) {
                return saga;
            }
            assert!(
                Instant::now() < deadline,
                "saga never became {what}: {saga:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_state(&self, saga_id: &str, state: pb::SagaState) -> pb::Saga {
        self.wait_for(saga_id, state.as_str_name(), |saga| {
            saga.state == state as i32
        })
        .await
    }

    async fn saga_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from orchestrator.saga")
            .fetch_one(&self.db.owner)
            .await
            .expect("count sagas")
    }
}

impl Drop for SagaTest {
    fn drop(&mut self) {
        if let Some(running) = self.orchestrator.take() {
            running.shutdown.cancel();
        }
        // The orchestrator's queues are durable: remove them, off the test's
        // runtime since drop cannot await.
        let namespace = self.namespace.clone();
        crate::helpers::finish_off_runtime(async move {
            let Ok(connection) =
                Connection::connect(&amqp_url(), ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(channel) = connection.create_channel().await {
                let _ =
                    delete_topology(&channel, &namespace, &corebank_orchestrator::queue_specs())
                        .await;
            }
            let _ = connection.close(200, "test done".into()).await;
        });
    }
}

fn history_events(saga: &pb::Saga) -> Vec<(String, String)> {
    saga.history
        .iter()
        .map(|entry| (entry.step.clone(), entry.event.clone()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}
