//! The reporting schema: the projection's read models (entries, cursors,
//! waiting entries, daily totals), the context they are described with,
//! signing keys, exports and reconciliation reports. The pool is private to
//! this room; callers get transactions and connections from it.

pub mod context;
pub mod exports;
pub mod projection;
pub mod reconciliations;
pub mod statements;

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use corebank_platform::idempotency::{self, IdempotencyConfig};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool, Postgres};

/// The reporting service's handle on its schema.
#[derive(Debug, Clone)]
pub struct ReportingStore {
    pool: PgPool,
    idempotency: IdempotencyConfig,
}

impl ReportingStore {
    pub fn new(pool: PgPool, idempotency: IdempotencyConfig) -> Self {
        Self { pool, idempotency }
    }

    /// A connection for reads.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, ApiError> {
        Ok(self.pool.acquire().await?)
    }

    /// A transaction, for writes that span several tables.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, ApiError> {
        Ok(self.pool.begin().await?)
    }

    /// Runs `effect` in one transaction, guarded by the idempotency key.
    pub async fn idempotent<Resp, F>(
        &self,
        key: Option<&str>,
        fingerprint: &[u8],
        now: DateTime<Utc>,
        effect: F,
    ) -> Result<Resp, ApiError>
    where
        Resp: prost::Message + Default,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Resp, ApiError>>,
    {
        idempotency::run(&self.pool, key, fingerprint, now, self.idempotency, effect).await
    }

    /// The response `key` already stored for this very request, if any, so
    /// a replay skips work done before the transaction (asking the ledger).
    pub async fn replay<Resp>(
        &self,
        key: &str,
        fingerprint: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<Resp>, ApiError>
    where
        Resp: prost::Message + Default,
    {
        idempotency::replay(&self.pool, key, fingerprint, now).await
    }
}
