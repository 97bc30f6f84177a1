//! The test's side of the bus: one queue bound to every participant's
//! routing key, read in send order.

use corebank_platform::messaging::{Exchange, Namespace, unpack};
use corebank_proto::wire;
use futures::StreamExt;
use lapin::Connection;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use prost::Message;
use tokio::sync::mpsc;

/// The first fields of every command message: enough to route and answer it.
#[derive(Clone, PartialEq, prost::Message)]
struct CommandHead {
    #[prost(string, tag = "1")]
    pub(super) command_id: String,
    #[prost(string, tag = "2")]
    pub(super) saga_id: String,
}

/// A command the orchestrator sent to a participant.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) participant: String,
    pub(super) message_type: String,
    pub(super) message_id: String,
    pub(super) correlation_id: String,
    pub(super) command_id: String,
    pub(super) saga_id: String,
    pub(super) payload: Vec<u8>,
}

impl Received {
    pub(super) fn is<M: prost::Name>(&self) -> bool {
        self.message_type == wire::message_type::<M>()
    }

    pub(super) fn decode<M: prost::Message + prost::Name + Default>(&self) -> M {
        assert!(
            self.is::<M>(),
            "expected {}, got {}",
            wire::message_type::<M>(),
            self.message_type
        );
        M::decode(self.payload.as_slice()).expect("command decodes")
    }
}

/// A queue of every command to `account`, `fraud` and `transaction`, in send order.
pub(super) async fn participants(
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
    for participant in [
        wire::service::ACCOUNT,
        wire::service::FRAUD,
        wire::service::TRANSACTION,
    ] {
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
        while let Some(Ok(envelope)) = consumer.next().await {
            for delivery in unpack(envelope) {
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
                };
                if sender.send(received).is_err() {
                    return;
                }
            }
        }
    });
    receiver
}
