//! The outbox relay: publishes committed outbox rows and marks them sent once
//! the broker confirmed them.
//!
//! Rows reach it two ways. A writer in the relay's own process (a consumer
//! batch or a transaction service create, inside
//! [`waking_relay_after`](super::waking_relay_after)) hands it
//! the message ids it wrote: the relay reads those rows by id once the
//! writer's transaction is over, which finds only committed rows that are
//! still pending, publishes them, and marks them sent a batch at a time
//! (after `mark_delay`, or before its next claim round), so a busy consumer
//! costs one read a transaction instead of a claim round. Every other row
//! (another process's, a lost handover, a failed publish) goes out in a
//! claim round: it locks a batch of pending rows with `for update skip
//! locked` (so several replicas share the table without publishing a row
//! twice), publishes them, and marks the confirmed ones sent in the
//! transaction that locked them. Claim rounds run on the NOTIFY that
//! [`enqueue`](super::enqueue) issues outside a handover scope, and at
//! least every `poll_interval`. A round only the poll asked for skips the
//! rows younger than `poll_min_age`: with several replicas, those are rows
//! another replica's writers handed to its own relay, which publishes them
//! (taking them here too would publish them twice); the poll is there for
//! rows nobody announced, which can wait that long.
//!
//! The rows of one round for one destination (exchange and routing key) go
//! out as one AMQP message, a batch envelope whose inner messages keep
//! their own ids ([`unpack`](super::unpack)). A nack, a timeout or a lost
//! connection leaves rows pending for a later round: delivery is
//! at-least-once and the consumers' inbox absorbs the duplicates (a claim
//! round of another replica that a NOTIFY started may publish a handed row
//! a second time if it runs in the time, at most `mark_delay` and a
//! publish, before the row is marked).

mod handover;
mod publish;
mod rounds;

use std::time::Duration;

use futures::FutureExt;
use lapin::Channel;
use lapin::options::ConfirmSelectOptions;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::PlannedPerCall;
use crate::failpoint::{self, Point};

use super::MessagingError;
use super::broker::{BROKER_CALL_TIMEOUT, Broker};
use super::outbox::notify_channel;
use super::wake::Registration;
use handover::Unmarked;
use publish::OutboxRow;
use rounds::{Round, Woken};

/// How often the pending-rows gauges are refreshed.
const PENDING_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per round.
    pub batch_size: i64,
    /// How often to look for pending rows when no notification arrives.
    pub poll_interval: Duration,
    /// How old a row must be for a claim round that only the poll asked
    /// for to take it (a NOTIFY, a failed round or a lost handover claims
    /// every pending row): younger rows are another replica's, handed to
    /// its relay and being published there. Ignored while the relay has no
    /// listener, when it learns of new rows only by polling.
    pub poll_min_age: Duration,
    /// How long rows published from a handover may wait to be marked sent,
    /// so that one statement marks the rows of several rounds. Past it, or
    /// before a claim round, they are marked.
    pub mark_delay: Duration,
    /// How long to wait for the broker's confirms of one batch.
    pub confirm_timeout: Duration,
    /// How long a whole round may take (its statements included). Past it
    /// the round's connection is dropped and its rows stay pending: a
    /// database link that lost a request would otherwise stall the relay
    /// forever.
    pub round_timeout: Duration,
    /// How long shutdown may spend flushing pending rows.
    pub flush_timeout: Duration,
    /// How long a round of handed-over rows waits before it reads them, so
    /// that the rows the process's writers commit meanwhile go out in the
    /// same round (one AMQP message a destination). Zero: it reads them at
    /// once.
    pub handover_gather: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_millis(500),
            poll_min_age: Duration::from_secs(2),
            mark_delay: Duration::from_millis(50),
            confirm_timeout: Duration::from_secs(30),
            round_timeout: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(10),
            handover_gather: Duration::ZERO,
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

/// Whether a round went wrong, in which case the loop opens a new channel:
/// one that failed may be dead or hold unknown confirms, and after a
/// cluster node died a channel that published to a queue whose leader it
/// was keeps nacking while a fresh one is accepted. The round's rows that
/// were not confirmed stay pending.
fn went_wrong(round: Result<Round, MessagingError>, schema: &str) -> bool {
    match round {
        Ok(round) => round.confirmed < round.claimed,
        Err(error) => {
            tracing::warn!(%error, %schema, "outbox relay round failed, will retry");
            true
        }
    }
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
        // Writers of this process hand it their rows in memory (see `wake`).
        let local = super::wake::register(key);
        tracing::info!(%schema, "outbox relay started");
        let mut listener: Option<PgListener> = None;
        let mut channel: Option<Channel> = None;
        let mut report = crate::telemetry::Every::new(PENDING_REPORT_INTERVAL);
        let mut unmarked = Unmarked::default();
        // The first pass claims whatever an earlier process left pending.
        let mut claim = true;
        // Whether the claim must take young rows too (anything but the poll
        // asked for it).
        let mut claim_young = true;
        let mut last_claim = Instant::now();

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
            // A claim round sees every row committed before it starts, so the
            // notifications that have already arrived are answered by one
            // round. They wait in the connection's socket, not in the
            // listener's buffer, so each is read with one poll of `recv`,
            // which is cancel-safe.
            if let Some(listener) = listener.as_mut() {
                while let Some(Ok(_)) = listener.recv().now_or_never() {
                    (claim, claim_young) = (true, true);
                }
            }
            if local.take_claim() {
                (claim, claim_young) = (true, true);
            }
            claim |= last_claim.elapsed() >= self.config.poll_interval;

            // A round of handed-over rows first waits `handover_gather` for
            // the rows committing meanwhile, so that under load the rounds
            // are that far apart and each carries what came in between.
            if !self.config.handover_gather.is_zero() && local.has_handed() {
                tokio::time::sleep(self.config.handover_gather).await;
            }
            let handed = local.take_handed();
            if !handed.is_empty() {
                let round = super::within(
                    "an outbox relay round",
                    self.config.round_timeout,
                    self.handed_round(channel.as_ref(), &schema, &handed, &mut unmarked),
                )
                .await;
                if went_wrong(round, &schema) {
                    // Its rows stay pending: the next claim round takes them.
                    channel = None;
                    (claim, claim_young) = (true, true);
                }
            }
            // Rows published from handovers are marked before a claim round
            // (which would otherwise publish them again), when the oldest
            // has waited `mark_delay`, or when a batch of them is waiting.
            if claim || unmarked.due(&self.config) {
                self.mark(&mut unmarked, &schema).await;
            }
            let mut more = false;
            if claim && channel.is_some() {
                claim = false;
                last_claim = Instant::now();
                let young = std::mem::take(&mut claim_young);
                let min_age = if young || listener.is_none() {
                    Duration::ZERO
                } else {
                    self.config.poll_min_age
                };
                let round = super::within(
                    "an outbox relay round",
                    self.config.round_timeout,
                    self.claim_round(channel.as_ref(), &schema, min_age),
                )
                .await;
                more = matches!(&round, Ok(round) if round.claimed as i64 == self.config.batch_size
                    && round.confirmed == round.claimed);
                let wrong = went_wrong(round, &schema);
                if wrong {
                    channel = None;
                }
                // The next batch, or the retry, is of the same rows.
                claim_young |= young && (more || wrong);
            }
            // The gauges need no fresher than a second: counting the
            // pending rows after every round would be one statement a round.
            if report.due() {
                self.report_pending(&schema).await;
            }
            if more {
                claim = true;
            } else {
                let woken = self
                    .wait_for_work(
                        listener.as_mut(),
                        &local,
                        &shutdown,
                        unmarked.deadline(&self.config),
                    )
                    .await;
                if woken == Woken::Notified {
                    (claim, claim_young) = (true, true);
                }
                claim |= woken == Woken::Poll;
            }
        }

        self.flush(channel, &schema, &local, unmarked).await;
        tracing::info!(%schema, "outbox relay stopped");
        Ok(())
    }

    /// Publishes whatever is pending before stopping, so a clean shutdown leaves
    /// nothing for the next process to send late.
    async fn flush(
        &self,
        channel: Option<Channel>,
        schema: &str,
        local: &Registration,
        mut unmarked: Unmarked,
    ) {
        let flush = async {
            let channel = match channel {
                Some(channel) => channel,
                None => match self.publishing_channel(&CancellationToken::new()).await {
                    Some(channel) => channel,
                    None => return,
                },
            };
            let handed = local.take_handed();
            if !handed.is_empty()
                && let Err(error) = self
                    .handed_round(Some(&channel), schema, &handed, &mut unmarked)
                    .await
            {
                tracing::warn!(%error, %schema, "outbox flush of handed rows failed");
            }
            self.mark(&mut unmarked, schema).await;
            loop {
                match self
                    .claim_round(Some(&channel), schema, Duration::ZERO)
                    .await
                {
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
        local: &Registration,
        shutdown: &CancellationToken,
        mark_at: Option<Instant>,
    ) -> Woken {
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
        let marks_due = async {
            match mark_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => Woken::Shutdown,
            _ = notified => Woken::Notified,
            _ = local.woken() => Woken::Local,
            _ = marks_due => Woken::Marks,
            _ = tokio::time::sleep(self.config.poll_interval) => Woken::Poll,
        }
    }

    /// Claims a batch of pending rows at least `min_age` old, publishes
    /// them and marks the confirmed ones sent, in one transaction.
    #[tracing::instrument(skip_all, fields(schema = %schema))]
    async fn claim_round(
        &self,
        channel: Option<&Channel>,
        schema: &str,
        min_age: Duration,
    ) -> Result<Round, MessagingError> {
        let Some(channel) = channel else {
            return Ok(Round::NOTHING);
        };
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            r#"
            select outbox_id, message_id, exchange, routing_key, message_type, payload,
                   correlation_id, causation_id, traceparent, schema_version, occurred_at
            from outbox
            where sent_at is null and created_at <= now() - make_interval(secs => $2)
            order by outbox_id
            limit $1
            for update skip locked
            "#,
        )
        .bind(self.config.batch_size)
        .bind(min_age.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Round::NOTHING);
        }
        let confirmed = self.publish(channel, schema, &rows).await?;

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
        .bind(&confirmed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Round::done(schema, rows.len(), confirmed.len()))
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
