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

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 200;

/// Validates the idempotency key every mutating RPC requires: present, at most
/// [`MAX_KEY_LEN`] bytes, not only whitespace, and free of control characters
/// other than tab and newline.
pub fn parse_key(text: &str) -> Result<String, &'static str> {
    if text.is_empty() {
        return Err("is required");
    }
    if text.len() > MAX_KEY_LEN {
        return Err("must be at most 200 characters");
    }
    if text.trim().is_empty() {
        return Err("must not be blank");
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n')
    {
        return Err("must not contain control characters");
    }
    Ok(text.to_owned())
}

/// [`parse_key`] for the request field `idempotency_key`, recording its
/// violation; the key as given (empty when invalid).
pub fn required_key(violations: &mut crate::Violations, text: &str) -> String {
    violations
        .take("idempotency_key", parse_key(text))
        .unwrap_or_default()
}

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
    let expires_at = expires_at(now, config);
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
        return Err(reused());
    }
    match response {
        Some(response) => Ok(Claim::Replay(response)),
        None => Err(in_use()),
    }
}

/// The claim of a key together with its response, for an effect whose
/// response is known before it runs and whose writes fit in the same
/// statement as the claim: one round trip instead of a transaction of five.
/// [`Self::cte`] claims the key (first use, or a use whose retention has
/// passed) and stores the response; the caller's writes depend on it having
/// claimed. When it did not, nothing was written and the caller runs [`run`],
/// which replays the stored response, refuses another request, or answers
/// `IDEMPOTENCY_KEY_IN_USE`.
///
/// The statement runs outside an explicit transaction, so without [`run`]'s
/// lock timeout: it waits for a concurrent request holding the same key, which
/// is itself one such statement or a [`run`] that holds the key no longer than
/// its lock timeout.
pub struct FreshClaim<'a> {
    key: &'a str,
    fingerprint: &'a [u8],
    response: Vec<u8>,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl<'a> FreshClaim<'a> {
    /// The number of parameters [`Self::cte`] uses.
    pub const PARAMETERS: usize = 5;

    pub fn new(
        key: &'a str,
        fingerprint: &'a [u8],
        response: &impl Message,
        now: DateTime<Utc>,
        config: IdempotencyConfig,
    ) -> Self {
        Self {
            key,
            fingerprint,
            response: response.encode_to_vec(),
            now,
            expires_at: expires_at(now, config),
        }
    }

    /// `<name> as (insert … returning 1)`: one row when the key was claimed
    /// now, none when it is held; parameters `$first` to `$first + 4`.
    pub fn cte(name: &str, first: usize) -> String {
        let p = |offset: usize| format!("${}", first + offset);
        format!(
            "{name} as (
                insert into idempotency_key (idempotency_key, fingerprint, response, created_at, expires_at)
                values ({}, {}, {}, {}, {})
                on conflict (idempotency_key) do update
                    set fingerprint = excluded.fingerprint, response = excluded.response,
                        created_at = excluded.created_at, expires_at = excluded.expires_at
                    where idempotency_key.expires_at <= excluded.created_at
                returning 1
            )",
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
        )
    }

    /// Binds the parameters of [`Self::cte`], in order.
    pub fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
    where
        'a: 'q,
    {
        query
            .bind(self.key)
            .bind(self.fingerprint)
            .bind(self.response)
            .bind(self.now)
            .bind(self.expires_at)
    }
}

fn expires_at(now: DateTime<Utc>, config: IdempotencyConfig) -> DateTime<Utc> {
    now + chrono::Duration::from_std(config.retention).unwrap_or_else(|_| chrono::Duration::days(1))
}

/// The stored response of `key` when it already answered this very request,
/// read without claiming the key; `IDEMPOTENCY_KEY_REUSED` when it answered
/// another request. For a handler that does slow work (a network hop) before
/// its transaction: a replay skips that work. The claim inside [`run`] stays
/// the guard: two first requests racing past this both do the work, and the
/// second then replays the first's response.
pub async fn replay<Resp>(
    pool: &PgPool,
    key: &str,
    fingerprint: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Resp>, ApiError>
where
    Resp: Message + Default,
{
    let stored: Option<(Vec<u8>, Option<Vec<u8>>)> = sqlx::query_as(
        "select fingerprint, response from idempotency_key
         where idempotency_key = $1 and expires_at > $2",
    )
    .bind(key)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    match stored {
        Some((stored, _)) if stored != fingerprint => Err(reused()),
        Some((_, Some(response))) => {
            mark_replayed();
            Resp::decode(response.as_slice())
                .map(Some)
                .map_err(ApiError::internal)
        }
        _ => Ok(None),
    }
}

fn reused() -> ApiError {
    ApiError::failed_precondition(
        reason::IDEMPOTENCY_KEY_REUSED,
        "idempotency key was already used with a different request",
    )
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
        mark_replayed();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_is_required_and_must_be_printable() {
        assert_eq!(parse_key("order-42"), Ok("order-42".to_owned()));
        assert_eq!(
            parse_key("tab\tand\nnewline"),
            Ok("tab\tand\nnewline".to_owned())
        );
        assert_eq!(parse_key(""), Err("is required"));
        assert_eq!(parse_key("   "), Err("must not be blank"));
        assert_eq!(parse_key("\t\n "), Err("must not be blank"));
        assert_eq!(
            parse_key("a\0b"),
            Err("must not contain control characters")
        );
        assert_eq!(
            parse_key("a\rb"),
            Err("must not contain control characters")
        );
        assert_eq!(
            parse_key("a\u{7f}b"),
            Err("must not contain control characters")
        );
        assert!(parse_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(parse_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn an_invalid_key_is_named_idempotency_key() {
        let mut violations = crate::Violations::default();
        required_key(&mut violations, " ");
        let error = violations.into_error();
        assert_eq!(error.violations()[0].field, "idempotency_key");
    }
}

/// The response metadata saying a response is a replay of a stored one; the
/// REST gateway passes it on as `Idempotent-Replayed: true`.
pub const REPLAYED_METADATA: &str = "idempotent-replayed";

tokio::task_local! {
    static REPLAYED: std::sync::Arc<std::sync::atomic::AtomicBool>;
}

/// Notes, for [`ReplayMarkerLayer`], that this request's response is a replay.
fn mark_replayed() {
    let _ = REPLAYED.try_with(|flag| flag.store(true, std::sync::atomic::Ordering::Relaxed));
}

/// A server layer that adds `idempotent-replayed: true` to the response
/// metadata of every request [`run`] answered from a stored response, so
/// no handler has to say it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayMarkerLayer;

impl<S> tower::Layer<S> for ReplayMarkerLayer {
    type Service = ReplayMarker<S>;

    fn layer(&self, inner: S) -> ReplayMarker<S> {
        ReplayMarker { inner }
    }
}

/// The service of [`ReplayMarkerLayer`].
#[derive(Debug, Clone)]
pub struct ReplayMarker<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for ReplayMarker<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let response = REPLAYED.scope(flag.clone(), self.inner.call(request));
        Box::pin(async move {
            let mut response = response.await?;
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                response
                    .headers_mut()
                    .insert(REPLAYED_METADATA, http::HeaderValue::from_static("true"));
            }
            Ok(response)
        })
    }
}
