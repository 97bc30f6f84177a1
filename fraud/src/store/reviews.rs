//! The review queue. A review is decided exactly once: by an analyst before
//! its deadline, or by its timeout policy once the deadline passed.

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use corebank_platform::paging::Page;
use sqlx::PgConnection;
use uuid::Uuid;

/// Reviews decided per sweep transaction, at most.
pub const EXPIRY_BATCH: usize = 100;

/// A stored review.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReviewRow {
    pub review_id: Uuid,
    pub decision_id: Uuid,
    pub transaction_id: Uuid,
    pub saga_id: Uuid,
    /// The screen command the final answer replies to.
    pub command_id: String,
    /// open | approved | declined | expired
    pub state: String,
    pub deadline: DateTime<Utc>,
    /// approve | decline
    pub timeout_action: String,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub automatic: bool,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "review_id, decision_id, transaction_id, saga_id, command_id, state, deadline, \
     timeout_action, decided_by, decision_reason, automatic, decided_at, created_at";

pub async fn insert(conn: &mut PgConnection, row: &ReviewRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into review (review_id, decision_id, transaction_id, saga_id, command_id, state,
                             deadline, timeout_action, created_at)
         values ($1, $2, $3, $4, $5, 'open', $6, $7, $8)",
    )
    .bind(row.review_id)
    .bind(row.decision_id)
    .bind(row.transaction_id)
    .bind(row.saga_id)
    .bind(&row.command_id)
    .bind(row.deadline)
    .bind(&row.timeout_action)
    .bind(row.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// One review; `lock` takes its row for a decision.
pub async fn get(
    conn: &mut PgConnection,
    review_id: Uuid,
    lock: bool,
) -> Result<Option<ReviewRow>, sqlx::Error> {
    let lock = if lock { " for update" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from review where review_id = $1{lock}"
    )))
    .bind(review_id)
    .fetch_optional(conn)
    .await
}

pub async fn by_decision(
    conn: &mut PgConnection,
    decision_id: Uuid,
) -> Result<Option<ReviewRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from review where decision_id = $1"
    )))
    .bind(decision_id)
    .fetch_optional(conn)
    .await
}

/// Records the decision of an open review.
pub async fn decide(
    conn: &mut PgConnection,
    review_id: Uuid,
    state: &str,
    actor: &str,
    reason: &str,
    automatic: bool,
    now: DateTime<Utc>,
) -> Result<ReviewRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update review set state = $2, decided_by = $3, decision_reason = $4, automatic = $5,
                decided_at = $6
          where review_id = $1 and state = 'open'
         returning {COLUMNS}"
    )))
    .bind(review_id)
    .bind(state)
    .bind(actor)
    .bind(reason)
    .bind(automatic)
    .bind(now)
    .fetch_one(conn)
    .await
}

/// How many reviews are open, and how long the oldest has waited at `now`.
pub async fn open_summary(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "select count(*), coalesce(extract(epoch from $1 - min(created_at))::float8, 0)
           from review where state = 'open'",
    )
    .bind(now)
    .fetch_one(conn)
    .await
}

/// Open reviews whose deadline passed, locked for deciding (skipping those
/// another replica or an analyst holds).
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<ReviewRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from review
          where state = 'open' and deadline <= $1
          order by deadline
          limit $2
          for update skip locked"
    )))
    .bind(now)
    .bind(i64::try_from(EXPIRY_BATCH).unwrap_or(100))
    .fetch_all(conn)
    .await
}

/// Reviews in `state` (or all): open ones first, soonest deadline first,
/// then the rest by deadline. The cursor is `rank|deadline|review_id`.
pub async fn list(
    conn: &mut PgConnection,
    state: Option<&str>,
    page: &Page,
) -> Result<Vec<ReviewRow>, ApiError> {
    let bad_token =
        || ApiError::invalid_field("page_token", "is not a token issued for this query");
    let after = match page.after.as_deref() {
        None => None,
        Some(token) => {
            let mut parts = token.splitn(3, '|');
            let rank: i32 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad_token)?;
            let micros: i64 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad_token)?;
            let id = parts
                .next()
                .and_then(|p| Uuid::parse_str(p).ok())
                .ok_or_else(bad_token)?;
            let deadline = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(bad_token)?;
            Some((rank, deadline, id))
        }
    };
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from review
          where ($1::text is null or state = $1)
            and ($2::int is null
                 or (case when state = 'open' then 0 else 1 end, deadline, review_id) > ($2, $3, $4))
          order by case when state = 'open' then 0 else 1 end, deadline, review_id
          limit $5"
    )))
    .bind(state)
    .bind(after.map(|(rank, _, _)| rank))
    .bind(after.map(|(_, deadline, _)| deadline))
    .bind(after.map(|(_, _, id)| id))
    .bind(page.fetch_limit())
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// The page cursor of a review row.
pub fn cursor(row: &ReviewRow) -> String {
    let rank = i32::from(row.state != "open");
    format!(
        "{rank}|{}|{}",
        row.deadline.timestamp_micros(),
        row.review_id
    )
}
