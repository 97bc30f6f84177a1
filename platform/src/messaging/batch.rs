//! The batch envelope: what one relay round has for one destination travels
//! as one AMQP message, `corebank.v1.MessageBatch`, whose inner messages keep
//! their own envelopes. A consumer [`unpack`]s it into one delivery per inner
//! message, so the inbox, retries and parking work per inner message.

use chrono::Utc;
use corebank_proto::v1 as pb;
use lapin::BasicProperties;
use lapin::message::Delivery;
use prost::Message as _;
use uuid::Uuid;

use super::envelope::{CONTENT_TYPE, PERSISTENT, properties_of};

/// The message type of a batch envelope: `corebank.v1.MessageBatch`, a
/// constant so that telling a batch from a single message allocates nothing.
pub const BATCH_MESSAGE_TYPE: &str = "corebank.v1.MessageBatch";

/// One AMQP message carrying `envelopes` (all for one exchange and routing
/// key): its payload and properties. The batch has an id of its own; each
/// inner message keeps its own for the inbox.
pub(crate) fn batch(
    envelopes: Vec<pb::BatchedMessage>,
    app_id: &str,
) -> (Vec<u8>, BasicProperties) {
    let payload = pb::MessageBatch {
        messages: envelopes,
    }
    .encode_to_vec();
    let properties = BasicProperties::default()
        .with_message_id(Uuid::now_v7().to_string().into())
        .with_type(BATCH_MESSAGE_TYPE.into())
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0))
        .with_app_id(app_id.to_owned().into());
    (payload, properties)
}

/// The messages a delivery carries: itself, or each message of a batch as a
/// delivery of its own (same tag, exchange, routing key and redelivered flag;
/// the inner envelope as its properties). A batch that does not decode is
/// returned as it is, and [`IncomingMessage::parse`] calls it malformed.
pub fn unpack(delivery: Delivery) -> Vec<Delivery> {
    let is_batch = delivery
        .properties
        .kind()
        .as_ref()
        .is_some_and(|kind| kind.as_str() == BATCH_MESSAGE_TYPE);
    if !is_batch {
        return vec![delivery];
    }
    let Ok(batch) = pb::MessageBatch::decode(delivery.data.as_slice()) else {
        return vec![delivery];
    };
    let app_id = delivery
        .properties
        .app_id()
        .as_ref()
        .map(|app| app.as_str().to_owned())
        .unwrap_or_default();
    batch
        .messages
        .into_iter()
        .map(|mut envelope| {
            let payload = std::mem::take(&mut envelope.payload);
            let mut inner = Delivery::mock(
                delivery.delivery_tag,
                delivery.exchange.clone(),
                delivery.routing_key.clone(),
                delivery.redelivered,
                payload,
            );
            inner.properties = properties_of(&envelope, &app_id);
            inner
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::envelope::{IncomingMessage, OutgoingMessage};
    use super::*;

    #[test]
    fn the_batch_type_is_the_batch_message_full_name() {
        assert_eq!(
            BATCH_MESSAGE_TYPE,
            corebank_proto::wire::message_type::<pb::MessageBatch>()
        );
    }

    #[test]
    fn a_batch_unpacks_into_deliveries_that_parse_like_single_messages() {
        let saga = Uuid::now_v7();
        let messages = [
            OutgoingMessage::command("account", "test.Reserve", vec![1])
                .with_correlation_id(saga)
                .with_causation_id(Uuid::now_v7())
                .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .with_schema_version(2),
            OutgoingMessage::command("account", "test.Post", vec![2, 3]),
        ];
        let envelopes = messages
            .iter()
            .map(|message| message.envelope(message.payload.clone()))
            .collect();
        let (payload, properties) = batch(envelopes, "orchestrator");
        let mut delivery = Delivery::mock(7, "ns.commands".into(), "account".into(), true, payload);
        delivery.properties = properties;

        let inner = unpack(delivery);

        assert_eq!(inner.len(), 2);
        for (delivery, message) in inner.iter().zip(&messages) {
            assert_eq!(delivery.delivery_tag, 7);
            assert_eq!(delivery.data, message.payload);
            let single = IncomingMessage::parse(&{
                let mut single = Delivery::mock(
                    7,
                    "ns.commands".into(),
                    "account".into(),
                    true,
                    message.payload.clone(),
                );
                single.properties = message.properties("orchestrator");
                single
            })
            .expect("single parses");
            assert_eq!(
                IncomingMessage::parse(delivery).expect("inner parses"),
                single
            );
        }
    }
}
