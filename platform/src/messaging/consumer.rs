//! The consumer runner: one queue, one [`Handler`], inbox-guarded effects.
//!
//! Deliveries already prefetched are handled in batches in one database
//! transaction: each message's inbox row and its effect commit or roll back
//! together, and a failing message does not undo its neighbours (the batch is
//! tried first with one inbox statement for all its messages and no
//! savepoints, and applied again with an inbox row and a savepoint per
//! message if a handler fails). Only after the commit are the batch's retries and parkings
//! published (with confirms) and the deliveries acknowledged, with one multiple
//! ack. A crash anywhere before that ack makes the broker redeliver, and the
//! inbox turns the redelivery into a no-op.

use std::collections::HashSet;
use std::future::Future;
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

use super::MessagingError;
use super::broker::Broker;
use super::dlq::{ParkReason, park, schedule_retry};
use super::envelope::{IncomingMessage, MalformedMessage};
use super::topology::{QueueSpec, declare_queue};

/// Why a handler did not apply a message. The split decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (database busy, a dependency down): retried after a
    /// growing delay, parked once the retry policy is exhausted.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed (a business rule, an unknown message type): parked at once.
    #[error("permanent failure: {0:#}")]
    Permanent(anyhow::Error),
    /// The payload cannot be decoded: parked at once.
    #[error("malformed message: {0:#}")]
    Malformed(anyhow::Error),
}

impl HandlerError {
    /// A transient failure.
    pub fn transient(error: impl Into<anyhow::Error>) -> Self {
        Self::Transient(error.into())
    }

    /// A permanent failure.
    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }

    /// A payload that does not decode.
    pub fn malformed(error: impl Into<anyhow::Error>) -> Self {
        Self::Malformed(error.into())
    }

    /// Whether retrying may help.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Database errors are assumed transient (lost connection, serialization
/// failure, lock timeout); a handler that knows better maps them itself.
impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self::Transient(error.into())
    }
}

/// Applies one message inside the runner's transaction.
///
/// Implement it with `async fn handle(&self, tx: &mut PgConnection, message:
/// &IncomingMessage) -> Result<(), HandlerError>`. Write effects (and outgoing
/// messages via [`enqueue`](super::enqueue)) through `tx`; do not commit it.
pub trait Handler: Send + Sync + 'static {
    /// Applies `message`. An error rolls back everything written through `tx`.
    fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Unacknowledged deliveries the broker may push ahead.
    pub prefetch: u16,
    /// Deliveries handled per database transaction, at most.
    pub batch_size: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            prefetch: 32,
            batch_size: 32,
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

/// What became of one delivery inside the batch's transaction.
enum Handled {
    /// Nothing to undo: applied, a duplicate, or unreadable.
    Done(Outcome),
    /// The handler failed: its writes (and its inbox row) must be undone.
    Failed(Outcome),
}

/// What the inbox and the handler made of one readable message.
enum Applied {
    Handled,
    Duplicate,
    Failed(HandlerError),
}

/// How a message's inbox row is written.
enum Claim<'a> {
    /// By the batch's one inbox statement; the set holds the ids it found new.
    Claimed(&'a mut HashSet<Uuid>),
    /// By the message itself, under a savepoint of its own.
    Guarded,
}

/// What to do with one delivery once the transaction committed.
enum Outcome {
    Ack,
    Retry { attempt: u32, delay: Duration },
    Park { reason: ParkReason, error: String },
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
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let Some(channel) = self.broker.channel(&shutdown).await else {
                break;
            };
            let started = std::time::Instant::now();
            match self.consume(&channel, &queue, &shutdown).await {
                Ok(()) => {
                    let _ = channel.close(200, "shutdown".into()).await;
                    break;
                }
                Err(error) => {
                    if started.elapsed() > Duration::from_secs(60) {
                        // It ran fine for a while: this is a new incident.
                        backoff = Duration::from_millis(100);
                    }
                    tracing::warn!(%error, %queue, "consumer interrupted, restarting");
                    let _ = channel.close(200, "restarting".into()).await;
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        tracing::info!(%queue, "consumer stopped");
    }

    async fn consume(
        &self,
        channel: &Channel,
        queue: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), MessagingError> {
        declare_queue(channel, self.broker.namespace(), &self.spec).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
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
            let batch = self.fill_batch(first, &mut consumer);
            self.process_batch(channel, queue, batch).await?;
        }
    }

    /// Adds what the broker already pushed, without waiting for more.
    fn fill_batch(&self, first: Delivery, consumer: &mut Consumer) -> Vec<Delivery> {
        let mut batch = vec![first];
        while batch.len() < self.config.batch_size {
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(delivery),
                // An error is followed by the end of the stream, which the
                // next `next()` reports; the batch in hand is handled first.
                _ => break,
            }
        }
        batch
    }

    async fn process_batch(
        &self,
        channel: &Channel,
        queue: &str,
        batch: Vec<Delivery>,
    ) -> Result<(), MessagingError> {
        let outcomes = self.apply_batch(queue, &batch).await?;

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
        // Deliveries arrive in tag order and earlier batches are all acked, so
        // one multiple ack covers the batch.
        if let Some(last) = batch.last() {
            channel
                .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
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
        let messages: Vec<_> = batch.iter().map(IncomingMessage::parse).collect();
        let mut tx = self.pool.begin().await?;
        let mut fresh = self.claim(&mut tx, &messages).await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut failed = None;
        for (index, message) in messages.iter().enumerate() {
            let claim = Claim::Claimed(&mut fresh);
            match self.handle_one(&mut tx, queue, message, claim).await? {
                Handled::Done(outcome) => outcomes.push(outcome),
                Handled::Failed(outcome) => {
                    failed = Some((index, outcome));
                    break;
                }
            }
        }
        if let Some((failed_index, outcome)) = failed {
            tx.rollback().await?;
            tx = self.pool.begin().await?;
            outcomes.clear();
            let mut known = Some(outcome);
            for (index, message) in messages.iter().enumerate() {
                let outcome = match known.take_if(|_| index == failed_index) {
                    Some(outcome) => outcome,
                    None => match self
                        .handle_one(&mut tx, queue, message, Claim::Guarded)
                        .await?
                    {
                        Handled::Done(outcome) | Handled::Failed(outcome) => outcome,
                    },
                };
                outcomes.push(outcome);
            }
        }
        tx.commit().await?;
        Ok(outcomes)
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

    /// Handles one delivery in `tx`. `Claim::Guarded` writes its inbox row
    /// and runs it under a savepoint (a failure then rolls back only this
    /// message); `Claim::Claimed` trusts the batch's inbox statement. Errors
    /// are database errors that abort the whole batch; handler failures
    /// become outcomes.
    async fn handle_one(
        &self,
        tx: &mut PgConnection,
        queue: &str,
        message: &Result<IncomingMessage, MalformedMessage>,
        claim: Claim<'_>,
    ) -> Result<Handled, MessagingError> {
        let message = match message {
            Ok(message) => message,
            Err(malformed) => {
                tracing::warn!(%queue, error = %malformed, "malformed envelope, parking");
                return Ok(Handled::Done(Outcome::Park {
                    reason: ParkReason::Malformed,
                    error: malformed.to_string(),
                }));
            }
        };
        let span = tracing::info_span!(
            "handle_message",
            %queue,
            message_id = %message.message_id,
            message_type = %message.message_type,
            correlation_id = message.correlation_id.map(tracing::field::display),
            traceparent = message.traceparent.as_deref(),
            attempt = message.attempt,
        );
        let applied = match claim {
            // The first delivery of an id in the batch takes it: a second
            // copy in the same batch is a duplicate.
            Claim::Claimed(fresh) => {
                if fresh.remove(&message.message_id) {
                    self.run_handler(tx, message, &span).await
                } else {
                    Applied::Duplicate
                }
            }
            Claim::Guarded => {
                let mut savepoint = tx.begin().await?;
                let applied = if self.claim_one(&mut savepoint, message).await? {
                    self.run_handler(&mut savepoint, message, &span).await
                } else {
                    Applied::Duplicate
                };
                match applied {
                    Applied::Handled => savepoint.commit().await?,
                    Applied::Duplicate | Applied::Failed(_) => savepoint.rollback().await?,
                }
                applied
            }
        };
        Ok(match applied {
            Applied::Duplicate => {
                metrics::counter!("corebank_messaging_duplicates_total", "queue" => self.spec.name.clone()).increment(1);
                tracing::info!(parent: &span, "duplicate message, acknowledging without effect");
                Handled::Done(Outcome::Ack)
            }
            Applied::Handled => {
                metrics::counter!("corebank_messaging_handled_total", "queue" => self.spec.name.clone()).increment(1);
                tracing::debug!(parent: &span, "message handled");
                Handled::Done(Outcome::Ack)
            }
            Applied::Failed(error) => Handled::Failed(self.failure_outcome(&span, message, error)),
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

    /// The handler's effect, in `conn`.
    async fn run_handler(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        span: &tracing::Span,
    ) -> Applied {
        // A panicking handler is a bug in that handler: park its message
        // instead of letting the panic end this consumer for every other message.
        let result = AssertUnwindSafe(self.handler.handle(conn, message))
            .catch_unwind()
            .instrument(span.clone())
            .await
            .unwrap_or_else(|_| Err(HandlerError::permanent(anyhow::anyhow!("handler panicked"))));
        match result {
            Ok(()) => Applied::Handled,
            Err(error) => Applied::Failed(error),
        }
    }

    fn failure_outcome(
        &self,
        span: &tracing::Span,
        message: &IncomingMessage,
        error: HandlerError,
    ) -> Outcome {
        let text = error.to_string();
        match error {
            HandlerError::Transient(_) => match self.spec.retry.delay_after(message.attempt) {
                Some(delay) => {
                    tracing::warn!(parent: span, error = %text, retry_in_ms = delay.as_millis() as u64, "transient failure, retrying");
                    Outcome::Retry {
                        attempt: message.attempt + 1,
                        delay,
                    }
                }
                None => {
                    tracing::error!(parent: span, error = %text, "transient failure, retries exhausted, parking");
                    Outcome::Park {
                        reason: ParkReason::RetriesExhausted,
                        error: text,
                    }
                }
            },
            HandlerError::Permanent(_) => {
                tracing::error!(parent: span, error = %text, "permanent failure, parking");
                Outcome::Park {
                    reason: ParkReason::Permanent,
                    error: text,
                }
            }
            HandlerError::Malformed(_) => {
                tracing::error!(parent: span, error = %text, "malformed payload, parking");
                Outcome::Park {
                    reason: ParkReason::Malformed,
                    error: text,
                }
            }
        }
    }
}
