//! The idempotency-key store every mutating RPC uses.
//!
//! A key is claimed inside the same database transaction as the effect it
//! guards, and the encoded response is stored before that transaction commits.
//! So: the same key with the same request replays the stored response; the
//! same key with a different request is refused and changes nothing; two
//! concurrent requests with one key serialize on the key's row: the second
//! waits for the first to commit and then replays its response (or, if the
//! first failed and rolled back, runs itself). A request that waits longer than
//! the lock timeout gets `IDEMPOTENCY_KEY_IN_USE` with a retry hint.
//!
//! Each service keeps the table `idempotency_key` in its own schema.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::error::{ApiError, ErrorCode, reason, sqlstate};

/// How long a key is remembered, and how long a request waits for another
/// request holding the same key.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyConfig {
    pub retention: Duration,
    pub wait: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 60 * 60),
            wait: Duration::from_secs(5),
        }
    }
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// First use: run the effect, then [`complete`].
    Fresh,
    /// Already done with the same request: the stored response.
    Replay(Vec<u8>),
}

/// The fingerprint of a request: the operation name and the request's
/// protobuf encoding (with its idempotency key field cleared by the caller).
pub fn fingerprint(operation: &str, request: &impl Message) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(request.encode_to_vec());
    hasher.finalize().to_vec()
}

/// Claims `key` in the caller's transaction.
pub async fn claim(
    conn: &mut PgConnection,
    key: &str,
    fingerprint: &[u8],
    now: DateTime<Utc>,
    config: IdempotencyConfig,
) -> Result<Claim, ApiError> {
    let wait_ms = config.wait.as_millis().max(1);
    sqlx::query(AssertSqlSafe(format!(
        "set local lock_timeout = '{wait_ms}ms'"
    )))
    .execute(&mut *conn)
    .await?;
    let expires_at = now
        + chrono::Duration::from_std(config.retention)
            .unwrap_or_else(|_| chrono::Duration::days(1));
    let claimed = sqlx::query(
        r#"
        insert into idempotency_key (idempotency_key, fingerprint, created_at, expires_at)
        values ($1, $2, $3, $4)
        on conflict (idempotency_key) do update
            set fingerprint = excluded.fingerprint, response = null,
                created_at = excluded.created_at, expires_at = excluded.expires_at
            where idempotency_key.expires_at <= $3
        "#,
    )
    .bind(key)
    .bind(fingerprint)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *conn)
    .await
    .map_err(in_use_or_internal)?;
    if claimed.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let (stored_fingerprint, response): (Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
        "select fingerprint, response from idempotency_key where idempotency_key = $1",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    if stored_fingerprint != fingerprint {
        return Err(ApiError::failed_precondition(
            reason::IDEMPOTENCY_KEY_REUSED,
            "idempotency key was already used with a different request",
        ));
    }
    match response {
        Some(response) => Ok(Claim::Replay(response)),
        None => Err(in_use()),
    }
}

/// Stores the response of a fresh claim, in the same transaction as the effect.
pub async fn complete(conn: &mut PgConnection, key: &str, response: &[u8]) -> Result<(), ApiError> {
    sqlx::query("update idempotency_key set response = $2 where idempotency_key = $1")
        .bind(key)
        .bind(response)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes expired keys; returns how many.
pub async fn purge_expired(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query("delete from idempotency_key where expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

/// Runs `effect` in one transaction guarded by `key` (when given): a replay
/// returns the stored response without running it.
pub async fn run<Resp, F>(
    pool: &PgPool,
    key: Option<&str>,
    fingerprint: &[u8],
    now: DateTime<Utc>,
    config: IdempotencyConfig,
    effect: F,
) -> Result<Resp, ApiError>
where
    Resp: Message + Default,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Resp, ApiError>>,
{
    let mut tx = pool.begin().await?;
    if let Some(key) = key
        && let Claim::Replay(bytes) = claim(&mut tx, key, fingerprint, now, config).await?
    {
        return Resp::decode(bytes.as_slice()).map_err(ApiError::internal);
    }
    let response = effect(&mut tx).await?;
    if let Some(key) = key {
        complete(&mut tx, key, &response.encode_to_vec()).await?;
    }
    tx.commit().await?;
    Ok(response)
}

fn in_use() -> ApiError {
    ApiError::new(
        ErrorCode::Aborted,
        reason::IDEMPOTENCY_KEY_IN_USE,
        "a request with this idempotency key is still in progress",
    )
    .with_retry_after(Duration::from_secs(1))
}

fn in_use_or_internal(error: sqlx::Error) -> ApiError {
    // 55P03: lock_not_available, the other request still holds the key.
    if sqlstate(&error).as_deref() == Some("55P03") {
        in_use()
    } else {
        ApiError::from(error)
    }
}

/// Deletes expired keys from the pool's schema every ten minutes until
/// `shutdown`; expiry is decided by `clock`.
pub fn spawn_purge(
    pool: PgPool,
    clock: crate::clock::SharedClock,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(crate::schedule::every(
        Duration::ZERO,
        Duration::from_secs(600),
        shutdown,
        move || {
            let (pool, clock) = (pool.clone(), clock.clone());
            async move {
                match purge_expired(&pool, clock.now()).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "expired idempotency keys purged"),
                    Err(error) => tracing::warn!(%error, "idempotency key purge failed"),
                }
            }
        },
    ))
}
