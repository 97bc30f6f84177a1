//! The orchestrator's batch writes: a batch of requests inserts its new
//! sagas with their first log rows in one statement; a batch of replies locks
//! its sagas in one statement and writes their new states and log rows in
//! another.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use corebank_platform::db::PlannedPerCall;
use corebank_platform::messaging::{OutboxRows, OutgoingMessage};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{SAGA_COLUMNS, SagaRow, answered_steps, stored_position};
use crate::domain::{LogEntry, Saga};

/// Reads the sagas of `saga_ids` and locks them until the caller's
/// transaction ends, in id order (so two batches lock in the same order).
pub async fn lock_all(
    conn: &mut PgConnection,
    saga_ids: &[Uuid],
) -> Result<Vec<Saga>, sqlx::Error> {
    let rows: Vec<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {SAGA_COLUMNS} from saga where saga_id = any($1) order by saga_id for update"
    )))
    .planned_per_call()
    .bind(saga_ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Saga::try_from).collect()
}

/// Writes the new state of every saga in `sagas` (each locked by the caller,
/// each once), appends `entries`, their transitions' log rows in order, and
/// enqueues the commands they send (`outgoing`), in one statement.
#[tracing::instrument(skip_all, fields(sagas = sagas.len(), entries = entries.len()), err)]
pub async fn update_all(
    conn: &mut PgConnection,
    sagas: &[&Saga],
    entries: &[(Uuid, &LogEntry)],
    outgoing: Vec<OutgoingMessage>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut columns = SagaColumns::default();
    for saga in sagas {
        columns.push(saga)?;
    }
    let mut log = LogColumns::default();
    for (saga_id, entry) in entries {
        log.push(*saga_id, entry);
    }
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with changed as (
             update saga s
                set state = u.state, current_step = u.current_step, direction = u.direction,
                    compensated = u.compensated, attempt = u.attempt, next_attempt_at = u.next_attempt_at,
                    step_started_at = u.step_started_at, requires_attention = u.requires_attention,
                    data = u.data::jsonb, failure_reason = u.failure_reason, failure_detail = u.failure_detail,
                    updated_at = u.updated_at, parked_until = u.parked_until,
                    answered_steps = string_to_array(u.answered_steps, ',')
               from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int4[],
                           $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::text[], $11::text[],
                           $12::text[], $13::timestamptz[], $14::timestamptz[], $25::text[])
                    as u(saga_id, state, current_step, direction, compensated, attempt, next_attempt_at,
                         step_started_at, requires_attention, data, failure_reason, failure_detail,
                         updated_at, parked_until, answered_steps)
              where s.saga_id = u.saga_id
             returning s.saga_id
         ), logged as (
             insert into saga_log (saga_id, step, direction, event, state, command_id, attempt, detail, actor, created_at)
             select l.saga_id, l.step, l.direction, l.event, l.state, l.command_id, l.attempt, l.detail, l.actor, $24
               from unnest($15::uuid[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],
                           $21::int4[], $22::text[], $23::text[])
                    with ordinality as l(saga_id, step, direction, event, state, command_id, attempt, detail, actor, ord)
              order by l.ord
             returning 1
         ), {outbox}
         select (select count(*) from changed), (select count(*) from logged),
                (select count(*) from sent_woken)",
            outbox = OutboxRows::cte("sent", 26, "true"),
        )
    });
    let query = sqlx::query(sqlx::AssertSqlSafe(STATEMENT.as_str())).planned_per_call();
    let row = OutboxRows::new(outgoing)
        .bind(bind_rows(query, &columns, &log, now))
        .fetch_one(&mut *conn)
        .await?;
    let (changed, logged): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    if changed != sagas.len() as i64 || logged != entries.len() as i64 {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// Inserts every new saga of `sagas` with its first log row and its first
/// commands (`outgoing`, each correlated to its saga), skipping each saga
/// whose transaction already has one (and any later one of the same
/// transaction in `sagas`) with its commands, in one statement; returns the
/// ids inserted.
#[tracing::instrument(skip_all, fields(sagas = sagas.len()), err)]
pub async fn insert_all(
    conn: &mut PgConnection,
    sagas: &[(&Saga, &LogEntry)],
    outgoing: Vec<OutgoingMessage>,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut columns = SagaColumns::default();
    let mut log = LogColumns::default();
    let (mut saga_types, mut transaction_ids, mut created_at) =
        (Vec::new(), Vec::new(), Vec::new());
    for (saga, entry) in sagas {
        if transaction_ids.contains(&saga.transaction_id) {
            continue;
        }
        columns.push(saga)?;
        saga_types.push(saga.saga_type.as_str());
        transaction_ids.push(saga.transaction_id);
        created_at.push(saga.created_at);
        log.push(saga.saga_id, entry);
    }
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with inserted as (
             insert into saga (saga_id, saga_type, transaction_id, state, current_step, direction, compensated,
                               attempt, next_attempt_at, step_started_at, requires_attention, data,
                               failure_reason, failure_detail, created_at, updated_at, parked_until,
                               answered_steps)
             select u.saga_id, u.saga_type, u.transaction_id, u.state, u.current_step, u.direction,
                    u.compensated, u.attempt, u.next_attempt_at, u.step_started_at, u.requires_attention,
                    u.data::jsonb, u.failure_reason, u.failure_detail, u.created_at, u.updated_at,
                    u.parked_until, string_to_array(u.answered_steps, ',')
               from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::int4[],
                           $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::text[], $11::text[],
                           $12::text[], $13::timestamptz[], $14::timestamptz[], $25::text[],
                           $26::text[], $27::uuid[], $28::timestamptz[])
                    with ordinality
                    as u(saga_id, state, current_step, direction, compensated, attempt, next_attempt_at,
                         step_started_at, requires_attention, data, failure_reason, failure_detail,
                         updated_at, parked_until, answered_steps, saga_type, transaction_id, created_at,
                         ord)
              order by u.ord
             on conflict (transaction_id) do nothing
             returning saga_id
         ), logged as (
             insert into saga_log (saga_id, step, direction, event, state, command_id, attempt, detail, actor, created_at)
             select l.saga_id, l.step, l.direction, l.event, l.state, l.command_id, l.attempt, l.detail, l.actor, $24
               from unnest($15::uuid[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],
                           $21::int4[], $22::text[], $23::text[])
                    with ordinality as l(saga_id, step, direction, event, state, command_id, attempt, detail, actor, ord)
              where l.saga_id in (select saga_id from inserted)
              order by l.ord
         ), {outbox}
         select i.saga_id from inserted i, (select count(*) from sent_woken) as woken",
            outbox = OutboxRows::cte(
                "sent",
                29,
                "m.correlation_id in (select saga_id from inserted)"
            ),
        )
    });
    let query = sqlx::query(sqlx::AssertSqlSafe(STATEMENT.as_str()));
    let query = bind_rows(query, &columns, &log, now)
        .bind(&saga_types)
        .bind(&transaction_ids)
        .bind(&created_at);
    OutboxRows::new(outgoing)
        .bind(query)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect()
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the parameters both batch writes share: the sagas' columns ($1 to
/// $14), their log rows' ($15 to $23), the time ($24) and the answered steps
/// ($25).
fn bind_rows<'q>(
    query: Query<'q>,
    columns: &'q SagaColumns,
    log: &'q LogColumns<'q>,
    now: DateTime<Utc>,
) -> Query<'q> {
    query
        .bind(&columns.saga_id)
        .bind(&columns.state)
        .bind(&columns.current_step)
        .bind(&columns.direction)
        .bind(&columns.compensated)
        .bind(&columns.attempt)
        .bind(&columns.next_attempt_at)
        .bind(&columns.step_started_at)
        .bind(&columns.requires_attention)
        .bind(&columns.data)
        .bind(&columns.failure_reason)
        .bind(&columns.failure_detail)
        .bind(&columns.updated_at)
        .bind(&columns.parked_until)
        .bind(&log.saga_id)
        .bind(&log.step)
        .bind(&log.direction)
        .bind(&log.event)
        .bind(&log.state)
        .bind(&log.command_id)
        .bind(&log.attempt)
        .bind(&log.detail)
        .bind(&log.actor)
        .bind(now)
        .bind(&columns.answered_steps)
}

/// Sagas as column arrays, for `unnest`.
#[derive(Default)]
struct SagaColumns {
    saga_id: Vec<Uuid>,
    state: Vec<&'static str>,
    current_step: Vec<&'static str>,
    direction: Vec<&'static str>,
    compensated: Vec<bool>,
    attempt: Vec<i32>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    step_started_at: Vec<DateTime<Utc>>,
    requires_attention: Vec<bool>,
    data: Vec<String>,
    failure_reason: Vec<Option<String>>,
    failure_detail: Vec<Option<String>>,
    updated_at: Vec<DateTime<Utc>>,
    parked_until: Vec<Option<DateTime<Utc>>>,
    /// Comma-separated (step names have no commas): unnest cannot take an
    /// array of arrays of differing lengths.
    answered_steps: Vec<String>,
}

impl SagaColumns {
    fn push(&mut self, saga: &Saga) -> Result<(), sqlx::Error> {
        let (step, direction, compensated) = stored_position(saga);
        self.saga_id.push(saga.saga_id);
        self.state.push(saga.state.as_str());
        self.current_step.push(step);
        self.direction.push(direction.as_str());
        self.compensated.push(compensated);
        self.attempt
            .push(i32::try_from(saga.attempt).unwrap_or(i32::MAX));
        self.next_attempt_at.push(saga.next_attempt_at);
        self.step_started_at.push(saga.step_started_at);
        self.requires_attention.push(saga.requires_attention);
        self.data.push(
            serde_json::to_string(&saga.data).map_err(|error| sqlx::Error::Encode(error.into()))?,
        );
        let failure = saga.failure.as_ref();
        self.failure_reason
            .push(failure.map(|failure| failure.reason_code.clone()));
        self.failure_detail
            .push(failure.map(|failure| failure.detail.clone()));
        self.updated_at.push(saga.updated_at);
        self.parked_until.push(saga.parked_until);
        self.answered_steps.push(answered_steps(saga).join(","));
        Ok(())
    }
}

/// Log rows as column arrays, for `unnest`.
#[derive(Default)]
struct LogColumns<'a> {
    saga_id: Vec<Uuid>,
    step: Vec<&'a str>,
    direction: Vec<&'a str>,
    event: Vec<&'a str>,
    state: Vec<&'a str>,
    command_id: Vec<&'a str>,
    attempt: Vec<i32>,
    detail: Vec<&'a str>,
    actor: Vec<Option<&'a str>>,
}

impl<'a> LogColumns<'a> {
    fn push(&mut self, saga_id: Uuid, entry: &'a LogEntry) {
        self.saga_id.push(saga_id);
        self.step.push(entry.step);
        self.direction.push(entry.direction.as_str());
        self.event.push(entry.event.as_str());
        self.state.push(entry.state.as_str());
        self.command_id.push(&entry.command_id);
        self.attempt
            .push(i32::try_from(entry.attempt).unwrap_or(i32::MAX));
        self.detail.push(&entry.detail);
        self.actor.push(entry.actor.as_deref());
    }
}
