//! The consumer runner: one queue, one [`Handler`], inbox-guarded effects.
//!
//! Deliveries already prefetched are handled in batches in one database
//! transaction: each message's inbox row and its effect commit or roll back
//! together, and a failing message does not undo its neighbours. A batch is
//! tried first with one inbox statement for all its messages, no savepoints,
//! and the handler's [`Handler::handle_batch`] (which may apply them all with
//! a few multi-row statements); if that fails, it is applied again with an
//! inbox row, a savepoint and a [`Handler::handle`] per message. Only after
//! the commit are the batch's retries and parkings published (with confirms)
//! and the deliveries acknowledged, with one multiple ack. A crash anywhere
//! before that ack makes the broker redeliver, and the inbox turns the
//! redelivery into a no-op.
//!
//! A delivery may be a batch envelope: its inner messages are handled like
//! deliveries of their own (inbox row, outcome, retry or parking each), and
//! the envelope is acknowledged with the rest.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::failpoint::{self, Point};

use super::MessagingError;
use super::batch::unpack;
use super::broker::BROKER_CALL_TIMEOUT;
use super::broker::Broker;
use super::dlq::{park, schedule_retry};
use super::envelope::{IncomingMessage, MalformedMessage, header_text, headers};
use super::handler::{BatchError, panicked};
use super::handler::{Handler, message_span};
use super::topology::{QueueSpec, declare_queue};

mod outcome;
mod restart;

use outcome::{Outcome, outcome_span};
use restart::RestartBackoff;

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Unacknowledged deliveries the broker may push ahead.
    pub prefetch: u16,
    /// Deliveries handled per database transaction, at most.
    pub batch_size: usize,
    /// How long applying one batch may take. Past it the batch's database
    /// connection is dropped and the channel restarted, so its deliveries
    /// come again: a link that lost the request would otherwise hold the
    /// consumer forever.
    pub batch_timeout: Duration,
    /// How long a batch waits, after its first delivery, for more to join
    /// it (up to `batch_size`). Zero: only what the broker already pushed.
    /// A consumer off the saga's path (a read model) trades this much
    /// freshness for fewer, larger transactions when messages trickle in.
    pub gather: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            prefetch: 32,
            batch_size: 32,
            batch_timeout: Duration::from_secs(60),
            gather: Duration::ZERO,
        }
    }
}

/// Runs a [`Handler`] over one queue, surviving lost connections.
pub struct QueueConsumer<H> {
    broker: Broker,
    pool: PgPool,
    spec: QueueSpec,
    handler: Arc<H>,
    config: ConsumerConfig,
}

impl<H: Handler> QueueConsumer<H> {
    /// A consumer of `spec`'s queue with the default configuration.
    pub fn new(broker: Broker, pool: PgPool, spec: QueueSpec, handler: H) -> Self {
        Self {
            broker,
            pool,
            spec,
            handler: Arc::new(handler),
            config: ConsumerConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: ConsumerConfig) -> Self {
        self.config = config;
        self
    }

    /// Consumes until `shutdown` is cancelled. The batch in hand is finished;
    /// prefetched but unhandled deliveries go back to the queue.
    pub async fn run(self, shutdown: CancellationToken) {
        let queue = self.broker.namespace().queue(&self.spec.name);
        let mut backoff = RestartBackoff::default();
        // The outbox the handlers write to: its relay, when it runs in this
        // process, is handed each batch's rows instead of a NOTIFY in it.
        let outbox = super::handover_key(&self.pool, &queue).await;
        while !shutdown.is_cancelled() {
            let Some(channel) = self.broker.channel(&shutdown).await else {
                break;
            };
            let mut progressed = false;
            match self
                .consume(
                    &channel,
                    &queue,
                    outbox.as_deref(),
                    &shutdown,
                    &mut progressed,
                )
                .await
            {
                Ok(()) => {
                    let _ = channel.close(200, "shutdown".into()).await;
                    break;
                }
                Err(error) => {
                    let delay = backoff.after_interruption(progressed);
                    tracing::warn!(%error, %queue, ?delay, "consumer interrupted, restarting");
                    let _ = channel.close(200, "restarting".into()).await;
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!(%queue, "consumer stopped");
    }

    async fn consume(
        &self,
        channel: &Channel,
        queue: &str,
        outbox: Option<&str>,
        shutdown: &CancellationToken,
        progressed: &mut bool,
    ) -> Result<(), MessagingError> {
        // A broker that stops answering mid-setup (a node still recovering
        // its queues) must not hold the consumer forever: past the deadline
        // the channel is dropped and the consumer starts afresh.
        let setup = async {
            declare_queue(channel, self.broker.namespace(), &self.spec).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
                .basic_qos(self.config.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, MessagingError>(consumer)
        };
        let mut consumer = super::within("starting a consumer", BROKER_CALL_TIMEOUT, setup).await?;
        tracing::info!(%queue, prefetch = self.config.prefetch, "consumer started");

        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                    return Ok(());
                }
                next = consumer.next() => next,
            };
            let first = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(error.into()),
                None => return Err(MessagingError::ConsumerCancelled),
            };
            let batch = self.fill_batch(first, &mut consumer).await;
            // Deliveries arrive in tag order and earlier batches are all
            // acked, so one multiple ack of the last tag covers the batch.
            let last_tag = batch.last().map(|delivery| delivery.delivery_tag);
            let messages: Vec<Delivery> = batch.into_iter().flat_map(unpack).collect();
            super::within(
                "a consumer batch",
                self.config.batch_timeout,
                super::waking_relay_after(outbox, self.process_batch(channel, queue, &messages)),
            )
            .await?;
            failpoint::hit(Point::ConsumerBeforeAck, &self.spec.name);
            if let Some(last_tag) = last_tag {
                channel
                    .basic_ack(last_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            *progressed = true;
        }
    }

    /// Adds what the broker already pushed, then what arrives within the
    /// configured gathering time.
    async fn fill_batch(&self, first: Delivery, consumer: &mut Consumer) -> Vec<Delivery> {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.config.gather;
        while batch.len() < self.config.batch_size {
            let next = match consumer.next().now_or_never() {
                Some(next) => next,
                None if self.config.gather.is_zero() => break,
                None => match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(Ok(delivery)) => batch.push(delivery),
                // An error is followed by the end of the stream, which the
                // next `next()` reports; the batch in hand is handled first.
                _ => break,
            }
        }
        batch
    }

    /// Applies the messages of a batch of deliveries (batch envelopes
    /// unpacked) and publishes their retries and parkings; the caller acks.
    async fn process_batch(
        &self,
        channel: &Channel,
        queue: &str,
        batch: &[Delivery],
    ) -> Result<(), MessagingError> {
        let outcomes = self.apply_batch(queue, batch).await?;

        let namespace = self.broker.namespace();
        for (delivery, outcome) in batch.iter().zip(&outcomes) {
            match outcome {
                Outcome::Ack => {}
                Outcome::Retry { attempt, delay } => {
                    schedule_retry(
                        channel,
                        namespace,
                        &self.spec.name,
                        delivery,
                        *attempt,
                        *delay,
                    )
                    .await?;
                }
                Outcome::Park { reason, error } => {
                    park(
                        channel,
                        namespace,
                        &self.spec.name,
                        delivery,
                        *reason,
                        error,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Applies the batch in one transaction and commits it. Optimistically
    /// first: one statement writes the inbox rows of the whole batch, and the
    /// handlers run with no savepoints. If a handler fails, that transaction
    /// is rolled back and the batch applied again with an inbox row and a
    /// savepoint per message, the failed message given the outcome it already
    /// earned (its handler is not called twice).
    async fn apply_batch(
        &self,
        queue: &str,
        batch: &[Delivery],
    ) -> Result<Vec<Outcome>, MessagingError> {
        let span = tracing::info_span!("handle_batch", %queue, deliveries = batch.len());
        if crate::tracing_otel::enabled() {
            // A batch may hold several traces: it joins its first message's.
            let first = batch.iter().find_map(|delivery| {
                let headers = delivery.properties.headers().as_ref()?;
                header_text(headers, headers::TRACEPARENT)
            });
            crate::tracing_otel::continue_trace(&span, first.as_deref());
        }
        self.apply_batch_in_span(queue, batch)
            .instrument(span)
            .await
    }

    async fn apply_batch_in_span(
        &self,
        queue: &str,
        batch: &[Delivery],
    ) -> Result<Vec<Outcome>, MessagingError> {
        let messages: Vec<_> = batch.iter().map(IncomingMessage::parse).collect();
        let mut tx = self.pool.begin().await?;
        let mut fresh = self.claim(&mut tx, &messages).await?;
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
        let mut to_handle = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            outcomes.push(match message {
                Err(malformed) => Some(self.malformed(queue, malformed)),
                // The first delivery of an id in the batch takes it: a second
                // copy in the same batch is a duplicate.
                Ok(message) if fresh.remove(&message.message_id) => {
                    to_handle.push((index, message));
                    None
                }
                Ok(message) => Some(self.duplicate(&outcome_span(message))),
            });
        }
        let mut known = match self.handle_all(&mut tx, queue, &to_handle).await {
            Ok(()) => {
                tx.commit().await?;
                for (index, message) in &to_handle {
                    outcomes[*index] = Some(self.handled(&outcome_span(message), message));
                }
                return Ok(outcomes
                    .into_iter()
                    .map(|outcome| outcome.unwrap_or(Outcome::Ack))
                    .collect());
            }
            Err(known) => known,
        };
        tx.rollback().await?;
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, message) in messages.iter().enumerate() {
            let outcome = match known.take_if(|(failed, _)| *failed == index) {
                Some((_, outcome)) => outcome,
                None => self.handle_guarded(&mut tx, queue, message).await?,
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Runs the handler over the batch's fresh messages. On failure, the
    /// failed message's position in the batch and outcome when known.
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        queue: &str,
        to_handle: &[(usize, &IncomingMessage)],
    ) -> Result<(), Option<(usize, Outcome)>> {
        if to_handle.is_empty() {
            return Ok(());
        }
        let messages: Vec<&IncomingMessage> =
            to_handle.iter().map(|(_, message)| *message).collect();
        let result = AssertUnwindSafe(self.handler.handle_batch(tx, &messages))
            .catch_unwind()
            .await;
        let failure = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(failure)) => failure,
            Err(_) => BatchError::whole(panicked()),
        };
        match failure.index.and_then(|index| to_handle.get(index)) {
            Some((position, message)) => {
                let outcome = self.failure_outcome(&outcome_span(message), message, failure.error);
                Err(Some((*position, outcome)))
            }
            None => {
                tracing::warn!(%queue, error = %failure.error, "batch failed, handling its messages one by one");
                Err(None)
            }
        }
    }

    /// Writes the inbox rows of every readable message in one statement and
    /// returns the ids that were new: the others were handled before.
    async fn claim(
        &self,
        conn: &mut PgConnection,
        messages: &[Result<IncomingMessage, MalformedMessage>],
    ) -> Result<HashSet<Uuid>, MessagingError> {
        let (ids, types): (Vec<Uuid>, Vec<&str>) = messages
            .iter()
            .flatten()
            .map(|message| (message.message_id, message.message_type.as_str()))
            .unzip();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let fresh: Vec<Uuid> = sqlx::query_scalar(
            r#"
            insert into inbox (consumer, message_id, message_type)
            select $1, id, kind from unnest($2::uuid[], $3::text[]) as m(id, kind)
            on conflict do nothing
            returning message_id
            "#,
        )
        .bind(&self.spec.name)
        .bind(&ids)
        .bind(&types)
        .fetch_all(&mut *conn)
        .await?;
        Ok(fresh.into_iter().collect())
    }

    /// Handles one message in `tx` under a savepoint of its own, its inbox
    /// row included: a failure rolls back only this message. Errors are
    /// database errors that abort the whole batch; handler failures become
    /// outcomes.
    async fn handle_guarded(
        &self,
        tx: &mut PgConnection,
        queue: &str,
        message: &Result<IncomingMessage, MalformedMessage>,
    ) -> Result<Outcome, MessagingError> {
        let message = match message {
            Ok(message) => message,
            Err(malformed) => return Ok(self.malformed(queue, malformed)),
        };
        let span = message_span(message);
        let mut savepoint = tx.begin().await?;
        if !self.claim_one(&mut savepoint, message).await? {
            savepoint.rollback().await?;
            return Ok(self.duplicate(&span));
        }
        let result = AssertUnwindSafe(self.handler.handle(&mut savepoint, message))
            .catch_unwind()
            .instrument(span.clone())
            .await
            .unwrap_or_else(|_| Err(panicked()));
        Ok(match result {
            Ok(()) => {
                savepoint.commit().await?;
                self.handled(&span, message)
            }
            Err(error) => {
                savepoint.rollback().await?;
                self.failure_outcome(&span, message, error)
            }
        })
    }

    /// Writes one message's inbox row; false when it was handled before.
    async fn claim_one(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<bool, MessagingError> {
        let inserted = sqlx::query(
            "insert into inbox (consumer, message_id, message_type) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(&self.spec.name)
        .bind(message.message_id)
        .bind(&message.message_type)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}
