//! A batch of screens at once: [`record`](super::record) and
//! [`snapshot`](super::snapshot) for many movements, one statement each.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;

use super::{Counted, Movement, assemble};
use crate::domain::features::{FeatureSnapshot, StructuringBand, TransactionKind};
use crate::domain::rules::RuleSet;
use crate::store::profiles::{self, Party};

/// What [`record_batch`] found for a batch of screens.
#[derive(Debug)]
pub struct RecordedBatch {
    /// The active rule set.
    pub rules: RuleSet,
    /// For each screen, in order: whether its command was decided before,
    /// and its movement's parties, source first.
    pub screens: Vec<(bool, Vec<Party>)>,
}

/// [`record`] for a batch of screens, each `(movement, command id)`, in
/// one statement: their subjects locked in one order (the lock key's), then
/// every movement recorded. Their commands' ids and movements' ids are
/// distinct.
pub async fn record_batch(
    conn: &mut PgConnection,
    screens: &[(&Movement, &str)],
    now: DateTime<Utc>,
) -> Result<RecordedBatch, sqlx::Error> {
    static QUERY: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with locked as (
                 select pg_advisory_xact_lock(keys.key) from (
                     select distinct hashtextextended(s::text, 7) as key
                       from unnest($7::uuid[]) as s where s is not null
                      order by 1) keys
             ), recorded as (
                 insert into movement (transaction_id, kind, source_account_id, destination_account_id,
                                       amount, currency, requested_at, updated_at)
                 select m.transaction_id, m.kind, m.source, m.destination, m.amount, m.currency, $8, $8
                   from unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::numeric[], $6::text[])
                        as m (transaction_id, kind, source, destination, amount, currency)
                  where (select count(*) from locked) >= 0
                 on conflict (transaction_id) do nothing
             )
             select case when b.ord = 1
                         then (select body from rule_set order by version desc limit 1) end,
                    exists (select 1 from decision where command_id = b.command_id),
                    {parties}
               from unnest($9::text[], $3::uuid[], $4::uuid[])
                    with ordinality as b (command_id, source, destination, ord)
              order by b.ord",
            parties =
                profiles::parties_column("array_remove(array[b.source, b.destination], null)", "$8"),
        )
    });
    // The rule set (on the first row only), whether decided, the parties.
    type Row = (Option<Json<RuleSet>>, bool, Json<Vec<Party>>);
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(QUERY.as_str()))
        .bind(column(screens, |(movement, _)| movement.transaction_id))
        .bind(column(screens, |(movement, _)| movement.kind.as_str()))
        .bind(column(screens, |(movement, _)| movement.source_account_id))
        .bind(column(screens, |(movement, _)| {
            movement.destination_account_id
        }))
        .bind(column(screens, |(movement, _)| movement.amount))
        .bind(column(screens, |(movement, _)| movement.currency.as_str()))
        .bind(column(screens, |(movement, _)| movement.subject()))
        .bind(now)
        .bind(column(screens, |(_, command_id)| *command_id))
        .fetch_all(conn)
        .await?;
    let mut rows = rows.into_iter();
    let (rules, decided, Json(parties)) = rows.next().ok_or(sqlx::Error::RowNotFound)?;
    let Json(rules) = rules.ok_or(sqlx::Error::RowNotFound)?;
    let mut recorded = vec![(decided, parties)];
    recorded.extend(rows.map(|(_, decided, Json(parties))| (decided, parties)));
    Ok(RecordedBatch {
        rules,
        screens: recorded,
    })
}

/// The features of a batch of recorded movements at `now` under `rules`,
/// each with its parties, in one statement. Each counts as [`snapshot`]
/// would have had the batch been screened one at a time, in its order: a
/// movement the batch recorded counts for none of the batch's before it.
pub async fn snapshot_batch(
    conn: &mut PgConnection,
    movements: &[(&Movement, &[Party])],
    rules: &RuleSet,
    now: DateTime<Utc>,
) -> Result<Vec<FeatureSnapshot>, sqlx::Error> {
    // `later` is the condition that movement `x` is not one the batch
    // recorded after `b`: only a movement recorded by this batch has its
    // time (`$7`), so only those are compared with the array of the
    // batch's later ids (a subquery over the batch for every movement
    // counted cost far more, and so did the array compared with every one).
    // A movement with no structuring band (all but deposits in a banded
    // currency) counts no structuring: its guard is a one-time filter, so
    // that subquery reads nothing for it rather than the destination's day.
    static QUERY: LazyLock<String> = LazyLock::new(|| {
        let later =
            |x: &str| format!("({x}.requested_at <> $7 or {x}.transaction_id <> all(b.later))");
        format!(
            "with batch as materialized (
                 select b.*, array(select l from unnest($1::uuid[]) with ordinality as a (l, ord)
                                    where a.ord > b.ord) as later
                   from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
                               $5::numeric[], $6::numeric[])
                        with ordinality as b (transaction_id, source, destination, currency,
                                              band_lower, band_threshold, ord)
             )
             select v.count_1h, v.count_24h, v.count_7d, v.sum_1h, v.sum_24h, v.sum_7d,
                    (select count(distinct d.source_account_id) from movement d
                      where d.destination_account_id = b.destination and d.source_account_id is not null
                        and d.status <> 'failed' and d.requested_at > $7 - interval '24 hours'
                        and d.requested_at <= $7 and {later_d}) as distinct_sources,
                    (select not exists (select 1 from movement p
                      where p.source_account_id = b.source and p.destination_account_id = b.destination
                        and p.transaction_id <> b.transaction_id and p.status <> 'failed'
                        and {later_p})) as first_payee,
                    array(select h.amount from movement h
                      where h.source_account_id = b.source and h.currency = b.currency
                        and h.transaction_id <> b.transaction_id and h.status <> 'failed' and {later_h}
                      order by h.requested_at desc, h.transaction_id desc
                      limit $8) as history,
                    (select count(*) from movement s
                      where b.band_lower is not null
                        and s.destination_account_id = b.destination and s.kind = 'deposit'
                        and s.currency = b.currency and s.status <> 'failed'
                        and s.amount >= b.band_lower and s.amount < b.band_threshold
                        and s.requested_at > $7 - interval '24 hours' and s.requested_at <= $7
                        and {later_s}) as structuring
               from batch b
               cross join lateral (
                    select count(*) filter (where m.requested_at > $7 - interval '1 hour') as count_1h,
                           count(*) filter (where m.requested_at > $7 - interval '24 hours') as count_24h,
                           count(*) as count_7d,
                           coalesce(sum(m.amount) filter (where m.requested_at > $7 - interval '1 hour'), 0) as sum_1h,
                           coalesce(sum(m.amount) filter (where m.requested_at > $7 - interval '24 hours'), 0) as sum_24h,
                           coalesce(sum(m.amount), 0) as sum_7d
                      from movement m
                     where m.source_account_id = b.source and m.currency = b.currency
                       and m.status <> 'failed'
                       and m.requested_at > $7 - interval '7 days' and m.requested_at <= $7
                       and {later_m}) v
              order by b.ord",
            later_d = later("d"),
            later_p = later("p"),
            later_h = later("h"),
            later_s = later("s"),
            later_m = later("m"),
        )
    });
    let bands: Vec<Option<StructuringBand>> = movements
        .iter()
        .map(|(movement, _)| match movement.kind {
            TransactionKind::Deposit => rules.structuring_band(&movement.currency),
            _ => None,
        })
        .collect();
    let rows: Vec<Counted> = sqlx::query_as(sqlx::AssertSqlSafe(QUERY.as_str()))
        .bind(column(movements, |(movement, _)| movement.transaction_id))
        .bind(column(movements, |(movement, _)| {
            movement.source_account_id
        }))
        .bind(column(movements, |(movement, _)| {
            movement.destination_account_id
        }))
        .bind(column(movements, |(movement, _)| {
            movement.currency.as_str()
        }))
        .bind(column(&bands, |band| band.map(|band| band.lower())))
        .bind(column(&bands, |band| band.map(|band| band.threshold)))
        .bind(now)
        .bind(i64::from(rules.anomaly_history))
        .fetch_all(conn)
        .await?;
    Ok(movements
        .iter()
        .zip(rows)
        .map(|((movement, parties), mut counted)| {
            // Each figure as the one-at-a-time path counts it for this kind.
            counted.first_time_payee &= movement.kind == TransactionKind::Transfer;
            assemble(movement, parties, counted, now)
        })
        .collect())
}

/// One column of a batch statement: `pick` of each item, in order.
fn column<'a, T, U>(items: &'a [T], pick: impl Fn(&'a T) -> U) -> Vec<U> {
    items.iter().map(pick).collect()
}
