//! A queue of the test's own on a namespace's events exchange, to read
//! what the services publish.

use super::*;
use corebank_platform::messaging::{Exchange, headers, unpack};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use prost::{Message, Name};

/// How long a test waits for an event.
const PATIENCE: Duration = Duration::from_secs(20);

/// A queue of the test's own on the events exchange: what the services
/// publish under the bound routing keys from now on.
pub struct EventTap {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
    /// Messages of a batch envelope not read yet.
    unread: std::sync::Mutex<std::collections::VecDeque<lapin::message::Delivery>>,
}

/// One event as delivered.
pub struct Delivered {
    pub routing_key: String,
    pub message_type: String,
    pub schema_version: Option<i32>,
    pub payload: Vec<u8>,
}

impl Delivered {
    pub fn decode<M: Message + Name + Default>(&self) -> M {
        assert_eq!(self.message_type, M::full_name());
        M::decode(self.payload.as_slice()).expect("event decodes")
    }
}

impl EventTap {
    pub async fn bind(namespace: &Namespace, routing_keys: &[&str]) -> Self {
        let connection =
            lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                .await
                .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("amqp channel");
        let queue = namespace.queue(&format!("test.feed.{}", Uuid::new_v4().simple()));
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.clone().into(), options, FieldTable::default())
            .await
            .expect("declare test queue");
        for routing_key in routing_keys {
            channel
                .queue_bind(
                    queue.clone().into(),
                    namespace.exchange(Exchange::Events).into(),
                    (*routing_key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind test queue");
        }
        Self {
            connection,
            channel,
            queue,
            unread: Default::default(),
        }
    }

    pub async fn try_next(&self) -> Option<Delivered> {
        let buffered = self.unread.lock().expect("unread").pop_front();
        let delivery = match buffered {
            Some(delivery) => delivery,
            None => {
                let got = self
                    .channel
                    .basic_get(self.queue.clone().into(), BasicGetOptions { no_ack: true })
                    .await
                    .expect("basic.get")?;
                let mut unread = self.unread.lock().expect("unread");
                unread.extend(unpack(got.delivery));
                unread.pop_front()?
            }
        };
        let properties = &delivery.properties;
        let schema_version = properties
            .headers()
            .as_ref()
            .and_then(|table| table.inner().get(headers::SCHEMA_VERSION))
            .and_then(|value| match value {
                AMQPValue::LongInt(version) => Some(*version),
                _ => None,
            });
        Some(Delivered {
            routing_key: delivery.routing_key.to_string(),
            message_type: properties
                .kind()
                .as_ref()
                .map(|kind| kind.to_string())
                .unwrap_or_default(),
            schema_version,
            payload: delivery.data.clone(),
        })
    }

    /// The next event, waited for.
    pub async fn next(&self) -> Delivered {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(delivered) = self.try_next().await {
                return delivered;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no event within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that nothing more arrives for a while (the relay polls and
    /// is woken by NOTIFY, so a stray event would be here well within it).
    pub async fn nothing_more(&self) {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        if let Some(stray) = self.try_next().await {
            panic!("unexpected event {}", stray.routing_key);
        }
    }

    pub async fn close(self) {
        let _ = self.connection.close(200, "test done".into()).await;
    }
}
