//! TransactionService and its saga commands. Each test runs the service on a
//! fresh database and a fresh broker namespace, and plays the orchestrator
//! itself: it publishes commands to the `commands` exchange and reads the
//! replies and events from queues of its own.

use std::time::Duration;

use chrono::Utc;
use corebank_platform::clock::{ManualClock, SharedClock};
use corebank_platform::config::RequestArgs;
use corebank_platform::messaging::{
    Broker, BrokerConfig, Exchange, Namespace, OutgoingMessage, declare_exchanges, declare_queue,
    delete_topology,
};
use corebank_proto::v1 as pb;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;
use corebank_proto::wire;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use prost::{Message, Name};
use secrecy::SecretString;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::helpers::{TestDb, key, reason, violated_fields};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The longest any test waits for something to happen.
const PATIENCE: Duration = Duration::from_secs(15);

/// The transaction service, a client, and the orchestrator's side of the broker.
struct TransactionApp {
    db: TestDb,
    client: TransactionServiceClient<Channel>,
    clock: Arc<ManualClock>,
    namespace: Namespace,
    broker: Broker,
    amqp: lapin::Connection,
    channel: lapin::Channel,
    replies: String,
    events: String,
    shutdown: CancellationToken,
    service: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TransactionApp {
    async fn spawn() -> Self {
        Self::spawn_with(RequestArgs::default()).await
    }

    async fn spawn_with(requests: RequestArgs) -> Self {
        let db = TestDb::create(&[corebank_transaction::SCHEMA]).await;
        let namespace = Namespace::new(format!("t{}", Uuid::new_v4().simple()));
        let amqp = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = amqp.create_channel().await.expect("amqp channel");
        declare_exchanges(&channel, &namespace)
            .await
            .expect("declare exchanges");
        // Declared before the service starts, so no command is published into the void.
        declare_queue(
            &channel,
            &namespace,
            &corebank_transaction::consumer::queue_spec(),
        )
        .await
        .expect("declare the command queue");
        let replies = namespace.queue("test.replies");
        let events = namespace.queue("test.events");
        for (queue, exchange, routing_key) in [
            (&replies, Exchange::Replies, wire::service::ORCHESTRATOR),
            (&events, Exchange::Events, "transaction.#"),
        ] {
            let options = QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue.clone().into(), options, FieldTable::default())
                .await
                .expect("declare test queue");
            channel
                .queue_bind(
                    queue.clone().into(),
                    namespace.exchange(exchange).into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind test queue");
        }

        let broker = Broker::connect(BrokerConfig::new(
            SecretString::from(AMQP_URL),
            namespace.clone(),
            "transaction-test",
        ))
        .await
        .expect("broker");
        let clock = ManualClock::new(Utc::now());
        let shared: SharedClock = clock.clone();
        let app = corebank_transaction::Application::build(
            corebank_transaction::Settings {
                pool: db.service_pool(&corebank_transaction::SCHEMA, 10).await,
                clock: shared,
                requests,
                broker: broker.clone(),
            },
            "127.0.0.1:0".parse().expect("loopback address"),
        )
        .await
        .expect("build transaction service");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let service = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
        let client = TransactionServiceClient::new(
            endpoint.connect().await.expect("connect to the service"),
        );
        TransactionApp {
            db,
            client,
            clock,
            namespace,
            broker,
            amqp,
            channel,
            replies,
            events,
            shutdown,
            service: Some(service),
        }
    }

    /// Stops the service and removes the namespace's queues and exchanges.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(service) = self.service.take() {
            let stopped = tokio::time::timeout(PATIENCE, service)
                .await
                .expect("service stops in time");
            stopped.expect("service task").expect("service ran cleanly");
        }
        self.broker.close().await;
        delete_topology(
            &self.channel,
            &self.namespace,
            &[corebank_transaction::consumer::queue_spec()],
        )
        .await
        .expect("delete test topology");
        let _ = self.amqp.close(200, "test done".into()).await;
    }

    fn transfer(&self, source: &str, destination: &str, amount: &str) -> pb::CreateTransferRequest {
        pb::CreateTransferRequest {
            idempotency_key: key(),
            source_account_id: source.to_owned(),
            destination_account_id: destination.to_owned(),
            amount: Some(usd(amount)),
            description: "rent for march".to_owned(),
            wait: None,
        }
    }

    async fn create_transfer(&self) -> pb::Transaction {
        let request = self.transfer(&account(), &account(), "125.50");
        self.client
            .clone()
            .create_transfer(request)
            .await
            .expect("create transfer")
            .into_inner()
    }

    async fn get(&self, transaction_id: &str) -> pb::Transaction {
        self.client
            .clone()
            .get_transaction(pb::GetTransactionRequest {
                transaction_id: transaction_id.to_owned(),
            })
            .await
            .expect("get transaction")
            .into_inner()
    }

    /// Publishes a saga command the way the orchestrator's outbox relay would;
    /// returns its message id.
    async fn send<M: Message + Name>(&self, command: &M, saga_id: Uuid) -> Uuid {
        let message = OutgoingMessage::command(
            wire::service::TRANSACTION,
            wire::message_type::<M>(),
            command.encode_to_vec(),
        )
        .with_correlation_id(saga_id);
        self.channel
            .basic_publish(
                self.namespace.exchange(Exchange::Commands).into(),
                wire::service::TRANSACTION.into(),
                BasicPublishOptions::default(),
                &message.payload,
                message.properties("orchestrator-test"),
            )
            .await
            .expect("publish command")
            .await
            .expect("command confirmed");
        message.message_id
    }

    /// The next message on one of the test's queues.
    async fn next(&self, queue: &str) -> BasicGetMessage {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self
                .channel
                .basic_get(queue.to_owned().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(got) = got {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing arrived on {queue} within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that nothing more arrives on `queue` for a while.
    async fn nothing_more(&self, queue: &str) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let got = self
            .channel
            .basic_get(queue.to_owned().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        assert!(
            got.is_none(),
            "unexpected message on {queue}: {:?}",
            got.map(|g| g.delivery.routing_key)
        );
    }

    /// The next reply, checked to be a `CommandReply` caused by `cause`.
    async fn reply(&self, saga_id: Uuid, cause: Uuid) -> pb::CommandReply {
        let got = self.next(&self.replies).await;
        let properties = &got.delivery.properties;
        assert_eq!(
            properties.kind().as_ref().map(|k| k.as_str()),
            Some("corebank.v1.CommandReply")
        );
        assert_eq!(
            properties.correlation_id().as_ref().map(|c| c.to_string()),
            Some(saga_id.to_string())
        );
        let causation = match properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get("causation-id"))
        {
            Some(AMQPValue::LongString(text)) => {
                String::from_utf8_lossy(text.as_bytes()).into_owned()
            }
            other => panic!("causation id header {other:?}"),
        };
        assert_eq!(causation, cause.to_string());
        pb::CommandReply::decode(got.delivery.data.as_slice()).expect("reply decodes")
    }

    /// The next event, checked to have `routing_key` and type `M`.
    async fn event<M: Message + Name + Default>(&self, routing_key: &str) -> M {
        let got = self.next(&self.events).await;
        assert_eq!(got.delivery.routing_key.as_str(), routing_key);
        let kind = got
            .delivery
            .properties
            .kind()
            .as_ref()
            .map(|k| k.as_str().to_owned());
        assert_eq!(kind, Some(wire::message_type::<M>()));
        M::decode(got.delivery.data.as_slice()).expect("event decodes")
    }

    /// Polls until the transaction has `status`.
    async fn wait_for_status(
        &self,
        transaction_id: &str,
        status: pb::TransactionStatus,
    ) -> pb::Transaction {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let transaction = self.get(transaction_id).await;
            if transaction.status == status as i32 {
                return transaction;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{transaction_id} never became {status:?}: {transaction:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&self.db.owner)
            .await
            .expect("count rows")
    }
}

/// The next item of a watch, or `None` when the stream ended.
async fn next(stream: &mut tonic::Streaming<pb::Transaction>) -> Option<pb::Transaction> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("stream item in time")
        .expect("stream ok")
}

fn account() -> String {
    Uuid::now_v7().to_string()
}

fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

fn mark_processing(saga_id: Uuid, transaction_id: &str) -> pb::MarkProcessingCommand {
    pb::MarkProcessingCommand {
        command_id: wire::command_id(saga_id, "mark_processing", wire::Direction::Forward),
        saga_id: saga_id.to_string(),
        transaction_id: transaction_id.to_owned(),
    }
}

fn complete(
    saga_id: Uuid,
    transaction_id: &str,
    journal_id: &str,
) -> pb::CompleteTransactionCommand {
    pb::CompleteTransactionCommand {
        command_id: wire::command_id(saga_id, "complete", wire::Direction::Forward),
        saga_id: saga_id.to_string(),
        transaction_id: transaction_id.to_owned(),
        journal_id: journal_id.to_owned(),
    }
}

fn fail(saga_id: Uuid, transaction_id: &str, reason_code: &str) -> pb::FailTransactionCommand {
    pb::FailTransactionCommand {
        command_id: wire::command_id(saga_id, "fail", wire::Direction::Compensate),
        saga_id: saga_id.to_string(),
        transaction_id: transaction_id.to_owned(),
        reason_code: reason_code.to_owned(),
        detail: "available 10.00, asked 125.50".to_owned(),
    }
}

/// `request` with a `wait` of `seconds` (the Duration type is inferred: this
/// crate does not depend on prost-types).
fn with_wait(mut request: pb::CreateTransferRequest, seconds: i64) -> pb::CreateTransferRequest {
    let mut wait = request.wait.take().unwrap_or_default();
    wait.seconds = seconds;
    wait.nanos = 0;
    request.wait = Some(wait);
    request
}

#[tokio::test]
async fn a_created_transfer_is_pending_and_announced_with_a_requested_event() {
    let app = TransactionApp::spawn().await;
    let (source, destination) = (account(), account());
    let created = app
        .client
        .clone()
        .create_transfer(app.transfer(&source, &destination, "125.5"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.status, pb::TransactionStatus::Pending as i32);
    assert_eq!(created.kind, pb::TransactionKind::Transfer as i32);
    assert_eq!(created.amount, Some(usd("125.50")));
    assert_eq!(created.description, "rent for march");
    assert_eq!(app.get(&created.transaction_id).await, created);

    let event: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    assert_eq!(
        event,
        pb::TransactionRequestedEvent {
            transaction_id: created.transaction_id.clone(),
            kind: pb::TransactionKind::Transfer as i32,
            source_account_id: source,
            destination_account_id: destination,
            amount: Some(usd("125.50")),
        }
    );
    assert_eq!(app.count("transaction.transaction_status_change").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn deposits_and_withdrawals_name_their_one_account_and_their_own_event() {
    let app = TransactionApp::spawn().await;
    let account_id = account();
    let deposit = app
        .client
        .clone()
        .create_deposit(pb::CreateDepositRequest {
            idempotency_key: key(),
            account_id: account_id.clone(),
            amount: Some(usd("50")),
            description: String::new(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deposit.kind, pb::TransactionKind::Deposit as i32);
    assert_eq!(
        (
            deposit.source_account_id.as_str(),
            deposit.destination_account_id.as_str()
        ),
        ("", account_id.as_str())
    );
    let event: pb::TransactionRequestedEvent = app.event(wire::event::DEPOSIT_REQUESTED).await;
    assert_eq!(event.transaction_id, deposit.transaction_id);

    let withdrawal = app
        .client
        .clone()
        .create_withdrawal(pb::CreateWithdrawalRequest {
            idempotency_key: key(),
            account_id: account_id.clone(),
            amount: Some(usd("20")),
            description: "atm".to_owned(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(withdrawal.kind, pb::TransactionKind::Withdrawal as i32);
    assert_eq!(
        (
            withdrawal.source_account_id.as_str(),
            withdrawal.destination_account_id.as_str()
        ),
        (account_id.as_str(), "")
    );
    let event: pb::TransactionRequestedEvent = app.event(wire::event::WITHDRAWAL_REQUESTED).await;
    assert_eq!(event.source_account_id, account_id);
    app.stop().await;
}

#[tokio::test]
async fn requests_with_bad_fields_are_refused_naming_each_field_and_nothing_is_written() {
    let app = TransactionApp::spawn().await;
    let same = account();
    let bad_transfer = pb::CreateTransferRequest {
        idempotency_key: String::new(),
        source_account_id: "not-a-uuid".to_owned(),
        destination_account_id: String::new(),
        amount: Some(pb::Money {
            currency: "XYZ".to_owned(),
            amount: "-3".to_owned(),
        }),
        description: "x".repeat(501),
        wait: None,
    };
    let bad_transfer = with_wait(bad_transfer, 31);
    let status = app
        .client
        .clone()
        .create_transfer(bad_transfer)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "VALIDATION_FAILED");
    assert_eq!(
        violated_fields(&status),
        [
            "idempotency_key",
            "source_account_id",
            "destination_account_id",
            "amount.currency",
            "amount.amount",
            "description",
            "wait"
        ]
    );

    let to_itself = pb::CreateTransferRequest {
        amount: Some(usd("1.001")),
        ..app.transfer(&same, &same, "1")
    };
    let status = app
        .client
        .clone()
        .create_transfer(to_itself)
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["destination_account_id", "amount.amount"]
    );

    let too_large = app.transfer(&account(), &account(), "1000.01");
    let limited = RequestArgs {
        max_amount: rust_decimal::Decimal::from(1000),
        ..RequestArgs::default()
    };
    let limited_app = TransactionApp::spawn_with(limited).await;
    let status = limited_app
        .client
        .clone()
        .create_transfer(too_large)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["amount.amount"]);
    limited_app.stop().await;

    let mut no_amount = pb::CreateDepositRequest {
        idempotency_key: key(),
        account_id: "42".to_owned(),
        amount: None,
        description: String::new(),
        wait: None,
    };
    let mut negative = no_amount.wait.take().unwrap_or_default();
    negative.seconds = -1;
    no_amount.wait = Some(negative);
    let status = app
        .client
        .clone()
        .create_deposit(no_amount)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["account_id", "amount", "wait"]);

    let no_key = pb::CreateWithdrawalRequest {
        idempotency_key: String::new(),
        account_id: account(),
        amount: Some(pb::Money {
            currency: "JPY".to_owned(),
            amount: "10.5".to_owned(),
        }),
        description: String::new(),
        wait: None,
    };
    let status = app
        .client
        .clone()
        .create_withdrawal(no_key)
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["idempotency_key", "amount.amount"]
    );

    assert_eq!(app.count("transaction.transaction").await, 0);
    assert_eq!(app.count("transaction.outbox").await, 0);
    assert_eq!(app.count("transaction.idempotency_key").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn replaying_a_request_with_its_key_returns_the_first_answer_and_writes_once() {
    let app = TransactionApp::spawn().await;
    let request = app.transfer(&account(), &account(), "10");
    let first = app
        .client
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client
        .clone()
        .create_transfer(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(app.count("transaction.transaction").await, 1);
    assert_eq!(app.count("transaction.outbox").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn reusing_a_key_with_another_request_is_refused_and_changes_nothing() {
    let app = TransactionApp::spawn().await;
    let request = app.transfer(&account(), &account(), "10");
    app.client
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap();
    let other = pb::CreateTransferRequest {
        amount: Some(usd("11")),
        ..request
    };
    let status = app.client.clone().create_transfer(other).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("transaction.transaction").await, 1);
    assert_eq!(app.count("transaction.outbox").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn ten_concurrent_requests_with_one_key_create_one_transaction() {
    let app = TransactionApp::spawn().await;
    let request = app.transfer(&account(), &account(), "10");
    let attempts = (0..10).map(|_| {
        let mut client = app.client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.create_transfer(request).await })
    });
    let mut ids = Vec::new();
    for attempt in futures::future::join_all(attempts).await {
        match attempt.expect("request task") {
            Ok(answer) => ids.push(answer.into_inner().transaction_id),
            // A request that waited too long for the first one is told to retry.
            Err(status) => assert_eq!(reason(&status), "IDEMPOTENCY_KEY_IN_USE", "{status:?}"),
        }
    }
    assert!(!ids.is_empty());
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.count("transaction.transaction").await, 1);
    assert_eq!(app.count("transaction.outbox").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn mark_processing_then_complete_completes_the_transaction_replies_and_announces_it() {
    let app = TransactionApp::spawn().await;
    let created = app.create_transfer().await;
    let id = created.transaction_id.clone();
    let _: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let saga = Uuid::now_v7();

    app.send(&mark_processing(saga, &id), saga).await;
    app.wait_for_status(&id, pb::TransactionStatus::Processing)
        .await;

    let journal = Uuid::now_v7().to_string();
    let command = complete(saga, &id, &journal);
    let message_id = app.send(&command, saga).await;
    let reply = app.reply(saga, message_id).await;
    assert_eq!(reply.command_id, command.command_id);
    assert_eq!(reply.saga_id, saga.to_string());
    assert_eq!(reply.outcome, pb::CommandOutcome::Succeeded as i32);

    let event: pb::TransactionCompletedEvent = app.event(wire::event::TRANSFER_COMPLETED).await;
    assert_eq!(event.transaction_id, id);
    assert_eq!(event.journal_id, journal);
    assert_eq!(event.amount, Some(usd("125.50")));

    let completed = app.get(&id).await;
    assert_eq!(completed.status, pb::TransactionStatus::Completed as i32);
    assert_eq!(completed.journal_id, journal);
    assert_eq!(app.count("transaction.transaction_status_change").await, 3);
    app.nothing_more(&app.replies).await;
    app.stop().await;
}

#[tokio::test]
async fn a_failed_transaction_keeps_its_reason_and_is_announced() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let saga = Uuid::now_v7();
    let command = fail(saga, &id, "INSUFFICIENT_FUNDS");
    let message_id = app.send(&command, saga).await;

    let reply = app.reply(saga, message_id).await;
    assert_eq!(reply.outcome, pb::CommandOutcome::Succeeded as i32);
    assert_eq!(reply.command_id, command.command_id);
    let _: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let event: pb::TransactionFailedEvent = app.event(wire::event::TRANSFER_FAILED).await;
    assert_eq!(event.reason_code, "INSUFFICIENT_FUNDS");
    assert_eq!(event.detail, command.detail);

    let failed = app.get(&id).await;
    assert_eq!(failed.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(failed.failure_reason, "INSUFFICIENT_FUNDS");
    assert_eq!(failed.failure_detail, command.detail);
    app.stop().await;
}

#[tokio::test]
async fn a_resent_command_has_one_effect_and_gets_the_stored_reply_again() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let saga = Uuid::now_v7();
    let command = complete(saga, &id, &Uuid::now_v7().to_string());

    let first_message = app.send(&command, saga).await;
    let first = app.reply(saga, first_message).await;
    let second_message = app.send(&command, saga).await;
    let second = app.reply(saga, second_message).await;
    assert_ne!(first_message, second_message);
    assert_eq!(first, second);

    let _: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let _: pb::TransactionCompletedEvent = app.event(wire::event::TRANSFER_COMPLETED).await;
    app.nothing_more(&app.events).await;
    assert_eq!(app.count("transaction.transaction_status_change").await, 2);
    assert_eq!(app.count("transaction.command_log").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn completing_a_failed_transaction_is_rejected_and_failing_it_again_is_harmless() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let saga = Uuid::now_v7();
    let message_id = app.send(&fail(saga, &id, "ACCOUNT_FROZEN"), saga).await;
    assert_eq!(
        app.reply(saga, message_id).await.outcome,
        pb::CommandOutcome::Succeeded as i32
    );

    let other_saga = Uuid::now_v7();
    let message_id = app
        .send(&fail(other_saga, &id, "TIMED_OUT"), other_saga)
        .await;
    assert_eq!(
        app.reply(other_saga, message_id).await.outcome,
        pb::CommandOutcome::Succeeded as i32
    );

    let message_id = app.send(&complete(saga, &id, "journal-1"), saga).await;
    let refused = app.reply(saga, message_id).await;
    assert_eq!(refused.outcome, pb::CommandOutcome::Rejected as i32);
    assert_eq!(refused.reason_code, "TRANSACTION_ALREADY_TERMINAL");

    let failed = app.get(&id).await;
    assert_eq!(failed.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(failed.failure_reason, "ACCOUNT_FROZEN");
    assert_eq!(failed.journal_id, "");
    app.stop().await;
}

#[tokio::test]
async fn a_create_with_a_wait_answers_with_the_terminal_status_reached_within_it() {
    let app = TransactionApp::spawn().await;
    let request = with_wait(app.transfer(&account(), &account(), "10"), 10);
    let mut client = app.client.clone();
    let started = std::time::Instant::now();
    let creating = tokio::spawn(async move { client.create_transfer(request).await });

    // Play the orchestrator: learn the id from the requested event, then complete it.
    let event: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let saga = Uuid::now_v7();
    app.send(&mark_processing(saga, &event.transaction_id), saga)
        .await;
    app.send(&complete(saga, &event.transaction_id, "journal-7"), saga)
        .await;

    let answer = tokio::time::timeout(PATIENCE, creating)
        .await
        .expect("answer in time")
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(answer.transaction_id, event.transaction_id);
    assert_eq!(answer.status, pb::TransactionStatus::Completed as i32);
    assert_eq!(answer.journal_id, "journal-7");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered as soon as it completed"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_create_with_a_wait_that_runs_out_answers_with_the_latest_status() {
    let app = TransactionApp::spawn().await;
    let request = with_wait(app.transfer(&account(), &account(), "10"), 1);
    let started = std::time::Instant::now();
    let answer = app
        .client
        .clone()
        .create_transfer(request)
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(answer.status, pb::TransactionStatus::Pending as i32);
    app.stop().await;
}

#[tokio::test]
async fn watching_a_transaction_streams_each_status_until_it_ends() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let mut stream = app
        .client
        .clone()
        .watch_transaction(pb::GetTransactionRequest {
            transaction_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.expect("current state");
    assert_eq!(first.status, pb::TransactionStatus::Pending as i32);

    let saga = Uuid::now_v7();
    // Both at once: the watcher must still see PROCESSING on its way.
    app.send(&mark_processing(saga, &id), saga).await;
    app.send(&complete(saga, &id, "journal-9"), saga).await;
    let second = next(&mut stream).await.expect("processing");
    assert_eq!(second.status, pb::TransactionStatus::Processing as i32);
    assert_eq!(second.journal_id, "");
    let third = next(&mut stream).await.expect("completed");
    assert_eq!(third.status, pb::TransactionStatus::Completed as i32);
    assert_eq!(third.journal_id, "journal-9");
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends after a terminal status"
    );

    let unknown = app
        .client
        .clone()
        .watch_transaction(pb::GetTransactionRequest {
            transaction_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_or_malformed_transaction_id_is_answered_clearly() {
    let app = TransactionApp::spawn().await;
    let missing = app
        .client
        .clone()
        .get_transaction(pb::GetTransactionRequest {
            transaction_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "TRANSACTION_NOT_FOUND");
    let malformed = app
        .client
        .clone()
        .get_transaction(pb::GetTransactionRequest {
            transaction_id: "42".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&malformed), ["transaction_id"]);
    app.stop().await;
}

#[tokio::test]
async fn transactions_of_an_account_are_listed_newest_first_page_by_page_and_filtered() {
    let app = TransactionApp::spawn().await;
    let mine = account();
    let mut created = Vec::new();
    for index in 0..5 {
        // Alternate sides, one minute apart.
        let request = if index % 2 == 0 {
            app.transfer(&mine, &account(), "1")
        } else {
            app.transfer(&account(), &mine, "1")
        };
        created.push(
            app.client
                .clone()
                .create_transfer(request)
                .await
                .unwrap()
                .into_inner(),
        );
        app.clock.advance(chrono::Duration::minutes(1));
    }
    app.create_transfer().await; // someone else's
    let newest_first: Vec<String> = created
        .iter()
        .rev()
        .map(|t| t.transaction_id.clone())
        .collect();

    let list = |request: pb::ListTransactionsRequest| {
        let mut client = app.client.clone();
        async move { client.list_transactions(request).await }
    };
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list(pb::ListTransactionsRequest {
            account_id: mine.clone(),
            page_size: 2,
            page_token: page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert!(page.transactions.len() <= 2);
        seen.extend(page.transactions.into_iter().map(|t| t.transaction_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, newest_first);

    // A time window: created at or after the second, before the fourth.
    let window = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        start_time: created[1].create_time,
        end_time: created[3].create_time,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let ids: Vec<_> = window
        .transactions
        .iter()
        .map(|t| t.transaction_id.clone())
        .collect();
    assert_eq!(
        ids,
        [
            created[2].transaction_id.clone(),
            created[1].transaction_id.clone()
        ]
    );

    // A status filter, after completing one.
    let saga = Uuid::now_v7();
    app.send(
        &complete(saga, &created[0].transaction_id, "journal-1"),
        saga,
    )
    .await;
    app.wait_for_status(&created[0].transaction_id, pb::TransactionStatus::Completed)
        .await;
    let completed = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        status: pb::TransactionStatus::Completed as i32,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let ids: Vec<_> = completed
        .transactions
        .iter()
        .map(|t| t.transaction_id.clone())
        .collect();
    assert_eq!(ids, [created[0].transaction_id.clone()]);

    // A page token is bound to its filters.
    let first_page = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        page_size: 1,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let status = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        page_size: 1,
        page_token: first_page.next_page_token,
        status: pb::TransactionStatus::Pending as i32,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);

    let status = list(pb::ListTransactionsRequest {
        account_id: "mine".to_owned(),
        status: 42,
        start_time: created[3].create_time,
        end_time: created[1].create_time,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["account_id", "status", "end_time"]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_or_undecodable_command_is_parked_and_changes_nothing() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    for (message_type, payload) in [
        ("corebank.v1.NoSuchCommand".to_owned(), vec![1, 2, 3]),
        (
            wire::message_type::<pb::CompleteTransactionCommand>(),
            vec![0xff, 0xff, 0xff],
        ),
    ] {
        let message = OutgoingMessage::command(wire::service::TRANSACTION, message_type, payload);
        app.channel
            .basic_publish(
                app.namespace.exchange(Exchange::Commands).into(),
                wire::service::TRANSACTION.into(),
                BasicPublishOptions::default(),
                &message.payload,
                message.properties("orchestrator-test"),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
    let dlq = app.namespace.dlq(wire::queue::TRANSACTION_COMMANDS);
    app.next(&dlq).await;
    app.next(&dlq).await;
    assert_eq!(
        app.get(&id).await.status,
        pb::TransactionStatus::Pending as i32
    );
    assert_eq!(app.count("transaction.command_log").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_status_history_cannot_be_rewritten_even_by_the_service_role() {
    let app = TransactionApp::spawn().await;
    app.create_transfer().await;
    let service = app.db.service_pool(&corebank_transaction::SCHEMA, 1).await;
    for statement in [
        "update transaction_status_change set detail = 'edited'",
        "delete from transaction_status_change",
    ] {
        let denied = sqlx::query(statement).execute(&service).await.unwrap_err();
        assert_eq!(
            corebank_platform::error::sqlstate(&denied).as_deref(),
            Some("42501"),
            "{statement}: {denied}"
        );
    }
    let denied = sqlx::query("delete from transaction.transaction_status_change")
        .execute(&app.db.owner)
        .await
        .unwrap_err();
    assert_eq!(
        corebank_platform::error::sqlstate(&denied).as_deref(),
        Some("42501"),
        "{denied}"
    );
    assert_eq!(app.count("transaction.transaction_status_change").await, 1);
    app.stop().await;
}
