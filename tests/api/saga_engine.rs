//! The saga engine against real PostgreSQL and RabbitMQ. The test plays the
//! participants: it consumes the `commands` exchange (routing keys `account`
//! and `transaction`) and answers on `replies`, scripted per test.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use corebank_orchestrator::{Application, EngineConfig, Settings};
use corebank_platform::clock::{self, SharedClock};
use corebank_platform::messaging::{
    Broker, BrokerConfig, Exchange, Namespace, OutgoingMessage, declare_exchanges, declare_queue,
    delete_topology,
};
use corebank_proto::v1 as pb;
use corebank_proto::v1::saga_admin_service_client::SagaAdminServiceClient;
use corebank_proto::wire;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use prost::Message;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::helpers::{TestDb, reason};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
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

/// Timings slow enough that nothing times out during a test.
fn patient() -> EngineConfig {
    EngineConfig {
        step_timeout: Duration::from_secs(60),
        tick: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

/// The first fields of every command message: enough to route and answer it.
#[derive(Clone, PartialEq, prost::Message)]
struct CommandHead {
    #[prost(string, tag = "1")]
    command_id: String,
    #[prost(string, tag = "2")]
    saga_id: String,
}

/// A command the orchestrator sent to a participant.
#[derive(Debug, Clone)]
struct Received {
    participant: String,
    message_type: String,
    message_id: String,
    correlation_id: String,
    command_id: String,
    saga_id: String,
    payload: Vec<u8>,
    at: Instant,
}

impl Received {
    fn is<M: prost::Name>(&self) -> bool {
        self.message_type == wire::message_type::<M>()
    }

    fn decode<M: prost::Message + prost::Name + Default>(&self) -> M {
        assert!(
            self.is::<M>(),
            "expected {}, got {}",
            wire::message_type::<M>(),
            self.message_type
        );
        M::decode(self.payload.as_slice()).expect("command decodes")
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
    admin: Option<SagaAdminServiceClient<Channel>>,
    publisher: lapin::Channel,
    _connection: Connection,
    commands: mpsc::UnboundedReceiver<Received>,
    buffered: VecDeque<Received>,
}

impl SagaTest {
    async fn start(config: EngineConfig) -> SagaTest {
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
        let mut test = SagaTest {
            db,
            namespace,
            clock: clock::system(),
            config,
            orchestrator: None,
            admin: None,
            publisher,
            _connection: connection,
            commands,
            buffered: VecDeque::new(),
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
            },
            "127.0.0.1:0".parse().expect("loopback"),
        )
        .await
        .expect("build orchestrator");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to orchestrator");
        self.admin = Some(SagaAdminServiceClient::new(channel));
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

    fn admin(&self) -> SagaAdminServiceClient<Channel> {
        self.admin.clone().expect("an orchestrator is running")
    }

    async fn publish(&self, message: OutgoingMessage) {
        let exchange = self.namespace.exchange(message.exchange);
        self.publisher
            .basic_publish(
                exchange.into(),
                message.routing_key.clone().into(),
                BasicPublishOptions::default(),
                &message.payload,
                message.properties("saga-test"),
            )
            .await
            .expect("publish")
            .await
            .expect("broker confirms");
    }

    /// Publishes a requested movement; returns the event to re-publish it.
    async fn request(
        &self,
        kind: pb::TransactionKind,
        amount: &str,
    ) -> pb::TransactionRequestedEvent {
        let event = pb::TransactionRequestedEvent {
            transaction_id: Uuid::now_v7().to_string(),
            kind: kind as i32,
            source_account_id: if kind == pb::TransactionKind::Deposit {
                String::new()
            } else {
                Uuid::now_v7().to_string()
            },
            destination_account_id: if kind == pb::TransactionKind::Withdrawal {
                String::new()
            } else {
                Uuid::now_v7().to_string()
            },
            amount: Some(pb::Money {
                currency: "USD".to_owned(),
                amount: amount.to_owned(),
            }),
        };
        self.publish_request(&event).await;
        event
    }

    async fn publish_request(&self, event: &pb::TransactionRequestedEvent) {
        let routing_key = match pb::TransactionKind::try_from(event.kind) {
            Ok(pb::TransactionKind::Deposit) => wire::event::DEPOSIT_REQUESTED,
            Ok(pb::TransactionKind::Withdrawal) => wire::event::WITHDRAWAL_REQUESTED,
            _ => wire::event::TRANSFER_REQUESTED,
        };
        let message = OutgoingMessage::event(
            routing_key,
            wire::message_type::<pb::TransactionRequestedEvent>(),
            event.encode_to_vec(),
        );
        self.publish(message).await;
    }

    async fn reply(&self, command: &Received, outcome: pb::CommandOutcome, reason_code: &str) {
        let reply = pb::CommandReply {
            command_id: command.command_id.clone(),
            saga_id: command.saga_id.clone(),
            outcome: outcome as i32,
            reason_code: reason_code.to_owned(),
            detail: if reason_code.is_empty() {
                String::new()
            } else {
                format!("{reason_code} (scripted)")
            },
            hold_id: if command.is::<pb::ReserveFundsCommand>() {
                "hold-1".to_owned()
            } else {
                String::new()
            },
            journal_id: if command.is::<pb::PostTransferCommand>()
                || command.is::<pb::PostDepositCommand>()
            {
                "journal-1".to_owned()
            } else {
                String::new()
            },
        };
        let message = OutgoingMessage::reply(
            wire::service::ORCHESTRATOR,
            wire::message_type::<pb::CommandReply>(),
            reply.encode_to_vec(),
        );
        self.publish(message).await;
    }

    async fn succeed(&self, command: &Received) {
        self.reply(command, pb::CommandOutcome::Succeeded, "").await;
    }

    async fn reject(&self, command: &Received, reason_code: &str) {
        self.reply(command, pb::CommandOutcome::Rejected, reason_code)
            .await;
    }

    /// The next command sent, in order, whatever it is.
    async fn next_command(&mut self) -> Received {
        if let Some(command) = self.buffered.pop_front() {
            return command;
        }
        tokio::time::timeout(WAIT, self.commands.recv())
            .await
            .expect("a command arrives in time")
            .expect("participant queue open")
    }

    /// The next command of `M`, keeping the others for later.
    async fn expect<M: prost::Name>(&mut self) -> Received {
        self.expect_where(|command| command.is::<M>()).await
    }

    async fn expect_where(&mut self, wanted: impl Fn(&Received) -> bool) -> Received {
        if let Some(index) = self.buffered.iter().position(&wanted) {
            return self.buffered.remove(index).expect("buffered");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let command = tokio::time::timeout_at(deadline, self.commands.recv())
                .await
                .expect("the expected command arrives in time")
                .expect("participant queue open");
            if wanted(&command) {
                return command;
            }
            self.buffered.push_back(command);
        }
    }

    /// The next command that a saga awaits a reply to (skipping MarkProcessing).
    async fn next_awaited(&mut self) -> Received {
        self.expect_where(|command| !command.is::<pb::MarkProcessingCommand>())
            .await
    }

    /// Every command sent within `window`.
    async fn drain(&mut self, window: Duration) -> Vec<Received> {
        let mut all: Vec<Received> = self.buffered.drain(..).collect();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(command)) = tokio::time::timeout_at(deadline, self.commands.recv()).await
        {
            all.push(command);
        }
        all
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
        // The orchestrator's queues are durable: remove them, from a thread of
        // its own since drop cannot await.
        let namespace = self.namespace.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(connection) =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(channel) = connection.create_channel().await {
                    let _ = delete_topology(
                        &channel,
                        &namespace,
                        &corebank_orchestrator::queue_specs(),
                    )
                    .await;
                }
                let _ = connection.close(200, "test done".into()).await;
            });
        })
        .join();
    }
}

/// A queue of every command to `account` and `transaction`, in send order.
async fn participants(
    connection: &Connection,
    namespace: &Namespace,
) -> mpsc::UnboundedReceiver<Received> {
    let channel = connection.create_channel().await.expect("channel");
    let queue = format!("{}.test-participants", namespace.as_str());
    channel
        .queue_declare(
            queue.clone().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare participant queue");
    for participant in [wire::service::ACCOUNT, wire::service::TRANSACTION] {
        channel
            .queue_bind(
                queue.clone().into(),
                namespace.exchange(Exchange::Commands).into(),
                participant.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind participant queue");
    }
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume participant queue");
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _channel = channel;
        while let Some(Ok(delivery)) = consumer.next().await {
            let properties = &delivery.properties;
            let text = |value: &Option<lapin::types::ShortString>| {
                value
                    .as_ref()
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            let head = CommandHead::decode(delivery.data.as_slice()).unwrap_or_default();
            let received = Received {
                participant: delivery.routing_key.as_str().to_owned(),
                message_type: text(properties.kind()),
                message_id: text(properties.message_id()),
                correlation_id: text(properties.correlation_id()),
                command_id: head.command_id,
                saga_id: head.saga_id,
                payload: delivery.data.clone(),
                at: Instant::now(),
            };
            if sender.send(received).is_err() {
                break;
            }
        }
    });
    receiver
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

#[tokio::test]
async fn a_transfer_reserves_posts_and_completes_in_order() {
    let mut test = SagaTest::start(fast()).await;
    let request = test.request(pb::TransactionKind::Transfer, "125.50").await;

    let mark = test.next_command().await;
    let processing = mark.decode::<pb::MarkProcessingCommand>();
    assert_eq!(
        (
            mark.participant.as_str(),
            processing.transaction_id.as_str()
        ),
        ("transaction", request.transaction_id.as_str())
    );
    let reserve = test.next_command().await;
    let funds = reserve.decode::<pb::ReserveFundsCommand>();
    assert_eq!(reserve.participant, "account");
    assert_eq!(funds.account_id, request.source_account_id);
    assert_eq!(
        funds.amount.as_ref().map(|m| m.amount.as_str()),
        Some("125.50")
    );
    assert_eq!(
        reserve.command_id,
        format!("{}:reserve:forward", reserve.saga_id)
    );
    assert_eq!(
        reserve.correlation_id, reserve.saga_id,
        "the correlation id is the saga id"
    );
    test.succeed(&reserve).await;

    let post = test.next_command().await;
    let posting = post.decode::<pb::PostTransferCommand>();
    assert_eq!(posting.reserve_command_id, reserve.command_id);
    assert_eq!(
        posting.destination_account_id,
        request.destination_account_id
    );
    test.succeed(&post).await;

    let complete = test.next_command().await;
    assert_eq!(
        complete
            .decode::<pb::CompleteTransactionCommand>()
            .journal_id,
        "journal-1"
    );
    test.succeed(&complete).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Completed)
        .await;
    assert_eq!(saga.transaction_id, request.transaction_id);
    assert_eq!(
        history_events(&saga),
        pairs(&[
            ("reserve", "started"),
            ("reserve", "succeeded"),
            ("post", "succeeded"),
            ("complete", "completed")
        ])
    );
    assert!(
        saga.history
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence)
    );
    assert!(
        test.drain(Duration::from_millis(500)).await.is_empty(),
        "nothing more is sent"
    );
}

#[tokio::test]
async fn a_refused_reserve_fails_the_transaction_and_releases_nothing() {
    let mut test = SagaTest::start(fast()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    test.reject(&reserve, "INSUFFICIENT_FUNDS").await;

    let fail = test.next_awaited().await;
    let failing = fail.decode::<pb::FailTransactionCommand>();
    assert_eq!(failing.reason_code, "INSUFFICIENT_FUNDS");
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Failed)
        .await;
    assert_eq!(saga.failure_reason, "INSUFFICIENT_FUNDS");
    let rest = test.drain(Duration::from_millis(500)).await;
    assert!(
        rest.iter()
            .all(|command| !command.is::<pb::ReleaseFundsCommand>()),
        "no release: {rest:?}"
    );
}

#[tokio::test]
async fn a_refused_post_releases_the_hold_then_fails_the_transaction() {
    let mut test = SagaTest::start(fast()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    test.succeed(&reserve).await;
    let post = test.expect::<pb::PostTransferCommand>().await;
    test.reject(&post, "ACCOUNT_FROZEN").await;

    let release = test.next_awaited().await;
    let releasing = release.decode::<pb::ReleaseFundsCommand>();
    assert_eq!(releasing.reserve_command_id, reserve.command_id);
    assert_eq!(
        release.command_id,
        format!("{}:reserve:compensate", reserve.saga_id)
    );
    test.succeed(&release).await;

    let fail = test.next_awaited().await;
    assert_eq!(
        fail.decode::<pb::FailTransactionCommand>().reason_code,
        "ACCOUNT_FROZEN"
    );
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "ACCOUNT_FROZEN");
    assert_eq!(
        history_events(&saga),
        pairs(&[
            ("reserve", "started"),
            ("reserve", "succeeded"),
            ("post", "rejected"),
            ("reserve", "succeeded"),
            ("fail", "compensated"),
        ])
    );
}

#[tokio::test]
async fn a_silent_participant_gets_the_same_command_again_with_backoff_and_the_saga_completes_when_it_answers()
 {
    let config = fast();
    let mut test = SagaTest::start(config.clone()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let first = test.next_awaited().await;
    let second = test.next_awaited().await;
    let third = test.next_awaited().await;
    for resend in [&second, &third] {
        assert_eq!(
            resend.command_id, first.command_id,
            "a re-send keeps the command id"
        );
        assert!(resend.is::<pb::ReserveFundsCommand>());
    }
    assert_ne!(
        first.message_id, second.message_id,
        "each send is a new message"
    );
    assert_ne!(second.message_id, third.message_id);
    // Each wait is the timeout plus a full-jitter backoff whose ceiling doubles.
    let slack = config.tick + Duration::from_millis(250);
    for (attempt, (before, after)) in [(&first, &second), (&second, &third)]
        .into_iter()
        .enumerate()
    {
        let waited = after.at - before.at;
        let ceiling = config.backoff(u32::try_from(attempt).expect("small") + 1, 1.0);
        assert!(
            waited >= config.step_timeout - Duration::from_millis(20),
            "re-sent too early: {waited:?}"
        );
        assert!(
            waited <= config.step_timeout + ceiling + slack,
            "re-sent too late: {waited:?} (ceiling {ceiling:?})"
        );
    }
    test.succeed(&third).await;
    let post = test.next_awaited().await;
    test.succeed(&post).await;
    let complete = test.next_awaited().await;
    test.succeed(&complete).await;

    let saga = test
        .wait_for_state(&first.saga_id, pb::SagaState::Completed)
        .await;
    let retries = saga
        .history
        .iter()
        .filter(|entry| entry.event == "retried")
        .count();
    assert_eq!(retries, 2);
}

#[tokio::test]
async fn a_reserve_that_is_never_answered_is_released_anyway_and_the_saga_times_out() {
    let mut test = SagaTest::start(fast()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    let release = test.expect::<pb::ReleaseFundsCommand>().await;
    assert_eq!(
        release
            .decode::<pb::ReleaseFundsCommand>()
            .reserve_command_id,
        reserve.command_id
    );
    test.succeed(&release).await;
    let fail = test.expect::<pb::FailTransactionCommand>().await;
    assert_eq!(
        fail.decode::<pb::FailTransactionCommand>().reason_code,
        "TIMED_OUT"
    );
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "TIMED_OUT");
    let reserves = test
        .buffered
        .iter()
        .filter(|command| command.is::<pb::ReserveFundsCommand>())
        .count();
    assert_eq!(
        reserves + 1,
        fast().max_attempts as usize,
        "the reserve was sent max_attempts times"
    );
    assert!(history_events(&saga).contains(&("reserve".to_owned(), "timed_out".to_owned())));
}

#[tokio::test]
async fn a_post_that_is_never_answered_is_retried_forever_and_flagged_for_an_operator() {
    let config = fast();
    let mut test = SagaTest::start(config.clone()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    test.succeed(&reserve).await;

    let mut posts = 0;
    while posts < config.max_attempts + 2 {
        let command = test.next_awaited().await;
        assert!(
            command.is::<pb::PostTransferCommand>(),
            "only the post is re-sent, got {}",
            command.message_type
        );
        posts += 1;
    }
    let saga = test
        .wait_for(&reserve.saga_id, "flagged", |saga| saga.requires_attention)
        .await;
    assert_eq!(saga.state, pb::SagaState::Running as i32);
    assert_eq!(saga.current_step, "post");

    let attention = test
        .admin()
        .list_sagas(pb::ListSagasRequest {
            requires_attention_only: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(attention.sagas.len(), 1);

    let post = test.next_awaited().await;
    test.succeed(&post).await;
    let complete = test.expect::<pb::CompleteTransactionCommand>().await;
    test.succeed(&complete).await;
    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Completed)
        .await;
    assert!(!saga.requires_attention);
    assert!(
        test.buffered
            .iter()
            .all(|command| !command.is::<pb::ReleaseFundsCommand>())
    );
}

#[tokio::test]
async fn a_duplicate_reply_makes_one_transition() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    test.succeed(&reserve).await;
    test.succeed(&reserve).await;
    let post = test.next_awaited().await;
    assert!(post.is::<pb::PostTransferCommand>());
    let more = test.drain(Duration::from_millis(700)).await;
    assert!(
        more.iter()
            .all(|command| command.is::<pb::MarkProcessingCommand>()),
        "the duplicate sent nothing: {more:?}"
    );

    let saga = test.saga(&reserve.saga_id).await;
    let succeeded = history_events(&saga)
        .iter()
        .filter(|(step, event)| step == "reserve" && event == "succeeded")
        .count();
    assert_eq!(succeeded, 1);
    assert_eq!(saga.current_step, "post");
}

#[tokio::test]
async fn a_duplicate_transaction_request_starts_one_saga() {
    let mut test = SagaTest::start(patient()).await;
    let request = test.request(pb::TransactionKind::Transfer, "10.00").await;
    test.publish_request(&request).await;
    let reserve = test.next_awaited().await;
    let more = test.drain(Duration::from_millis(700)).await;
    assert!(
        more.iter()
            .all(|command| command.is::<pb::MarkProcessingCommand>()
                && command.saga_id == reserve.saga_id)
    );
    assert_eq!(test.saga_count().await, 1);
    assert_eq!(
        test.saga_id_of(&request.transaction_id).await,
        reserve.saga_id
    );
}

#[tokio::test]
async fn a_saga_interrupted_by_a_restart_completes_on_the_new_instance() {
    let mut test = SagaTest::start(fast()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    test.succeed(&reserve).await;
    let post = test.expect::<pb::PostTransferCommand>().await;

    test.stop_orchestrator().await;
    // The reply waits in the durable queue while nobody runs.
    test.succeed(&post).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    test.start_orchestrator().await;

    let complete = test.expect::<pb::CompleteTransactionCommand>().await;
    test.succeed(&complete).await;
    test.wait_for_state(&reserve.saga_id, pb::SagaState::Completed)
        .await;
}

#[tokio::test]
async fn a_deposit_credits_the_account_and_completes() {
    let mut test = SagaTest::start(fast()).await;
    let request = test.request(pb::TransactionKind::Deposit, "99.99").await;
    let deposit = test.next_awaited().await;
    let posting = deposit.decode::<pb::PostDepositCommand>();
    assert_eq!(posting.account_id, request.destination_account_id);
    test.succeed(&deposit).await;
    let complete = test.next_awaited().await;
    test.succeed(&complete).await;
    let saga = test
        .wait_for_state(&deposit.saga_id, pb::SagaState::Completed)
        .await;
    assert_eq!(saga.saga_type, "deposit");
}

#[tokio::test]
async fn operators_list_inspect_retry_and_abort_sagas_but_not_past_the_pivot() {
    let mut test = SagaTest::start(patient()).await;
    let mut admin = test.admin();
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let early = test.next_awaited().await;
    test.request(pb::TransactionKind::Withdrawal, "20.00").await;
    let late = test
        .expect_where(|c| c.is::<pb::ReserveFundsCommand>() && c.saga_id != early.saga_id)
        .await;
    test.succeed(&late).await;
    test.expect_where(|c| c.is::<pb::PostTransferCommand>() && c.saga_id == late.saga_id)
        .await;

    let running = admin
        .list_sagas(pb::ListSagasRequest {
            state: pb::SagaState::Running as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(running.sagas.len(), 1);
    assert!(!running.next_page_token.is_empty());
    let withdrawals = admin
        .list_sagas(pb::ListSagasRequest {
            saga_type: "withdrawal".to_owned(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        withdrawals
            .sagas
            .iter()
            .map(|s| s.saga_id.as_str())
            .collect::<Vec<_>>(),
        [late.saga_id.as_str()]
    );
    let mut an_hour_old = pb::ListSagasRequest {
        min_age: Some(Default::default()),
        ..Default::default()
    };
    if let Some(age) = an_hour_old.min_age.as_mut() {
        age.seconds = 3600;
    }
    let old = admin
        .list_sagas(an_hour_old)
        .await
        .expect("list")
        .into_inner();
    assert!(old.sagas.is_empty());

    let action = |saga_id: &str, actor: &str| pb::SagaActionRequest {
        saga_id: saga_id.to_owned(),
        actor: actor.to_owned(),
        reason: "ticket OPS-42".to_owned(),
    };
    let refused = admin
        .abort_saga(action(&early.saga_id, ""))
        .await
        .expect_err("an actor is required");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let retried = admin
        .retry_saga(action(&early.saga_id, "ops-ann"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.attempt, 1);
    let resent = test
        .expect_where(|c| c.is::<pb::ReserveFundsCommand>() && c.saga_id == early.saga_id)
        .await;
    assert_eq!(resent.command_id, early.command_id);

    let past_pivot = admin
        .abort_saga(action(&late.saga_id, "ops-ann"))
        .await
        .expect_err("past the pivot");
    assert_eq!(past_pivot.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&past_pivot), "SAGA_PAST_PIVOT");

    let aborted = admin
        .abort_saga(action(&early.saga_id, "ops-bob"))
        .await
        .expect("abort")
        .into_inner();
    assert_eq!(aborted.state, pb::SagaState::Compensating as i32);
    let release = test
        .expect_where(|c| c.is::<pb::ReleaseFundsCommand>() && c.saga_id == early.saga_id)
        .await;
    test.succeed(&release).await;
    let fail = test
        .expect_where(|c| c.is::<pb::FailTransactionCommand>() && c.saga_id == early.saga_id)
        .await;
    assert_eq!(
        fail.decode::<pb::FailTransactionCommand>().reason_code,
        "ABORTED"
    );
    test.succeed(&fail).await;
    let saga = test
        .wait_for_state(&early.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "ABORTED");
    let actions: Vec<_> = saga
        .history
        .iter()
        .filter(|entry| !entry.actor.is_empty())
        .map(|entry| {
            (
                entry.event.as_str(),
                entry.actor.as_str(),
                entry.detail.contains("OPS-42"),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin_retry", "ops-ann", true),
            ("admin_abort", "ops-bob", true)
        ]
    );

    let terminal = admin
        .retry_saga(action(&early.saga_id, "ops-ann"))
        .await
        .expect_err("terminal");
    assert_eq!(reason(&terminal), "SAGA_TERMINAL");
    let missing = admin
        .get_saga(pb::GetSagaRequest {
            saga_id: Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown saga");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn the_step_log_cannot_be_edited() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    test.wait_for(&reserve.saga_id, "logged", |saga| !saga.history.is_empty())
        .await;
    let pool = test
        .db
        .service_pool(&corebank_orchestrator::SCHEMA, 1)
        .await;
    let as_service = sqlx::query("update saga_log set detail = 'edited'")
        .execute(&pool)
        .await;
    assert!(
        as_service.is_err(),
        "the service role cannot update the log"
    );
    let as_owner = sqlx::query("delete from orchestrator.saga_log")
        .execute(&test.db.owner)
        .await;
    assert!(
        as_owner.is_err(),
        "not even the owner can delete from the log"
    );
}
