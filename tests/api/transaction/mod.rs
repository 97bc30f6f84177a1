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
    delete_topology, unpack,
};
use corebank_proto::v1 as pb;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;
use corebank_proto::wire;
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use prost::{Message, Name};
use secrecy::SecretString;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestDb, key, reason, violated_fields};

mod commands;
mod reading;
mod requests;

/// The longest any test waits for something to happen.
const PATIENCE: Duration = Duration::from_secs(15);

/// The transaction service, a client, and the orchestrator's side of the broker.
struct TransactionApp {
    db: TestDb,
    client: TransactionServiceClient<corebank_platform::auth::AuthedChannel>,
    clock: Arc<ManualClock>,
    namespace: Namespace,
    broker: Broker,
    amqp: lapin::Connection,
    channel: lapin::Channel,
    replies: String,
    events: String,
    /// Messages of batch envelopes not read yet, per queue.
    unread: std::sync::Mutex<std::collections::HashMap<String, VecDeque<Delivery>>>,
    shutdown: CancellationToken,
    service: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TransactionApp {
    async fn spawn() -> Self {
        Self::spawn_with(RequestArgs::default()).await
    }

    async fn spawn_with(requests: RequestArgs) -> Self {
        Self::spawn_gathering(requests, Duration::from_millis(2)).await
    }

    /// The service, each round of its relay gathering handed-over rows for
    /// `request_gather`.
    async fn spawn_gathering(requests: RequestArgs, request_gather: Duration) -> Self {
        let db = TestDb::create(&[corebank_transaction::SCHEMA]).await;
        let namespace = Namespace::new(format!("t{}", Uuid::new_v4().simple()));
        let amqp = lapin::Connection::connect(
            &crate::helpers::amqp_url(),
            lapin::ConnectionProperties::default(),
        )
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
            SecretString::from(crate::helpers::amqp_url()),
            namespace.clone(),
            "transaction-test",
        ))
        .await
        .expect("broker");
        let clock = ManualClock::new(Utc::now());
        let shared: SharedClock = clock.clone();
        let auth = corebank_platform::auth::ServiceAuth::development(
            &corebank_platform::auth::DevKey::generate().expect("a token signing key"),
            "transaction",
        );
        let app = corebank_transaction::Application::build(
            corebank_transaction::Settings {
                pool: db.service_pool(&corebank_transaction::SCHEMA, 10).await,
                clock: shared,
                requests,
                broker: broker.clone(),
                auth: auth.clone(),
                // Never asked: a service caller reaches every account.
                account_endpoint: "http://127.0.0.1:1".to_owned(),
                request_gather,
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
            auth.credentials
                .connect_lazy(endpoint)
                .expect("channel to the service"),
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
            unread: Default::default(),
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
        // Teardown only: a broker call that never answers (seen under load)
        // must not hold the test for the runner's kill timeout. The test's
        // assertions are all behind it.
        let teardown = async {
            self.broker.close().await;
            delete_topology(
                &self.channel,
                &self.namespace,
                &[corebank_transaction::consumer::queue_spec()],
            )
            .await
            .expect("delete test topology");
            let _ = self.amqp.close(200, "test done".into()).await;
        };
        if tokio::time::timeout(PATIENCE, teardown).await.is_err() {
            eprintln!(
                "broker teardown of {} did not finish in time",
                self.namespace.as_str()
            );
        }
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
    async fn next(&self, queue: &str) -> Delivery {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(delivery) = self.try_next(queue).await {
                return delivery;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing arrived on {queue} within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next message on `queue` if there is one, batch envelopes unpacked.
    async fn try_next(&self, queue: &str) -> Option<Delivery> {
        if let Some(delivery) = self.take_unread(queue, Vec::new()) {
            return Some(delivery);
        }
        let got = self
            .channel
            .basic_get(queue.to_owned().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")?;
        self.take_unread(queue, unpack(got.delivery))
    }

    /// Queues `arrived` behind what `queue` had unread and takes the first.
    fn take_unread(&self, queue: &str, arrived: Vec<Delivery>) -> Option<Delivery> {
        let mut unread = self.unread.lock().expect("unread");
        let unread = unread.entry(queue.to_owned()).or_default();
        unread.extend(arrived);
        unread.pop_front()
    }

    /// Asserts that nothing more arrives on `queue` for a while.
    async fn nothing_more(&self, queue: &str) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let got = self.try_next(queue).await;
        assert!(
            got.is_none(),
            "unexpected message on {queue}: {:?}",
            got.map(|delivery| delivery.routing_key)
        );
    }

    /// The next reply, checked to be a `CommandReply` caused by `cause`.
    async fn reply(&self, saga_id: Uuid, cause: Uuid) -> pb::CommandReply {
        let got = self.next(&self.replies).await;
        let properties = &got.properties;
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
        pb::CommandReply::decode(got.data.as_slice()).expect("reply decodes")
    }

    /// The next event, checked to have `routing_key` and type `M`.
    async fn event<M: Message + Name + Default>(&self, routing_key: &str) -> M {
        let got = self.next(&self.events).await;
        assert_eq!(got.routing_key.as_str(), routing_key);
        let kind = got
            .properties
            .kind()
            .as_ref()
            .map(|k| k.as_str().to_owned());
        assert_eq!(kind, Some(wire::message_type::<M>()));
        M::decode(got.data.as_slice()).expect("event decodes")
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

fn mark_review(saga_id: Uuid, transaction_id: &str) -> pb::MarkReviewCommand {
    let deadline = Utc::now() + chrono::Duration::minutes(10);
    pb::MarkReviewCommand {
        command_id: wire::command_id(saga_id, "mark_review", wire::Direction::Forward),
        saga_id: saga_id.to_string(),
        transaction_id: transaction_id.to_owned(),
        step: "screen".to_owned(),
        deadline: Some(corebank_platform::time::to_timestamp(deadline)),
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
