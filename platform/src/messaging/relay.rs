//! The outbox relay: publishes committed outbox rows and marks them sent once
//! the broker confirmed them.
//!
//! One round locks a batch of pending rows with `for update skip locked` (so
//! several replicas share the table without publishing a row twice), publishes
//! them all, awaits every publisher confirm, and marks the confirmed ones sent in
//! the transaction that locked them. The rows of one round for one destination
//! (exchange and routing key) go out as one AMQP message, a batch envelope
//! whose inner messages keep their own ids ([`unpack`](super::unpack)). A
//! nack, a timeout or a lost connection leaves rows pending for the next
//! round: delivery is at-least-once and the consumers' inbox absorbs the
//! duplicates. Rounds are triggered by the NOTIFY
//! that [`enqueue`](super::enqueue) issues, with a polling fallback for lost
//! notifications and listener outages.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::PlannedPerCall;
use crate::failpoint::{self, Point};

use super::MessagingError;
use super::batch::batch;
use super::broker::{BROKER_CALL_TIMEOUT, Broker};
use super::envelope::OutgoingMessage;
use super::outbox::notify_channel;
use super::topology::Exchange;

/// How often the pending-rows gauges are refreshed.
const PENDING_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per round.
    pub batch_size: i64,
    /// How often to look for pending rows when no notification arrives.
    pub poll_interval: Duration,
    /// How long to wait for the broker's confirms of one batch.
    pub confirm_timeout: Duration,
    /// How long a whole round may take (its statements included). Past it
    /// the round's connection is dropped and its rows stay pending: a
    /// database link that lost a request would otherwise stall the relay
    /// forever.
    pub round_timeout: Duration,
    /// How long shutdown may spend flushing pending rows.
    pub flush_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_millis(500),
            confirm_timeout: Duration::from_secs(30),
            round_timeout: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// Publishes the outbox of the schema its pool's `search_path` points at.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    broker: Broker,
    config: RelayConfig,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    outbox_id: i64,
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

/// What one round did.
struct Round {
    claimed: usize,
    confirmed: usize,
}

/// A relay running in the background (see [`OutboxRelay::spawn`]).
pub struct RunningRelay {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), MessagingError>>,
}

impl RunningRelay {
    /// Flushes what is pending and stops. Call it once every writer of the
    /// outbox has stopped.
    pub async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "outbox relay stopped with an error"),
            Err(error) => tracing::error!(%error, "outbox relay task failed"),
        }
    }
}

impl OutboxRelay {
    /// A relay with the default configuration.
    pub fn new(pool: PgPool, broker: Broker) -> Self {
        Self {
            pool,
            broker,
            config: RelayConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs in the background until [`RunningRelay::stop`]. Not on the
    /// service's shutdown token: what the service's other writers (gRPC
    /// handlers, consumers, timers) commit while they drain must still go
    /// out, so the relay stops last, once they all have, and flushes what
    /// they wrote.
    pub fn spawn(self) -> RunningRelay {
        let stop = CancellationToken::new();
        let task = tokio::spawn(self.run(stop.clone()));
        RunningRelay { stop, task }
    }

    /// Runs until `shutdown` is cancelled, then flushes pending rows (bounded by
    /// `flush_timeout`) and returns. Fails only if the schema cannot be read at start.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), MessagingError> {
        let (schema, key) = super::wake::outbox_of(&self.pool).await?;
        // Writers of this process wake it in memory (see `wake`).
        let local = super::wake::register(key);
        tracing::info!(%schema, "outbox relay started");
        let mut listener: Option<PgListener> = None;
        let mut channel: Option<Channel> = None;
        let mut report = crate::telemetry::Every::new(PENDING_REPORT_INTERVAL);

        while !shutdown.is_cancelled() {
            if listener.is_none() {
                listener = self.listen(&schema).await;
            }
            if channel.is_none() {
                channel = self.publishing_channel(&shutdown).await;
                if channel.is_none() {
                    break;
                }
            }
            // The round sees every row committed before it starts, so the
            // notifications that have already arrived are answered by it:
            // dropping them spares a round that would find nothing. They
            // wait in the connection's socket, not in the listener's buffer,
            // so each is read with one poll of `recv`, which is cancel-safe.
            if let Some(listener) = listener.as_mut() {
                while let Some(Ok(_)) = listener.recv().now_or_never() {}
            }
            let round = super::within(
                "an outbox relay round",
                self.config.round_timeout,
                self.round(channel.as_ref(), &schema),
            )
            .await;
            let more = match round {
                Ok(round) if round.confirmed < round.claimed => {
                    // A publish was nacked or returned. After a cluster node
                    // died, a channel that published to a queue whose leader
                    // it was keeps nacking while a fresh one is accepted:
                    // the rows stay pending and the next round opens anew.
                    channel = None;
                    false
                }
                Ok(round) => round.claimed as i64 == self.config.batch_size,
                Err(error) => {
                    tracing::warn!(%error, %schema, "outbox relay round failed, will retry");
                    // The channel may be dead or hold unknown confirms: start afresh.
                    channel = None;
                    false
                }
            };
            // The gauges need no fresher than a second: counting the
            // pending rows after every round would be one statement a round.
            if report.due() {
                self.report_pending(&schema).await;
            }
            if !more {
                self.wait_for_work(listener.as_mut(), &local, &shutdown)
                    .await;
            }
        }

        self.flush(channel, &schema).await;
        tracing::info!(%schema, "outbox relay stopped");
        Ok(())
    }

    /// Publishes whatever is pending before stopping, so a clean shutdown leaves
    /// nothing for the next process to send late.
    async fn flush(&self, channel: Option<Channel>, schema: &str) {
        let flush = async {
            let channel = match channel {
                Some(channel) => channel,
                None => match self.publishing_channel(&CancellationToken::new()).await {
                    Some(channel) => channel,
                    None => return,
                },
            };
            loop {
                match self.round(Some(&channel), schema).await {
                    Ok(round) if round.claimed > 0 && round.confirmed == round.claimed => continue,
                    Ok(_) => return,
                    Err(error) => {
                        tracing::warn!(%error, %schema, "outbox flush failed");
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout(self.config.flush_timeout, flush)
            .await
            .is_err()
        {
            tracing::warn!(%schema, "outbox flush timed out; rows stay pending");
        }
    }

    async fn publishing_channel(&self, shutdown: &CancellationToken) -> Option<Channel> {
        loop {
            let channel = self.broker.channel(shutdown).await?;
            let confirming =
                super::within("enabling publisher confirms", BROKER_CALL_TIMEOUT, async {
                    Ok(channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await?)
                })
                .await;
            match confirming {
                Ok(()) => return Some(channel),
                Err(error) => tracing::warn!(%error, "enabling publisher confirms failed"),
            }
        }
    }

    async fn listen(&self, schema: &str) -> Option<PgListener> {
        let attempt = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&notify_channel(schema)).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, %schema, "outbox listener unavailable, polling only");
                None
            }
        }
    }

    async fn wait_for_work(
        &self,
        listener: Option<&mut PgListener>,
        local: &super::wake::Registration,
        shutdown: &CancellationToken,
    ) {
        let notified = async {
            match listener {
                Some(listener) => {
                    if let Err(error) = listener.recv().await {
                        // Falls back to the poll below; sqlx reconnects on the next recv.
                        tracing::debug!(%error, "outbox listener error");
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = notified => {}
            _ = local.woken() => {}
            _ = tokio::time::sleep(self.config.poll_interval) => {}
        }
    }

    #[tracing::instrument(skip_all, fields(schema = %schema))]
    async fn round(
        &self,
        channel: Option<&Channel>,
        schema: &str,
    ) -> Result<Round, MessagingError> {
        let Some(channel) = channel else {
            return Ok(Round {
                claimed: 0,
                confirmed: 0,
            });
        };
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            r#"
            select outbox_id, message_id, exchange, routing_key, message_type, payload,
                   correlation_id, causation_id, traceparent, schema_version, occurred_at
            from outbox
            where sent_at is null
            order by outbox_id
            limit $1
            for update skip locked
            "#,
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Round {
                claimed: 0,
                confirmed: 0,
            });
        }

        failpoint::hit(Point::RelayBeforePublish, schema);
        let namespace = self.broker.namespace();
        let groups = destinations(&rows);
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
                        // broker), the rows stay pending and are sent again next
                        // round instead of being lost. An event may have no
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

        failpoint::hit(Point::RelayBeforeMarkSent, schema);
        // The round commits without waiting for its WAL to reach the disk
        // (`synchronous_commit` off for this transaction only): a mark lost
        // in a database crash leaves its rows pending, and sending them
        // again is what at-least-once delivery already allows (the
        // consumers' inbox absorbs it).
        sqlx::query(
            "with lazy as (select set_config('synchronous_commit', 'off', true))
             update outbox set sent_at = now()
              where outbox_id = any($1) and exists (select 1 from lazy)",
        )
        .planned_per_call()
        .bind(&confirmed_ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("corebank_messaging_published_total", "schema" => schema.to_owned())
            .increment(confirmed_ids.len() as u64);
        tracing::debug!(
            claimed = rows.len(),
            confirmed = confirmed_ids.len(),
            "outbox batch published"
        );
        Ok(Round {
            claimed: rows.len(),
            confirmed: confirmed_ids.len(),
        })
    }

    async fn report_pending(&self, schema: &str) {
        let pending: Result<(i64, Option<f64>), sqlx::Error> = sqlx::query_as(
            r#"
            select count(*), extract(epoch from now() - min(created_at))::float8
            from outbox where sent_at is null
            "#,
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((count, lag_seconds)) = pending {
            metrics::gauge!("corebank_messaging_outbox_pending", "schema" => schema.to_owned())
                .set(count as f64);
            metrics::gauge!("corebank_messaging_outbox_lag_seconds", "schema" => schema.to_owned())
                .set(lag_seconds.unwrap_or(0.0));
        }
    }
}
