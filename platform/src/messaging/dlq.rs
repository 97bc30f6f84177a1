//! Retry scheduling, parking, and the operator's view of parking queues
//! (`corebank dlq list / replay`).
//!
//! Retries and parked copies are republished with publisher confirms through
//! the default exchange (routing key = queue name) before the original is
//! acknowledged, so a crash in between duplicates a message but never loses one.
//! Listing peeks: it holds the messages it read unacknowledged and returns them
//! all to the queue at the end, so nothing is lost or reordered for good.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use uuid::Uuid;

use super::MessagingError;
use super::envelope::{header_int, header_text, headers, republished, text, with_headers};
use super::topology::Namespace;

/// Parked error texts are cut to this many characters: headers are not logs.
const MAX_ERROR_CHARS: usize = 1000;

/// Why a message was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// The envelope or the payload could not be decoded.
    Malformed,
    /// The handler said it can never succeed.
    Permanent,
    /// Transient failures outlasted the retry policy.
    RetriesExhausted,
}

impl ParkReason {
    /// The value of the `x-parked-reason` header.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::Malformed => "malformed",
            ParkReason::Permanent => "permanent",
            ParkReason::RetriesExhausted => "retries-exhausted",
        }
    }
}

/// A parked message as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedMessage {
    /// The message id, if the envelope had one.
    pub message_id: Option<String>,
    /// The message type, if the envelope had one.
    pub message_type: Option<String>,
    /// The saga id, if any.
    pub correlation_id: Option<String>,
    /// `malformed`, `permanent`, `retries-exhausted`, or the broker's x-death
    /// reason (e.g. `delivery_limit`) when the broker parked it.
    pub reason: Option<String>,
    /// The handler's error text.
    pub error: Option<String>,
    /// When it was parked, RFC 3339.
    pub parked_at: Option<String>,
    /// The attempt that failed last.
    pub attempt: u32,
    /// The exchange it was originally published to.
    pub exchange: String,
    /// The routing key it was originally published with.
    pub routing_key: String,
    /// The raw payload.
    pub payload: Vec<u8>,
}

/// Which parked messages to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelection {
    /// Every parked message, up to the limit.
    All,
    /// Only these message ids.
    MessageIds(Vec<Uuid>),
}

/// Reads up to `limit` parked messages of consumer `queue` without removing them.
pub async fn list_parked(
    connection: &Connection,
    ns: &Namespace,
    queue: &str,
    limit: usize,
) -> Result<Vec<ParkedMessage>, MessagingError> {
    let channel = connection.create_channel().await?;
    let dlq = ns.dlq(queue);
    let mut held = Vec::new();
    let mut listed = Vec::new();
    while listed.len() < limit {
        let Some(got) = channel
            .basic_get(dlq.clone().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        listed.push(describe(&got.delivery));
        held.push(got.delivery.delivery_tag);
    }
    release(&channel, &held).await?;
    let _ = channel.close(200, "listed".into()).await;
    Ok(listed)
}

/// Moves parked messages of consumer `queue` back to its work queue, with a
/// fresh attempt count; returns how many moved. Looks at `limit` messages at most.
pub async fn replay_parked(
    connection: &Connection,
    ns: &Namespace,
    queue: &str,
    selection: &ReplaySelection,
    limit: usize,
) -> Result<usize, MessagingError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let dlq = ns.dlq(queue);
    let work = ns.queue(queue);
    let mut held = Vec::new();
    let mut replayed = 0;
    for _ in 0..limit {
        let Some(got) = channel
            .basic_get(dlq.clone().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let delivery = got.delivery;
        if !selected(selection, &delivery) {
            held.push(delivery.delivery_tag);
            continue;
        }
        let properties = with_headers(&delivery.properties, |map| {
            for name in [
                headers::ATTEMPT,
                headers::PARKED_REASON,
                headers::PARKED_ERROR,
                headers::PARKED_AT,
            ] {
                map.remove(name);
            }
            map.remove("x-death");
            map.remove("x-first-death-exchange");
            map.remove("x-first-death-queue");
            map.remove("x-first-death-reason");
        });
        publish_confirmed(&channel, &work, &delivery.data, properties).await?;
        channel
            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
            .await?;
        replayed += 1;
        tracing::info!(%queue, message_id = ?delivery.properties.message_id(), "parked message replayed");
    }
    release(&channel, &held).await?;
    let _ = channel.close(200, "replayed".into()).await;
    metrics::counter!("corebank_messaging_replayed_total", "queue" => queue.to_owned())
        .increment(replayed as u64);
    Ok(replayed)
}

/// Sends a copy of `delivery` to the delay queue for `delay`, to come back as
/// attempt `attempt`. The caller acks the original afterwards.
pub(crate) async fn schedule_retry(
    channel: &Channel,
    ns: &Namespace,
    queue: &str,
    delivery: &Delivery,
    attempt: u32,
    delay: Duration,
) -> Result<(), MessagingError> {
    let properties = republished(delivery, |map| {
        map.insert(
            headers::ATTEMPT.into(),
            AMQPValue::LongInt(i32::try_from(attempt).unwrap_or(i32::MAX)),
        );
    });
    publish_confirmed(
        channel,
        &ns.delay_queue(queue, delay),
        &delivery.data,
        properties,
    )
    .await?;
    metrics::counter!("corebank_messaging_retried_total", "queue" => queue.to_owned()).increment(1);
    Ok(())
}

/// Sends a copy of `delivery` to the parking queue with why it failed. The
/// caller acks the original afterwards.
pub(crate) async fn park(
    channel: &Channel,
    ns: &Namespace,
    queue: &str,
    delivery: &Delivery,
    reason: ParkReason,
    error: &str,
) -> Result<(), MessagingError> {
    let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
    let parked_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let properties = republished(delivery, |map| {
        map.insert(headers::PARKED_REASON.into(), text(reason.as_str()));
        map.insert(headers::PARKED_ERROR.into(), text(&error));
        map.insert(headers::PARKED_AT.into(), text(&parked_at));
    });
    publish_confirmed(channel, &ns.dlq(queue), &delivery.data, properties).await?;
    metrics::counter!("corebank_messaging_dead_lettered_total", "queue" => queue.to_owned(), "reason" => reason.as_str())
        .increment(1);
    Ok(())
}

/// Publishes to `queue` through the default exchange and waits for the broker
/// to take responsibility for the message.
async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), MessagingError> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.to_owned().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            properties,
        )
        .await?;
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(MessagingError::NotConfirmed(format!(
            "queue {queue} does not exist"
        ))),
        Confirmation::Nack(_) => Err(MessagingError::NotConfirmed(format!(
            "queue {queue} refused the message"
        ))),
        Confirmation::NotRequested => Err(MessagingError::NotConfirmed(
            "channel is not in confirm mode".into(),
        )),
    }
}

/// Returns held messages to the queue.
async fn release(channel: &Channel, held: &[u64]) -> Result<(), MessagingError> {
    for tag in held {
        channel
            .basic_nack(
                *tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await?;
    }
    Ok(())
}

fn selected(selection: &ReplaySelection, delivery: &Delivery) -> bool {
    match selection {
        ReplaySelection::All => true,
        ReplaySelection::MessageIds(ids) => delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .is_some_and(|id| ids.contains(&id)),
    }
}

fn describe(delivery: &Delivery) -> ParkedMessage {
    let properties = &delivery.properties;
    let table = properties.headers().clone().unwrap_or_default();
    let reason = header_text(&table, headers::PARKED_REASON).or_else(|| death_reason(&table));
    ParkedMessage {
        message_id: properties.message_id().as_ref().map(|id| id.to_string()),
        message_type: properties.kind().as_ref().map(|kind| kind.to_string()),
        correlation_id: properties
            .correlation_id()
            .as_ref()
            .map(|id| id.to_string()),
        reason,
        error: header_text(&table, headers::PARKED_ERROR),
        parked_at: header_text(&table, headers::PARKED_AT),
        attempt: header_int(&table, headers::ATTEMPT)
            .and_then(|attempt| u32::try_from(attempt).ok())
            .unwrap_or(1),
        exchange: header_text(&table, headers::ORIGINAL_EXCHANGE)
            .unwrap_or_else(|| delivery.exchange.to_string()),
        routing_key: header_text(&table, headers::ORIGINAL_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.to_string()),
        payload: delivery.data.clone(),
    }
}

/// The reason of the latest broker-side dead-lettering (`x-death[0].reason`).
fn death_reason(table: &FieldTable) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = table.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(latest) = deaths.as_slice().first()? else {
        return None;
    };
    header_text(latest, "reason")
}
