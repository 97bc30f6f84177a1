//! Computing a movement's features from local state. The movement itself is
//! recorded first, in the same transaction, so it counts in its own windows
//! and every movement screened before it (still in flight or completed)
//! counts too; failed movements moved no money and count nowhere.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::anomaly;
use crate::domain::features::{
    FeatureSnapshot, StructuringBand, TransactionKind, account_hit, age, customer_hit,
};
use crate::domain::rules::RuleSet;

use super::profiles::{self, Party};

mod batch;

pub use batch::{RecordedBatch, record_batch, snapshot_batch};

/// A movement as the screen command describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub transaction_id: Uuid,
    pub kind: TransactionKind,
    pub source_account_id: Option<Uuid>,
    pub destination_account_id: Option<Uuid>,
    pub amount: Decimal,
    pub currency: String,
}

impl Movement {
    /// The account whose behaviour the velocity and anomaly features follow:
    /// the source, or for a deposit the credited account.
    fn subject(&self) -> Option<Uuid> {
        self.source_account_id.or(self.destination_account_id)
    }
}

/// What [`record`] found.
#[derive(Debug)]
pub struct Recorded {
    /// The active rule set.
    pub rules: RuleSet,
    /// Whether the screen command was decided before (a redelivery).
    pub decided: bool,
    /// The movement's accounts as the service knows them, source first.
    pub parties: Vec<Party>,
}

/// Records `movement` (once: a repeat is a no-op), serializes screens of
/// the same subject account so two at once both see each other, and returns
/// the active rule set, whether the screen command `command_id` was decided
/// before and the movement's parties: one statement.
pub async fn record(
    conn: &mut PgConnection,
    movement: &Movement,
    command_id: &str,
    now: DateTime<Utc>,
) -> Result<Recorded, sqlx::Error> {
    // Built once: the screen runs it for every movement. The scalar
    // subquery makes the insert wait for the lock (and still insert when
    // there is no subject to lock).
    static QUERY: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with locked as (
                 select pg_advisory_xact_lock(hashtextextended($8::text, 7))
                  where $8::uuid is not null
             ), recorded as (
                 insert into movement (transaction_id, kind, source_account_id, destination_account_id,
                                       amount, currency, requested_at, updated_at)
                 select $1, $2, $3, $4, $5, $6, $7, $7
                  where (select count(*) from locked) >= 0
                 on conflict (transaction_id) do nothing
             )
             select (select body from rule_set order by version desc limit 1),
                    exists (select 1 from decision where command_id = $9),
                    {parties}",
            parties = profiles::parties_column("$10", "$7"),
        )
    });
    let accounts: Vec<Uuid> = [movement.source_account_id, movement.destination_account_id]
        .into_iter()
        .flatten()
        .collect();
    let (Json(rules), decided, Json(parties)): (Json<RuleSet>, bool, Json<Vec<Party>>) =
        sqlx::query_as(sqlx::AssertSqlSafe(QUERY.as_str()))
            .bind(movement.transaction_id)
            .bind(movement.kind.as_str())
            .bind(movement.source_account_id)
            .bind(movement.destination_account_id)
            .bind(movement.amount)
            .bind(&movement.currency)
            .bind(now)
            .bind(movement.subject())
            .bind(command_id)
            .bind(&accounts)
            .fetch_one(conn)
            .await?;
    Ok(Recorded {
        rules,
        decided,
        parties,
    })
}

/// The features of a recorded `movement` at `now` under `rules`.
pub async fn snapshot(
    conn: &mut PgConnection,
    movement: &Movement,
    recorded: &Recorded,
    now: DateTime<Utc>,
) -> Result<FeatureSnapshot, sqlx::Error> {
    let rules = &recorded.rules;
    let history_limit = i64::from(rules.anomaly_history);
    let mut counted = match (movement.source_account_id, movement.destination_account_id) {
        (Some(source), Some(destination)) => {
            transfer_features(conn, movement, source, destination, history_limit, now).await?
        }
        (Some(source), None) => {
            let (velocity, history) =
                source_features(conn, movement, source, history_limit, now).await?;
            Counted {
                velocity,
                history,
                ..Counted::default()
            }
        }
        (None, Some(destination)) => Counted {
            distinct_sources_24h: distinct_sources(conn, destination, now).await?,
            ..Counted::default()
        },
        (None, None) => Counted::default(),
    };
    counted.structuring_count_24h = match (
        movement.kind,
        movement.destination_account_id,
        rules.structuring_band(&movement.currency),
    ) {
        (TransactionKind::Deposit, Some(destination), Some(band)) => {
            structuring(conn, destination, &movement.currency, band, now).await?
        }
        _ => 0,
    };
    Ok(assemble(movement, &recorded.parties, counted, now))
}

/// What the movement table says about a movement: the figures its
/// features are made of, read from the columns of the statements that count
/// them (the one-at-a-time transfer statement counts no structuring).
#[derive(Debug, Default, sqlx::FromRow)]
struct Counted {
    #[sqlx(flatten)]
    velocity: Velocity,
    #[sqlx(rename = "distinct_sources")]
    distinct_sources_24h: i64,
    #[sqlx(rename = "first_payee")]
    first_time_payee: bool,
    history: Vec<Decimal>,
    #[sqlx(rename = "structuring", default)]
    structuring_count_24h: i64,
}

/// A movement's features from its parties and what was counted for it.
fn assemble(
    movement: &Movement,
    parties: &[Party],
    counted: Counted,
    now: DateTime<Utc>,
) -> FeatureSnapshot {
    let Counted {
        velocity,
        distinct_sources_24h,
        first_time_payee,
        history,
        structuring_count_24h,
    } = counted;
    let (history, anomaly_score) = match movement.source_account_id {
        Some(_) => {
            let score = anomaly::score(movement.amount, &history);
            (history.len(), score)
        }
        None => (0, None),
    };
    let mut watchlist_hits: Vec<String> = Vec::new();
    for party in parties {
        if party.account_listed {
            watchlist_hits.push(account_hit(party.account_id));
        }
        if let (true, Some(customer)) = (party.customer_listed, party.customer_id) {
            watchlist_hits.push(customer_hit(customer));
        }
    }
    watchlist_hits.sort();
    watchlist_hits.dedup();
    let (account_age, kyc_age) = match parties
        .iter()
        .find(|party| Some(party.account_id) == movement.subject())
    {
        Some(Party {
            customer_id: Some(_),
            opened_at: Some(opened_at),
            verified_at,
            ..
        }) => (
            Some(age(*opened_at, now)),
            verified_at.map(|at| age(at, now)),
        ),
        _ => (None, None),
    };
    // Sums come back at the column's scale (8): show them at the currency's.
    let exponent = corebank_platform::money::Currency::parse(&movement.currency)
        .map(|currency| currency.exponent())
        .unwrap_or(2);
    let at_scale = |sum: Decimal| {
        let mut sum = sum.round_dp(exponent);
        sum.rescale(exponent);
        sum
    };
    FeatureSnapshot {
        count_1h: velocity.count_1h,
        count_24h: velocity.count_24h,
        count_7d: velocity.count_7d,
        sum_1h: at_scale(velocity.sum_1h),
        sum_24h: at_scale(velocity.sum_24h),
        sum_7d: at_scale(velocity.sum_7d),
        distinct_sources_24h,
        first_time_payee,
        account_age,
        kyc_age,
        anomaly_score,
        history_size: u32::try_from(history).unwrap_or(u32::MAX),
        watchlist_hits,
        structuring_count_24h,
        amount: movement.amount,
        currency: movement.currency.clone(),
        kind: movement.kind,
    }
}

#[derive(Debug, Default, sqlx::FromRow)]
struct Velocity {
    count_1h: i64,
    count_24h: i64,
    count_7d: i64,
    sum_1h: Decimal,
    sum_24h: Decimal,
    sum_7d: Decimal,
}

/// The source (`$1`)'s last amounts in its currency (`$2`) before this
/// movement (the parameter `movement`), newest first, at most the parameter
/// `limit` of them: a column of the queries below.
fn history_column(movement: &str, limit: &str) -> String {
    format!(
        "array(select h.amount from movement h
          where h.source_account_id = $1 and h.currency = $2 and h.transaction_id <> {movement}
            and h.status <> 'failed'
          order by h.requested_at desc, h.transaction_id desc
          limit {limit}) as history"
    )
}

/// The source (`$1`)'s count and sum of movements in its currency (`$2`)
/// over the hour, day and week up to `$3`, with `columns` beside them: the
/// statement both velocity queries share.
fn velocity_query(columns: &str) -> String {
    format!(
        "select count(*) filter (where requested_at > $3 - interval '1 hour') as count_1h,
                count(*) filter (where requested_at > $3 - interval '24 hours') as count_24h,
                count(*) as count_7d,
                coalesce(sum(amount) filter (where requested_at > $3 - interval '1 hour'), 0) as sum_1h,
                coalesce(sum(amount) filter (where requested_at > $3 - interval '24 hours'), 0) as sum_24h,
                coalesce(sum(amount), 0) as sum_7d,
                {columns}
           from movement
          where source_account_id = $1 and currency = $2 and status <> 'failed'
            and requested_at > $3 - interval '7 days' and requested_at <= $3"
    )
}

/// A withdrawal's source velocity and the source's amount history, in one statement.
async fn source_features(
    conn: &mut PgConnection,
    movement: &Movement,
    source: Uuid,
    history_limit: i64,
    now: DateTime<Utc>,
) -> Result<(Velocity, Vec<Decimal>), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        velocity: Velocity,
        history: Vec<Decimal>,
    }
    // Built once: the screen runs this for every withdrawal.
    static QUERY: LazyLock<String> = LazyLock::new(|| velocity_query(&history_column("$4", "$5")));
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(QUERY.as_str()))
        .bind(source)
        .bind(&movement.currency)
        .bind(now)
        .bind(movement.transaction_id)
        .bind(history_limit)
        .fetch_one(conn)
        .await?;
    Ok((row.velocity, row.history))
}

/// A transfer's source velocity, its destination's distinct sources,
/// whether the pair is new and the source's amount history, in one statement.
async fn transfer_features(
    conn: &mut PgConnection,
    movement: &Movement,
    source: Uuid,
    destination: Uuid,
    history_limit: i64,
    now: DateTime<Utc>,
) -> Result<Counted, sqlx::Error> {
    // Built once: the screen runs this for every transfer.
    static QUERY: LazyLock<String> = LazyLock::new(|| {
        velocity_query(&format!(
            "(select count(distinct d.source_account_id) from movement d
               where d.destination_account_id = $4 and d.source_account_id is not null
                 and d.status <> 'failed' and d.requested_at > $3 - interval '24 hours'
                 and d.requested_at <= $3) as distinct_sources,
             (select not exists (select 1 from movement p
               where p.source_account_id = $1 and p.destination_account_id = $4
                 and p.transaction_id <> $5 and p.status <> 'failed')) as first_payee,
             {history}",
            history = history_column("$5", "$6"),
        ))
    });
    sqlx::query_as(sqlx::AssertSqlSafe(QUERY.as_str()))
        .bind(source)
        .bind(&movement.currency)
        .bind(now)
        .bind(destination)
        .bind(movement.transaction_id)
        .bind(history_limit)
        .fetch_one(conn)
        .await
}

async fn distinct_sources(
    conn: &mut PgConnection,
    destination: Uuid,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(distinct source_account_id) from movement
          where destination_account_id = $1 and source_account_id is not null
            and status <> 'failed' and requested_at > $2 - interval '24 hours' and requested_at <= $2",
    )
    .bind(destination)
    .bind(now)
    .fetch_one(conn)
    .await
}

async fn structuring(
    conn: &mut PgConnection,
    destination: Uuid,
    currency: &str,
    band: StructuringBand,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "select count(*) from movement
          where destination_account_id = $1 and kind = 'deposit' and currency = $2
            and status <> 'failed' and amount >= $3 and amount < $4
            and requested_at > $5 - interval '24 hours' and requested_at <= $5",
    )
    .bind(destination)
    .bind(currency)
    .bind(band.lower())
    .bind(band.threshold)
    .bind(now)
    .fetch_one(conn)
    .await
}
