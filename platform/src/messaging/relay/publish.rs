//! Publishing outbox rows: one AMQP message per destination, every publish
//! confirmed by the broker before its rows count as sent.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation};
use uuid::Uuid;

use crate::failpoint::{self, Point};
use crate::messaging::MessagingError;
use crate::messaging::batch::batch;
use crate::messaging::envelope::OutgoingMessage;
use crate::messaging::topology::Exchange;

use super::OutboxRelay;

#[derive(sqlx::FromRow)]
pub(super) struct OutboxRow {
    pub(super) outbox_id: i64,
    message_id: Uuid,
    exchange: String,
    routing_key: String,
    message_type: String,
    payload: Vec<u8>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    traceparent: Option<String>,
    schema_version: i32,
    occurred_at: DateTime<Utc>,
}

impl OutboxRow {
    /// The row's envelope (its payload aside).
    fn message(&self, exchange: Exchange) -> OutgoingMessage {
        OutgoingMessage {
            message_id: self.message_id,
            message_type: self.message_type.clone(),
            exchange,
            routing_key: self.routing_key.clone(),
            payload: Vec::new(),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            traceparent: self.traceparent.clone(),
            occurred_at: self.occurred_at,
            schema_version: self.schema_version,
        }
    }
}

/// The rows' indexes grouped by destination (exchange and routing key), in
/// the order each destination first appears; each group keeps outbox order.
fn destinations(rows: &[OutboxRow]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_destination: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, row) in rows.iter().enumerate() {
        let key = (row.exchange.as_str(), row.routing_key.as_str());
        match by_destination.get(&key) {
            Some(group) => groups[*group].push(index),
            None => {
                by_destination.insert(key, groups.len());
                groups.push(vec![index]);
            }
        }
    }
    groups
}

impl OutboxRelay {
    /// Publishes `rows` on `channel` (a confirming channel of the relay's
    /// broker) and waits up to `confirm_timeout` for the broker's confirms;
    /// returns the outbox ids of the rows that are done. A nacked publish,
    /// and a command or reply no queue took, leave their rows out: they
    /// stay pending and go out again later.
    pub(super) async fn publish(
        &self,
        channel: &Channel,
        schema: &str,
        rows: &[OutboxRow],
    ) -> Result<Vec<i64>, MessagingError> {
        failpoint::hit(Point::RelayBeforePublish, schema);
        let namespace = self.broker.namespace();
        let groups = destinations(rows);
        let mut pending = Vec::with_capacity(groups.len());
        for group in &groups {
            let first = &rows[group[0]];
            let exchange = Exchange::parse(&first.exchange).unwrap_or(Exchange::Events);
            // One row goes out as it is; several for one destination go out
            // as one batch, each keeping its own envelope.
            let (payload, properties) = if let [only] = group.as_slice() {
                let row = &rows[*only];
                (
                    Cow::Borrowed(row.payload.as_slice()),
                    row.message(exchange).properties(schema),
                )
            } else {
                let envelopes = group
                    .iter()
                    .map(|index| {
                        let row = &rows[*index];
                        row.message(exchange).envelope(row.payload.clone())
                    })
                    .collect();
                let (payload, properties) = batch(envelopes, schema);
                (Cow::Owned(payload), properties)
            };
            // Mandatory, so an unroutable message is at least reported.
            let confirm = channel
                .basic_publish(
                    namespace.exchange(exchange).into(),
                    first.routing_key.clone().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &payload,
                    properties,
                )
                .await?;
            pending.push(confirm);
        }

        let confirmations = tokio::time::timeout(self.config.confirm_timeout, join_all(pending))
            .await
            .map_err(|_| MessagingError::ConfirmTimeout)?;
        metrics::counter!("corebank_messaging_publishes_total", "schema" => schema.to_owned())
            .increment(groups.len() as u64);
        let mut confirmed_ids = Vec::with_capacity(rows.len());
        for (group, confirmation) in groups.iter().zip(confirmations) {
            let first = &rows[group[0]];
            match confirmation? {
                Confirmation::Ack(returned) => {
                    if returned.is_some() {
                        metrics::counter!("corebank_messaging_unroutable_total", "exchange" => first.exchange.clone())
                            .increment(1);
                        // A command or reply always has a consumer queue: if
                        // none is bound yet (a consumer not started on a fresh
                        // broker), the rows stay pending and are sent again later
                        // instead of being lost. An event may have no
                        // subscriber at all, so an unroutable event is done.
                        if Exchange::parse(&first.exchange) != Some(Exchange::Events) {
                            tracing::warn!(message_id = %first.message_id, messages = group.len(), exchange = %first.exchange, routing_key = %first.routing_key, "command or reply unroutable, kept pending");
                            continue;
                        }
                        tracing::debug!(message_id = %first.message_id, routing_key = %first.routing_key, "event had no subscriber");
                    }
                    confirmed_ids.extend(group.iter().map(|index| rows[*index].outbox_id));
                }
                Confirmation::Nack(_) => {
                    metrics::counter!("corebank_messaging_publish_nacked_total").increment(1);
                    tracing::warn!(message_id = %first.message_id, messages = group.len(), "broker nacked outbox messages, will retry");
                }
                Confirmation::NotRequested => {
                    return Err(MessagingError::NotConfirmed(
                        "channel is not in confirm mode".into(),
                    ));
                }
            }
        }
        Ok(confirmed_ids)
    }
}
