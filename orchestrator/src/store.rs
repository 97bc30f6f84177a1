//! SQL for the `orchestrator` schema. The pool is private: reads go through
//! [`SagaStore`], writes take the caller's `&mut PgConnection` so a saga's new
//! state, its log row and its outgoing commands commit together (with the
//! idempotency key of the operator action that caused them, if any).

use chrono::{DateTime, Utc};
use corebank_platform::error::ApiError;
use corebank_platform::idempotency::{self, IdempotencyConfig};
use corebank_platform::messaging::OutgoingMessage;
use corebank_platform::paging::Page;
use corebank_proto::wire::Direction;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{Failure, LogEntry, Position, Saga, SagaState, SagaType};
use crate::domain::{position_of, step_at};

mod batch;

pub use batch::{insert_all, lock_all, update_all};

pub const SAGA_NOT_FOUND: &str = "SAGA_NOT_FOUND";

/// Reads, and transactions for the writers.
#[derive(Debug, Clone)]
pub struct SagaStore {
    pool: PgPool,
    idempotency: IdempotencyConfig,
}

/// Which sagas `ListSagas` wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaFilter {
    pub state: Option<SagaState>,
    pub saga_type: Option<SagaType>,
    /// Only sagas created at or before this time.
    pub created_before: Option<DateTime<Utc>>,
    pub requires_attention_only: bool,
    /// Only sagas parked at a step that answered WAITING.
    pub parked_only: bool,
}

/// One row of a saga's step log, as read back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LogRecord {
    pub saga_log_id: i64,
    pub step: String,
    pub direction: String,
    pub event: String,
    pub state: String,
    pub command_id: String,
    pub attempt: i32,
    pub detail: String,
    pub actor: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SagaRow {
    saga_id: Uuid,
    saga_type: String,
    transaction_id: Uuid,
    state: String,
    current_step: String,
    direction: String,
    compensated: bool,
    attempt: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    step_started_at: DateTime<Utc>,
    requires_attention: bool,
    parked_until: Option<DateTime<Utc>>,
    answered_steps: Vec<String>,
    data: sqlx::types::Json<crate::domain::SagaData>,
    failure_reason: Option<String>,
    failure_detail: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const SAGA_COLUMNS: &str = "saga_id, saga_type, transaction_id, state, current_step, direction, compensated, attempt,
    next_attempt_at, step_started_at, requires_attention, parked_until, answered_steps, data, failure_reason, failure_detail,
    created_at, updated_at";

fn corrupt(what: String) -> sqlx::Error {
    sqlx::Error::Decode(what.into())
}

fn direction(text: &str) -> Option<Direction> {
    match text {
        "forward" => Some(Direction::Forward),
        "compensate" => Some(Direction::Compensate),
        _ => None,
    }
}

impl TryFrom<SagaRow> for Saga {
    type Error = sqlx::Error;

    fn try_from(row: SagaRow) -> Result<Self, sqlx::Error> {
        let saga_type = SagaType::parse(&row.saga_type)
            .ok_or_else(|| corrupt(format!("unknown saga type {:?}", row.saga_type)))?;
        let state = SagaState::parse(&row.state)
            .ok_or_else(|| corrupt(format!("unknown saga state {:?}", row.state)))?;
        let stored_direction = direction(&row.direction)
            .ok_or_else(|| corrupt(format!("unknown direction {:?}", row.direction)))?;
        let definition = saga_type.definition();
        let mut answered = row
            .answered_steps
            .iter()
            .map(|name| {
                definition.step_index(name).ok_or_else(|| {
                    corrupt(format!(
                        "unknown answered step {name:?} of a {} saga",
                        saga_type.as_str()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut position = position_of(
            definition,
            &row.current_step,
            stored_direction,
            row.compensated,
        )
        .ok_or_else(|| {
            corrupt(format!(
                "unknown step {:?} of a {} saga",
                row.current_step,
                saga_type.as_str()
            ))
        })?;
        // A saga stored at a later step of a parallel group was written while
        // those steps still ran one after another: the ones before it have
        // succeeded, and the group stands at its first step.
        if let Position::Forward(index) = position {
            let group = definition.group(index);
            if index > group.start {
                answered.extend(group.start..index);
                answered.sort_unstable();
                answered.dedup();
                position = Position::Forward(group.start);
            }
        }
        Ok(Saga {
            saga_id: row.saga_id,
            saga_type,
            transaction_id: row.transaction_id,
            state,
            position,
            attempt: u32::try_from(row.attempt).unwrap_or(1),
            next_attempt_at: row.next_attempt_at,
            step_started_at: row.step_started_at,
            requires_attention: row.requires_attention,
            parked_until: row.parked_until,
            answered,
            data: row.data.0,
            failure: row.failure_reason.map(|reason_code| Failure {
                reason_code,
                detail: row.failure_detail.unwrap_or_default(),
            }),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl SagaStore {
    pub fn new(pool: PgPool, idempotency: IdempotencyConfig) -> Self {
        Self { pool, idempotency }
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
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

    pub async fn get(&self, saga_id: Uuid) -> Result<Saga, ApiError> {
        let row: Option<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {SAGA_COLUMNS} from saga where saga_id = $1"
        )))
        .bind(saga_id)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| not_found(saga_id))?;
        Ok(Saga::try_from(row)?)
    }

    /// The step log of a saga, oldest first.
    /// How the sagas still running stand, for the gauges: how many there are,
    /// how many require attention, how many are parked, and how long the
    /// oldest has run at `now`.
    pub async fn active_summary(&self, now: DateTime<Utc>) -> Result<ActiveSummary, sqlx::Error> {
        sqlx::query_as(
            "select count(*) as active,
                    count(*) filter (where requires_attention) as requires_attention,
                    count(*) filter (where parked_until is not null) as parked,
                    coalesce(extract(epoch from $1 - min(created_at))::float8, 0) as oldest_seconds
               from saga
              where state in ('running', 'compensating')",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn history(&self, saga_id: Uuid) -> Result<Vec<LogRecord>, ApiError> {
        let mut conn = self.pool.acquire().await?;
        Ok(history(&mut conn, saga_id).await?)
    }

    pub async fn list(&self, filter: &SagaFilter, page: &Page) -> Result<Vec<Saga>, ApiError> {
        let after = page
            .after
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| {
                ApiError::invalid_field("page_token", "is not a token issued for this query")
            })?;
        let rows: Vec<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {SAGA_COLUMNS} from saga
             where ($1::text is null or state = $1)
               and ($2::text is null or saga_type = $2)
               and ($3::timestamptz is null or created_at <= $3)
               and (not $4 or requires_attention)
               and ($5::uuid is null or saga_id > $5)
               and (not $7 or parked_until is not null)
             order by saga_id limit $6"
        )))
        .bind(filter.state.map(SagaState::as_str))
        .bind(filter.saga_type.map(SagaType::as_str))
        .bind(filter.created_before)
        .bind(filter.requires_attention_only)
        .bind(after)
        .bind(page.fetch_limit())
        .bind(filter.parked_only)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(Saga::try_from)
            .collect::<Result<_, _>>()?)
    }
}

/// See [`SagaStore::active_summary`].
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct ActiveSummary {
    pub active: i64,
    pub requires_attention: i64,
    pub parked: i64,
    pub oldest_seconds: f64,
}

pub fn not_found(saga_id: Uuid) -> ApiError {
    ApiError::not_found(SAGA_NOT_FOUND, format!("saga {saga_id} not found"))
}

/// The step log of a saga, oldest first, as the caller's transaction sees it.
pub async fn history(
    conn: &mut PgConnection,
    saga_id: Uuid,
) -> Result<Vec<LogRecord>, sqlx::Error> {
    sqlx::query_as(
        "select saga_log_id, step, direction, event, state, command_id, attempt, detail, actor, created_at
         from saga_log where saga_id = $1 order by saga_log_id",
    )
    .bind(saga_id)
    .fetch_all(&mut *conn)
    .await
}

/// Reads one saga and locks it until the caller's transaction ends.
pub async fn lock(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    let row: Option<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SAGA_COLUMNS} from saga where saga_id = $1 for update"
    )))
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Saga::try_from).transpose()
}

/// Locks up to `limit` active sagas whose timer is due at `now`, skipping
/// those another replica (or a reply) holds.
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Saga>, sqlx::Error> {
    let rows: Vec<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SAGA_COLUMNS} from saga
         where next_attempt_at <= $1 and state in ('running', 'compensating')
         order by next_attempt_at limit $2
         for update skip locked"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Saga::try_from).collect()
}

/// The names of the steps a saga at a parallel group has heard back from.
fn answered_steps(saga: &Saga) -> Vec<&'static str> {
    let steps = &saga.saga_type.definition().steps;
    saga.answered
        .iter()
        .map(|&index| steps[index].name)
        .collect()
}

fn stored_position(saga: &Saga) -> (&'static str, Direction, bool) {
    let (step, direction) = step_at(saga.saga_type.definition(), saga.position);
    let compensated = matches!(saga.position, Position::Fail { compensated: true });
    (step.name, direction, compensated)
}

/// Writes a saga's new state (it must be locked by the caller), appends
/// the log row of the transition and enqueues the commands it sends
/// (`outgoing`), in one statement.
pub async fn update(
    conn: &mut PgConnection,
    saga: &Saga,
    entry: &LogEntry,
    outgoing: Vec<OutgoingMessage>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    update_all(conn, &[saga], &[(saga.saga_id, entry)], outgoing, now).await
}
