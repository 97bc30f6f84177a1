//! The envelope: what every message carries besides its protobuf payload, and
//! how it maps onto AMQP properties and headers.
//!
//! Standard AMQP properties carry what they were made for (message id, type,
//! correlation id, timestamp, content type, persistence); the rest travels in
//! headers whose names are in [`headers`].

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use corebank_proto::v1 as pb;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use uuid::Uuid;

use super::topology::Exchange;

/// The content type of every payload.
pub const CONTENT_TYPE: &str = "application/protobuf";

/// AMQP delivery mode 2: the broker writes the message to disk.
pub(crate) const PERSISTENT: u8 = 2;

/// Header names of the envelope and of the retry and parking machinery.
pub mod headers {
    /// The id of the message that caused this one.
    pub const CAUSATION_ID: &str = "causation-id";
    /// W3C trace context of the operation that produced the message.
    pub const TRACEPARENT: &str = "traceparent";
    /// When the fact happened, RFC 3339.
    pub const OCCURRED_AT: &str = "occurred-at";
    /// The payload's schema version.
    pub const SCHEMA_VERSION: &str = "schema-version";
    /// 1-based delivery attempt, set when the consumer schedules a retry.
    pub const ATTEMPT: &str = "x-attempt";
    /// Why a message was parked: `malformed`, `permanent` or `retries-exhausted`.
    pub const PARKED_REASON: &str = "x-parked-reason";
    /// The handler's error text when the message was parked.
    pub const PARKED_ERROR: &str = "x-parked-error";
    /// When the message was parked, RFC 3339.
    pub const PARKED_AT: &str = "x-parked-at";
    /// The exchange of the original publish, kept when a retry or parking
    /// republishes the message through the default exchange.
    pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
    /// The routing key of the original publish (see [`ORIGINAL_EXCHANGE`]).
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
}

/// A message a service wants to send; written to the outbox by
/// [`enqueue`](super::enqueue) and published by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Unique id; consumers deduplicate on it. A UUID v7 by default.
    pub message_id: Uuid,
    /// The protobuf message name, e.g. `corebank.account.v1.AccountOpened`.
    pub message_type: String,
    /// Which exchange it goes to.
    pub exchange: Exchange,
    /// Service name, orchestrator name or `<service>.<entity>.<event>`.
    pub routing_key: String,
    /// Encoded protobuf.
    pub payload: Vec<u8>,
    /// The saga this message belongs to.
    pub correlation_id: Option<Uuid>,
    /// The message that caused this one.
    pub causation_id: Option<Uuid>,
    /// W3C `traceparent` of the producing operation.
    pub traceparent: Option<String>,
    /// When the fact happened.
    pub occurred_at: DateTime<Utc>,
    /// Payload schema version.
    pub schema_version: i32,
}

impl OutgoingMessage {
    /// A message with a fresh id, occurring now, schema version 1.
    pub fn new(
        exchange: Exchange,
        routing_key: impl Into<String>,
        message_type: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            message_type: message_type.into(),
            exchange,
            routing_key: routing_key.into(),
            payload,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            // PostgreSQL keeps microseconds: truncate so the outbox round-trips exactly.
            occurred_at: Utc::now().trunc_subsecs(6),
            schema_version: 1,
        }
    }

    /// A command for `service`.
    pub fn command(service: &str, message_type: impl Into<String>, payload: Vec<u8>) -> Self {
        Self::new(Exchange::Commands, service, message_type, payload)
    }

    /// A reply to `orchestrator`.
    pub fn reply(orchestrator: &str, message_type: impl Into<String>, payload: Vec<u8>) -> Self {
        Self::new(Exchange::Replies, orchestrator, message_type, payload)
    }

    /// An event with routing key `<service>.<entity>.<event>`.
    pub fn event(routing_key: &str, message_type: impl Into<String>, payload: Vec<u8>) -> Self {
        Self::new(Exchange::Events, routing_key, message_type, payload)
    }

    /// An event carrying the protobuf `event`, typed by its full name.
    pub fn event_of<M: prost::Message + prost::Name>(routing_key: &str, event: &M) -> Self {
        Self::event(routing_key, M::full_name(), event.encode_to_vec())
    }

    /// Sets the message id (e.g. derived from a command id, for idempotent producers).
    pub fn with_message_id(mut self, message_id: Uuid) -> Self {
        self.message_id = message_id;
        self
    }

    /// Sets the saga id.
    pub fn with_correlation_id(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// Sets the causing message id.
    pub fn with_causation_id(mut self, causation_id: Uuid) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    /// Sets the trace context.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Sets when the fact happened (from the service's injected clock).
    pub fn with_occurred_at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.occurred_at = occurred_at.trunc_subsecs(6);
        self
    }

    /// Sets the payload schema version.
    pub fn with_schema_version(mut self, schema_version: i32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Continues the saga and trace of `cause`: same correlation id,
    /// causation id = the cause's message id, and the traceparent of the
    /// span handling the cause when traces are on (the cause's own otherwise).
    pub fn caused_by(mut self, cause: &IncomingMessage) -> Self {
        self.causation_id = Some(cause.message_id);
        if self.correlation_id.is_none() {
            self.correlation_id = cause.correlation_id;
        }
        if self.traceparent.is_none() {
            self.traceparent =
                crate::tracing_otel::current_traceparent().or_else(|| cause.traceparent.clone());
        }
        self
    }

    /// The AMQP properties carrying this envelope; `app_id` names the producer.
    pub fn properties(&self, app_id: &str) -> BasicProperties {
        properties_of(&self.envelope(Vec::new()), app_id)
    }

    /// The envelope as a batch carries it, with `payload`.
    pub(crate) fn envelope(&self, payload: Vec<u8>) -> pb::BatchedMessage {
        pb::BatchedMessage {
            message_id: self.message_id.to_string(),
            message_type: self.message_type.clone(),
            correlation_id: self
                .correlation_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            causation_id: self
                .causation_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            traceparent: self.traceparent.clone().unwrap_or_default(),
            occurred_at: self
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            schema_version: self.schema_version,
            payload,
        }
    }
}

/// The AMQP properties of one envelope (its payload aside).
pub(crate) fn properties_of(envelope: &pb::BatchedMessage, app_id: &str) -> BasicProperties {
    let mut table = FieldTable::default();
    if !envelope.causation_id.is_empty() {
        table.insert(headers::CAUSATION_ID.into(), text(&envelope.causation_id));
    }
    if !envelope.traceparent.is_empty() {
        table.insert(headers::TRACEPARENT.into(), text(&envelope.traceparent));
    }
    table.insert(headers::OCCURRED_AT.into(), text(&envelope.occurred_at));
    table.insert(
        headers::SCHEMA_VERSION.into(),
        AMQPValue::LongInt(envelope.schema_version),
    );
    let timestamp = DateTime::parse_from_rfc3339(&envelope.occurred_at)
        .ok()
        .and_then(|at| u64::try_from(at.timestamp()).ok())
        .unwrap_or(0);

    let mut properties = BasicProperties::default()
        .with_message_id(envelope.message_id.clone().into())
        .with_type(envelope.message_type.clone().into())
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(timestamp)
        .with_app_id(app_id.to_owned().into())
        .with_headers(table);
    if !envelope.correlation_id.is_empty() {
        properties = properties.with_correlation_id(envelope.correlation_id.clone().into());
    }
    properties
}

/// A delivered message whose envelope parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Unique id, the inbox key.
    pub message_id: Uuid,
    /// The protobuf message name.
    pub message_type: String,
    /// The saga id, if any.
    pub correlation_id: Option<Uuid>,
    /// The causing message id, if any.
    pub causation_id: Option<Uuid>,
    /// W3C trace context, if any.
    pub traceparent: Option<String>,
    /// When the fact happened, if the producer said.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Payload schema version (1 when absent).
    pub schema_version: i32,
    /// 1-based attempt: 2 and up are retries scheduled after transient failures.
    pub attempt: u32,
    /// The exchange it was first published to, retries and replays included.
    pub exchange: String,
    /// The routing key it was first published with, retries and replays included.
    pub routing_key: String,
    /// Whether the broker delivered it before (e.g. after a lost connection).
    pub redelivered: bool,
    /// Encoded protobuf.
    pub payload: Vec<u8>,
}

/// Why a delivery is not a valid envelope; such a message is parked at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct MalformedMessage(pub String);

impl IncomingMessage {
    /// Parses the envelope of a delivery.
    pub fn parse(delivery: &lapin::message::Delivery) -> Result<Self, MalformedMessage> {
        let properties = &delivery.properties;
        let message_id = properties
            .message_id()
            .as_ref()
            .ok_or_else(|| MalformedMessage("missing message id".into()))?;
        let message_id = Uuid::parse_str(message_id.as_str())
            .map_err(|_| MalformedMessage(format!("message id {message_id} is not a uuid")))?;
        let message_type = properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str().to_owned())
            .filter(|kind| !kind.is_empty())
            .ok_or_else(|| MalformedMessage("missing message type".into()))?;
        if message_type == super::batch::BATCH_MESSAGE_TYPE {
            return Err(MalformedMessage(
                "a message batch that does not decode".into(),
            ));
        }
        let correlation_id = properties
            .correlation_id()
            .as_ref()
            .map(|id| parse_uuid("correlation id", id.as_str()))
            .transpose()?;

        let table = properties.headers().clone().unwrap_or_default();
        let causation_id = header_text(&table, headers::CAUSATION_ID)
            .map(|id| parse_uuid("causation id", &id))
            .transpose()?;
        let occurred_at = header_text(&table, headers::OCCURRED_AT)
            .map(|at| {
                DateTime::parse_from_rfc3339(&at)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| MalformedMessage(format!("occurred-at {at} is not rfc 3339")))
            })
            .transpose()?;
        let schema_version = header_int(&table, headers::SCHEMA_VERSION)
            .map(|version| i32::try_from(version).unwrap_or(i32::MAX))
            .unwrap_or(1);

        Ok(Self {
            message_id,
            message_type,
            correlation_id,
            causation_id,
            traceparent: header_text(&table, headers::TRACEPARENT),
            occurred_at,
            schema_version,
            attempt: attempt(properties),
            exchange: header_text(&table, headers::ORIGINAL_EXCHANGE)
                .unwrap_or_else(|| delivery.exchange.as_str().to_owned()),
            routing_key: header_text(&table, headers::ORIGINAL_ROUTING_KEY)
                .unwrap_or_else(|| delivery.routing_key.as_str().to_owned()),
            redelivered: delivery.redelivered,
            payload: delivery.data.clone(),
        })
    }
}

/// The 1-based attempt recorded in a message's headers.
pub(crate) fn attempt(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|table| header_int(table, headers::ATTEMPT))
        .and_then(|attempt| u32::try_from(attempt).ok())
        .unwrap_or(1)
        .max(1)
}

/// The properties of `delivery` for a republish through the default exchange:
/// the original exchange and routing key are remembered once, then `edit` runs.
pub(crate) fn republished(
    delivery: &lapin::message::Delivery,
    edit: impl FnOnce(&mut std::collections::BTreeMap<lapin::types::ShortString, AMQPValue>),
) -> BasicProperties {
    with_headers(&delivery.properties, |map| {
        map.entry(headers::ORIGINAL_EXCHANGE.into())
            .or_insert_with(|| text(delivery.exchange.as_str()));
        map.entry(headers::ORIGINAL_ROUTING_KEY.into())
            .or_insert_with(|| text(delivery.routing_key.as_str()));
        edit(map);
    })
}

/// A copy of `properties` whose headers were changed by `edit`.
pub(crate) fn with_headers(
    properties: &BasicProperties,
    edit: impl FnOnce(&mut std::collections::BTreeMap<lapin::types::ShortString, AMQPValue>),
) -> BasicProperties {
    let mut map = properties
        .headers()
        .as_ref()
        .map(|table| table.inner().clone())
        .unwrap_or_default();
    edit(&mut map);
    properties.clone().with_headers(FieldTable::from(map))
}

/// A header value as text, whatever string type the producer used.
pub(crate) fn header_text(table: &FieldTable, name: &str) -> Option<String> {
    match table.inner().get(name)? {
        AMQPValue::LongString(value) => {
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

/// A header value as an integer, whatever integer type the producer used.
pub(crate) fn header_int(table: &FieldTable, name: &str) -> Option<i64> {
    match table.inner().get(name)? {
        AMQPValue::ShortShortInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortShortUInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortUInt(value) => Some(i64::from(*value)),
        AMQPValue::LongInt(value) => Some(i64::from(*value)),
        AMQPValue::LongUInt(value) => Some(i64::from(*value)),
        AMQPValue::LongLongInt(value) => Some(*value),
        _ => None,
    }
}

pub(crate) fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn parse_uuid(what: &str, value: &str) -> Result<Uuid, MalformedMessage> {
    Uuid::parse_str(value).map_err(|_| MalformedMessage(format!("{what} {value} is not a uuid")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outgoing_envelope_parses_back_into_the_same_fields() {
        let saga = Uuid::now_v7();
        let cause = Uuid::now_v7();
        let message =
            OutgoingMessage::event("account.account.opened", "test.Opened", vec![1, 2, 3])
                .with_correlation_id(saga)
                .with_causation_id(cause)
                .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .with_schema_version(3);
        let mut delivery = lapin::message::Delivery::mock(
            1,
            "ns.events".into(),
            "account.account.opened".into(),
            false,
            message.payload.clone(),
        );
        delivery.properties = message.properties("account");

        let incoming = IncomingMessage::parse(&delivery).expect("parses");

        assert_eq!(incoming.message_id, message.message_id);
        assert_eq!(incoming.message_type, "test.Opened");
        assert_eq!(incoming.correlation_id, Some(saga));
        assert_eq!(incoming.causation_id, Some(cause));
        assert_eq!(incoming.traceparent, message.traceparent);
        assert_eq!(incoming.occurred_at, Some(message.occurred_at));
        assert_eq!(incoming.schema_version, 3);
        assert_eq!(incoming.attempt, 1);
        assert_eq!(delivery.properties.delivery_mode(), &Some(PERSISTENT));
    }

    #[test]
    fn a_delivery_without_message_id_is_malformed() {
        let delivery = lapin::message::Delivery::mock(1, "".into(), "q".into(), false, vec![]);
        assert!(IncomingMessage::parse(&delivery).is_err());
    }
}

/// A W3C `traceparent` whose trace id is `trace` (e.g. the transaction id),
/// so every message of one money movement, across every hop and re-send,
/// shares one trace; the parent id is fresh per message.
pub fn traceparent_for(trace: Uuid) -> String {
    let parent = rand::random::<u64>().max(1);
    format!("00-{}-{parent:016x}-01", trace.simple())
}

/// The `traceparent` of the current span when traces are on (so the span
/// that produces a message is its consumer's parent), otherwise
/// [`traceparent_for`]`(trace)`.
pub fn current_traceparent_or(trace: Uuid) -> String {
    crate::tracing_otel::current_traceparent().unwrap_or_else(|| traceparent_for(trace))
}

#[cfg(test)]
mod traceparent_tests {
    use super::*;

    #[test]
    fn a_traceparent_follows_the_w3c_format_and_keeps_the_trace_id() {
        let trace = Uuid::now_v7();
        let header = traceparent_for(trace);
        let parts: Vec<_> = header.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], trace.simple().to_string());
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "0000000000000000");
        assert_eq!(parts[3], "01");
    }
}
