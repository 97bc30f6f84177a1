//! The fraud schema: rule-set versions, decisions, reviews, alerts, the
//! watchlist, the analysts' action log, and the local state features come
//! from. Every write that answers a saga (a screen, a review decided by an
//! analyst or by its deadline) puts the reply in the outbox in the same
//! transaction.

pub mod decisions;
pub mod features;
pub mod profiles;
pub mod reviews;
pub mod watchlist;

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use corebank_platform::idempotency::{self, IdempotencyConfig};
use futures::future::BoxFuture;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use crate::domain::NewRuleSet;
use crate::domain::defaults::default_rule_set;
use crate::domain::rules::RuleSet;

pub use reviews::EXPIRY_BATCH;

/// The fraud service's handle on its schema.
#[derive(Debug, Clone)]
pub struct FraudStore {
    pool: PgPool,
    idempotency: IdempotencyConfig,
}

impl FraudStore {
    pub fn new(pool: PgPool, idempotency: IdempotencyConfig) -> Self {
        Self { pool, idempotency }
    }

    /// A connection for reads.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, ApiError> {
        Ok(self.pool.acquire().await?)
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

    /// Stores the default rule set as version 1 when there is none yet.
    pub async fn ensure_rule_set(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        let mut rules = default_rule_set();
        rules.created_at = now;
        sqlx::query(
            "insert into rule_set (version, body, created_by, reason, created_at)
             values (1, $1, $2, $3, $4)
             on conflict (version) do nothing",
        )
        .bind(Json(&rules))
        .bind(&rules.created_by)
        .bind(&rules.reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A transaction, for writes that span several tables.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
        Ok(self.pool.begin().await?)
    }
}

/// The active rule set: the highest version.
pub async fn active_rule_set(conn: &mut PgConnection) -> Result<RuleSet, sqlx::Error> {
    let Json(rules): Json<RuleSet> =
        sqlx::query_scalar("select body from rule_set order by version desc limit 1")
            .fetch_one(conn)
            .await?;
    Ok(rules)
}

/// One version of the rule set.
pub async fn rule_set(
    conn: &mut PgConnection,
    version: i64,
) -> Result<Option<RuleSet>, sqlx::Error> {
    let found: Option<Json<RuleSet>> =
        sqlx::query_scalar("select body from rule_set where version = $1")
            .bind(version)
            .fetch_optional(conn)
            .await?;
    Ok(found.map(|Json(rules)| rules))
}

/// Stores `draft` as the next version (serialized by a lock, so two
/// updates at once make two versions, never one lost); returns it.
pub async fn insert_rule_set(
    conn: &mut PgConnection,
    draft: NewRuleSet,
    now: DateTime<Utc>,
) -> Result<RuleSet, sqlx::Error> {
    // An advisory lock: the table is append-only for this role, so a table
    // lock (which needs UPDATE rights) is not available.
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('fraud.rule_set', 0))")
        .execute(&mut *conn)
        .await?;
    let latest: i64 = sqlx::query_scalar("select coalesce(max(version), 0) from rule_set")
        .fetch_one(&mut *conn)
        .await?;
    let rules = draft.into_rule_set(latest + 1, now);
    sqlx::query(
        "insert into rule_set (version, body, created_by, reason, created_at)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(rules.version)
    .bind(Json(&rules))
    .bind(&rules.created_by)
    .bind(&rules.reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(rules)
}

/// One row of the append-only analyst log.
pub async fn log_action(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    subject_id: &str,
    reason: &str,
    detail: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into analyst_action (actor, action, subject_id, reason, detail, created_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor)
    .bind(action)
    .bind(subject_id)
    .bind(reason)
    .bind(detail)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
