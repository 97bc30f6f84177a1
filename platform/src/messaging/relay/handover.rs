//! The rows writers of this process hand over: read by id (so only
//! committed, still pending rows), published, and marked sent a batch at a
//! time.

use chrono::{DateTime, Utc};
use lapin::Channel;
use tokio::time::Instant;
use uuid::Uuid;

use crate::db::PlannedPerCall;
use crate::failpoint::{self, Point};
use crate::messaging::MessagingError;

use super::publish::OutboxRow;
use super::rounds::Round;
use super::{OutboxRelay, RelayConfig};

/// Rows published from handovers and not yet marked sent.
#[derive(Default)]
pub(super) struct Unmarked {
    ids: Vec<i64>,
    /// The start of the round that published each.
    rounds: Vec<DateTime<Utc>>,
    /// When the oldest was published.
    since: Option<Instant>,
}

impl Unmarked {
    pub(super) fn add(&mut self, ids: &[i64], round_started: DateTime<Utc>) {
        if ids.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        self.ids.extend_from_slice(ids);
        self.rounds
            .extend(std::iter::repeat_n(round_started, ids.len()));
    }

    /// When they must be marked at the latest.
    pub(super) fn deadline(&self, config: &RelayConfig) -> Option<Instant> {
        self.since.map(|since| since + config.mark_delay)
    }

    pub(super) fn due(&self, config: &RelayConfig) -> bool {
        self.ids.len() as i64 >= config.batch_size
            || self.deadline(config).is_some_and(|at| at <= Instant::now())
    }

    pub(super) fn take(&mut self) -> (Vec<i64>, Vec<DateTime<Utc>>) {
        self.since = None;
        (
            std::mem::take(&mut self.ids),
            std::mem::take(&mut self.rounds),
        )
    }
}

impl OutboxRelay {
    /// Publishes the rows of the handed-over message ids that are committed
    /// and still pending (read by id, no lock taken), and keeps the
    /// confirmed ones to be marked sent by [`Self::mark`].
    #[tracing::instrument(skip_all, fields(schema = %schema, handed = ids.len()))]
    pub(super) async fn handed_round(
        &self,
        channel: Option<&Channel>,
        schema: &str,
        ids: &[Uuid],
        unmarked: &mut Unmarked,
    ) -> Result<Round, MessagingError> {
        let Some(channel) = channel else {
            return Ok(Round::NOTHING);
        };
        let started = Utc::now();
        let rows: Vec<OutboxRow> = sqlx::query_as(
            r#"
            select outbox_id, message_id, exchange, routing_key, message_type, payload,
                   correlation_id, causation_id, traceparent, schema_version, occurred_at
            from outbox
            where message_id = any($1) and sent_at is null
            order by outbox_id
            "#,
        )
        .planned_per_call()
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Round::NOTHING);
        }
        let confirmed = self.publish(channel, schema, &rows).await?;
        // Published and confirmed, not yet marked: a crash from here on
        // publishes these rows again, as one between a claim round's
        // confirms and its mark does.
        failpoint::hit(Point::RelayBeforeMarkSent, schema);
        unmarked.add(&confirmed, started);
        Ok(Round::done(schema, rows.len(), confirmed.len()))
    }

    /// Marks the rows published from handovers sent, each with the start of
    /// the round that published it, in one statement. If it fails they stay
    /// pending, and a claim round publishes them again.
    pub(super) async fn mark(&self, unmarked: &mut Unmarked, schema: &str) {
        if unmarked.ids.is_empty() {
            return;
        }
        let (ids, rounds) = unmarked.take();
        // `synchronous_commit` off, as for a claim round's mark.
        let marked = sqlx::query(
            "with lazy as (select set_config('synchronous_commit', 'off', true))
             update outbox o set sent_at = s.round_started
               from unnest($1::int8[], $2::timestamptz[]) as s(outbox_id, round_started)
              where o.outbox_id = s.outbox_id and o.sent_at is null
                and exists (select 1 from lazy)",
        )
        .planned_per_call()
        .bind(&ids)
        .bind(&rounds)
        .execute(&self.pool)
        .await;
        if let Err(error) = marked {
            tracing::warn!(%error, %schema, rows = ids.len(), "marking published outbox rows sent failed; they will be published again");
        }
    }
}
