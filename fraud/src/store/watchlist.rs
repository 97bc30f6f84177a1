//! The watchlist: accounts and customers to look at twice. An entry ends when
//! it expires or is removed; nothing is deleted, so the list's history stays.

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use corebank_platform::paging::Page;
use sqlx::PgConnection;
use uuid::Uuid;

/// One watchlist row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WatchlistEntry {
    pub entry_id: Uuid,
    /// `account` or `customer`.
    pub subject: String,
    pub subject_id: Uuid,
    pub reason: String,
    pub added_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<String>,
}

const COLUMNS: &str = "entry_id, subject, subject_id, reason, added_by, created_at, expires_at, removed_at, removed_by";

/// Adds an entry.
pub async fn add(
    conn: &mut PgConnection,
    subject: &str,
    subject_id: Uuid,
    reason: &str,
    actor: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<WatchlistEntry, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into watchlist_entry (entry_id, subject, subject_id, reason, added_by, created_at, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7)
         returning {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(subject)
    .bind(subject_id)
    .bind(reason)
    .bind(actor)
    .bind(now)
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

/// Ends an active entry; `None` when it does not exist or already ended.
pub async fn remove(
    conn: &mut PgConnection,
    entry_id: Uuid,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<WatchlistEntry>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update watchlist_entry set removed_at = $3, removed_by = $2
          where entry_id = $1 and removed_at is null
         returning {COLUMNS}"
    )))
    .bind(entry_id)
    .bind(actor)
    .bind(now)
    .fetch_optional(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    entry_id: Uuid,
) -> Result<Option<WatchlistEntry>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from watchlist_entry where entry_id = $1"
    )))
    .bind(entry_id)
    .fetch_optional(conn)
    .await
}

/// Entries oldest first; only active ones (not removed, not expired at
/// `now`) unless `include_ended`.
pub async fn list(
    conn: &mut PgConnection,
    include_ended: bool,
    page: &Page,
    now: DateTime<Utc>,
) -> Result<Vec<WatchlistEntry>, ApiError> {
    let after = page
        .after
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| {
            ApiError::invalid_field("page_token", "is not a token issued for this query")
        })?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from watchlist_entry
          where ($1 or (removed_at is null and (expires_at is null or expires_at > $2)))
            and ($3::uuid is null or entry_id > $3)
          order by entry_id
          limit $4"
    )))
    .bind(include_ended)
    .bind(now)
    .bind(after)
    .bind(page.fetch_limit())
    .fetch_all(conn)
    .await?;
    Ok(rows)
}
