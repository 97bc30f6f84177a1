//! The read model's side of a reconciliation, the stored reports, and the
//! projection's position.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Direction;
use crate::domain::reconcile::{
    AccountFigures, CurrencyFigures, EntryFigures, Figures, Mismatch, MismatchKind,
};

/// The reason code of an unknown reconciliation.
pub const RECONCILIATION_NOT_FOUND: &str = "RECONCILIATION_NOT_FOUND";

/// Per account and per currency, entries of journals up to `as_of`.
pub async fn figures(conn: &mut PgConnection, as_of: i64) -> Result<Figures, ApiError> {
    let accounts: Vec<(Uuid, String, i64, Decimal)> = sqlx::query_as(
        "select account_id, currency, count(*),
                coalesce(sum(case direction when 'credit' then amount else -amount end), 0)
         from entry where ledger_seq <= $1 group by account_id, currency",
    )
    .bind(as_of)
    .fetch_all(&mut *conn)
    .await?;
    let currencies: Vec<(String, Decimal, Decimal, i64)> = sqlx::query_as(
        "select currency,
                coalesce(sum(amount) filter (where direction = 'debit'), 0),
                coalesce(sum(amount) filter (where direction = 'credit'), 0),
                count(*)
         from entry where ledger_seq <= $1 group by currency",
    )
    .bind(as_of)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Figures {
        accounts: accounts
            .into_iter()
            .map(|(account_id, currency, entry_count, balance)| {
                (
                    account_id,
                    AccountFigures {
                        currency,
                        entry_count,
                        balance,
                    },
                )
            })
            .collect(),
        currencies: currencies
            .into_iter()
            .map(|(currency, debits, credits, entry_count)| {
                (
                    currency,
                    CurrencyFigures {
                        debits,
                        credits,
                        entry_count,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    })
}

/// One account's entries up to `as_of`, to compare one by one.
pub async fn entries(
    conn: &mut PgConnection,
    account_id: Uuid,
    as_of: i64,
) -> Result<Vec<EntryFigures>, ApiError> {
    let rows: Vec<(Uuid, Uuid, String, String, Decimal)> = sqlx::query_as(
        "select entry_id, account_id, currency, direction, amount from entry
         where account_id = $1 and ledger_seq <= $2 order by account_seq",
    )
    .bind(account_id)
    .bind(as_of)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(entry_id, account_id, currency, direction, amount)| {
            Ok(EntryFigures {
                entry_id,
                account_id,
                currency,
                direction: Direction::parse(&direction).ok_or_else(|| {
                    ApiError::internal(anyhow::anyhow!("unknown direction {direction:?}"))
                })?,
                amount,
            })
        })
        .collect()
}

/// Where the projection stands.
#[derive(Debug, Clone, Default)]
pub struct Position {
    /// Highest applied ledger sequence (0 when nothing is applied).
    pub applied_ledger_seq: i64,
    pub last_applied_at: Option<DateTime<Utc>>,
    pub pending_entries: i64,
    /// When the oldest waiting entry was posted.
    pub oldest_pending_post_time: Option<DateTime<Utc>>,
}

pub async fn position(conn: &mut PgConnection) -> Result<Position, ApiError> {
    let (applied, last_applied_at): (Option<i64>, Option<DateTime<Utc>>) =
        sqlx::query_as("select max(ledger_seq), max(applied_at) from entry")
            .fetch_one(&mut *conn)
            .await?;
    let (pending, oldest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("select count(*), min(post_time) from pending_entry")
            .fetch_one(&mut *conn)
            .await?;
    Ok(Position {
        applied_ledger_seq: applied.unwrap_or(0),
        last_applied_at,
        pending_entries: pending,
        oldest_pending_post_time: oldest,
    })
}

/// A stored run, without its mismatches.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub reconciliation_id: Uuid,
    pub as_of_ledger_seq: i64,
    pub ledger_head_seq: i64,
    pub trigger: String,
    pub clean: bool,
    pub accounts_checked: i64,
    pub entries_checked: i64,
    pub lag: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

const RUN_COLUMNS: &str = "reconciliation_id, as_of_ledger_seq, ledger_head_seq, trigger, clean,
    accounts_checked, entries_checked, lag, created_at";

pub async fn insert(
    conn: &mut PgConnection,
    run: &RunRow,
    mismatches: &[Mismatch],
) -> Result<(), ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "insert into reconciliation ({RUN_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )))
    .bind(run.reconciliation_id)
    .bind(run.as_of_ledger_seq)
    .bind(run.ledger_head_seq)
    .bind(&run.trigger)
    .bind(run.clean)
    .bind(run.accounts_checked)
    .bind(run.entries_checked)
    .bind(&run.lag)
    .bind(run.created_at)
    .execute(&mut *conn)
    .await?;
    if mismatches.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into reconciliation_mismatch (reconciliation_id, position, kind, account_id, currency,
             entry_id, ledger_value, read_model_value, detail)
         select $1, m.position, m.kind, m.account_id, m.currency, m.entry_id, m.ledger_value,
                m.read_model_value, m.detail
         from unnest($2::int[], $3::text[], $4::uuid[], $5::text[], $6::uuid[], $7::text[],
                     $8::text[], $9::text[])
              as m (position, kind, account_id, currency, entry_id, ledger_value, read_model_value, detail)",
    )
    .bind(run.reconciliation_id)
    .bind((0..mismatches.len() as i32).collect::<Vec<_>>())
    .bind(mismatches.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>())
    .bind(mismatches.iter().map(|m| m.account_id).collect::<Vec<_>>())
    .bind(mismatches.iter().map(|m| m.currency.as_str()).collect::<Vec<_>>())
    .bind(mismatches.iter().map(|m| m.entry_id).collect::<Vec<_>>())
    .bind(mismatches.iter().map(|m| m.ledger_value.as_str()).collect::<Vec<_>>())
    .bind(mismatches.iter().map(|m| m.read_model_value.as_str()).collect::<Vec<_>>())
    .bind(mismatches.iter().map(|m| m.detail.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get(
    conn: &mut PgConnection,
    reconciliation_id: Uuid,
) -> Result<(RunRow, Vec<Mismatch>), ApiError> {
    let run: RunRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RUN_COLUMNS} from reconciliation where reconciliation_id = $1"
    )))
    .bind(reconciliation_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| {
        ApiError::not_found(
            RECONCILIATION_NOT_FOUND,
            format!("reconciliation {reconciliation_id} not found"),
        )
    })?;
    let mismatches = mismatches(conn, reconciliation_id).await?;
    Ok((run, mismatches))
}

async fn mismatches(
    conn: &mut PgConnection,
    reconciliation_id: Uuid,
) -> Result<Vec<Mismatch>, ApiError> {
    type Row = (
        String,
        Option<Uuid>,
        String,
        Option<Uuid>,
        String,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select kind, account_id, currency, entry_id, ledger_value, read_model_value, detail
         from reconciliation_mismatch where reconciliation_id = $1 order by position",
    )
    .bind(reconciliation_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(
            |(kind, account_id, currency, entry_id, ledger_value, read_model_value, detail)| {
                Ok(Mismatch {
                    kind: MismatchKind::parse(&kind).ok_or_else(|| {
                        ApiError::internal(anyhow::anyhow!("unknown mismatch kind {kind:?}"))
                    })?,
                    account_id,
                    currency,
                    entry_id,
                    ledger_value,
                    read_model_value,
                    detail,
                })
            },
        )
        .collect()
}

/// Newest first, after the cursor `(created_at, reconciliation_id)`.
pub async fn list(
    conn: &mut PgConnection,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<(RunRow, Vec<Mismatch>)>, ApiError> {
    let runs: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RUN_COLUMNS} from reconciliation
         where ($1::timestamptz is null or (created_at, reconciliation_id) < ($1, $2))
         order by created_at desc, reconciliation_id desc limit $3"
    )))
    .bind(after.map(|(time, _)| time))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let found = mismatches(conn, run.reconciliation_id).await?;
        out.push((run, found));
    }
    Ok(out)
}
