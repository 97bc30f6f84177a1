//! Exports and the keys they are signed with. An export's files are kept
//! byte for byte, so any replica serves the same download.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::export::ExportRow;

/// The reason code of an unknown export.
pub const EXPORT_NOT_FOUND: &str = "EXPORT_NOT_FOUND";

/// Registers the public key new exports are signed with (once per key).
pub async fn register_key(
    conn: &mut PgConnection,
    key_id: &str,
    public_key_pem: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query(
        "insert into signing_key (key_id, algorithm, public_key_pem, first_used_at)
         values ($1, 'ed25519', $2, $3) on conflict (key_id) do nothing",
    )
    .bind(key_id)
    .bind(public_key_pem)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub key_id: String,
    pub algorithm: String,
    pub public_key_pem: String,
    pub first_used_at: DateTime<Utc>,
}

/// Every key ever used, oldest first.
pub async fn keys(conn: &mut PgConnection) -> Result<Vec<KeyRow>, ApiError> {
    Ok(sqlx::query_as(
        "select key_id, algorithm, public_key_pem, first_used_at from signing_key
         order by first_used_at, key_id",
    )
    .fetch_all(&mut *conn)
    .await?)
}

#[derive(Debug, sqlx::FromRow)]
struct RowOfExport {
    ledger_seq: i64,
    journal_id: Uuid,
    entry_id: Uuid,
    transaction_id: String,
    kind: String,
    post_time: DateTime<Utc>,
    account_id: Uuid,
    account_seq: i64,
    counterparty_account_id: Option<Uuid>,
    currency: String,
    direction: String,
    amount: Decimal,
    ledger_balance_after: Decimal,
}

/// Every entry posted in [start, end) (of `scope`, or all accounts when it
/// is empty), in ledger order.
pub async fn rows(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    scope: &[Uuid],
) -> Result<Vec<ExportRow>, ApiError> {
    let rows: Vec<RowOfExport> = sqlx::query_as(
        "select ledger_seq, journal_id, entry_id, transaction_id, kind, post_time, account_id,
                account_seq, counterparty_account_id, currency, direction, amount, ledger_balance_after
         from entry
         where post_time >= $1 and post_time < $2
           and (cardinality($3::uuid[]) = 0 or account_id = any($3))
         order by ledger_seq, account_id, entry_id",
    )
    .bind(start)
    .bind(end)
    .bind(scope)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ExportRow {
            ledger_seq: row.ledger_seq,
            journal_id: row.journal_id,
            entry_id: row.entry_id,
            transaction_id: row.transaction_id,
            kind: row.kind,
            post_time: row.post_time,
            account_id: row.account_id,
            account_seq: row.account_seq,
            counterparty_account_id: row.counterparty_account_id,
            currency: row.currency,
            direction: row.direction,
            amount: row.amount,
            // The ledger's own figure: an export shows the ledger, not our sum.
            balance_after: row.ledger_balance_after,
        })
        .collect())
}

/// Entries per account posted in [start, end), as the read model has them.
pub async fn counts(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<BTreeMap<Uuid, i64>, ApiError> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select account_id, count(*) from entry where post_time >= $1 and post_time < $2
         group by account_id",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The export a new one of `scope` starting at `start` chains to: the latest
/// of the same scope that ended by then.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Previous {
    pub export_id: Uuid,
    pub chain_head: String,
    pub period_end: DateTime<Utc>,
}

pub async fn previous(
    conn: &mut PgConnection,
    scope: &[Uuid],
    start: DateTime<Utc>,
) -> Result<Option<Previous>, ApiError> {
    Ok(sqlx::query_as(
        "select export_id, chain_head, period_end from export
         where scope_accounts = $1 and period_end <= $2
         order by period_end desc, created_at, export_id
         limit 1",
    )
    .bind(scope)
    .bind(start)
    .fetch_optional(&mut *conn)
    .await?)
}

/// An export as stored (without its files).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRecord {
    pub export_id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub scope_accounts: Vec<Uuid>,
    pub row_count: i64,
    pub first_ledger_seq: i64,
    pub last_ledger_seq: i64,
    pub chain_head: String,
    pub merkle_root: String,
    pub previous_chain_head: String,
    pub previous_export_id: Option<Uuid>,
    pub key_id: String,
    pub manifest: Vec<u8>,
    pub jsonl_size: i64,
    pub csv_size: i64,
    pub created_at: DateTime<Utc>,
}

const RECORD_COLUMNS: &str = "export_id, period_start, period_end, scope_accounts, row_count,
    first_ledger_seq, last_ledger_seq, chain_head, merkle_root, previous_chain_head,
    previous_export_id, key_id, manifest, length(jsonl)::bigint as jsonl_size,
    length(csv)::bigint as csv_size, created_at";

/// The four files of an export.
#[derive(Debug, Clone)]
pub struct Files {
    pub jsonl: Vec<u8>,
    pub csv: Vec<u8>,
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
}

pub async fn insert(
    conn: &mut PgConnection,
    record: &ExportRecord,
    files: &Files,
) -> Result<(), ApiError> {
    sqlx::query(
        "insert into export (export_id, period_start, period_end, scope_accounts, row_count,
             first_ledger_seq, last_ledger_seq, chain_head, merkle_root, previous_chain_head,
             previous_export_id, key_id, manifest, signature, jsonl, csv, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(record.export_id)
    .bind(record.period_start)
    .bind(record.period_end)
    .bind(&record.scope_accounts)
    .bind(record.row_count)
    .bind(record.first_ledger_seq)
    .bind(record.last_ledger_seq)
    .bind(&record.chain_head)
    .bind(&record.merkle_root)
    .bind(&record.previous_chain_head)
    .bind(record.previous_export_id)
    .bind(&record.key_id)
    .bind(&files.manifest)
    .bind(&files.signature)
    .bind(&files.jsonl)
    .bind(&files.csv)
    .bind(record.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut PgConnection, export_id: Uuid) -> Result<ExportRecord, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RECORD_COLUMNS} from export where export_id = $1"
    )))
    .bind(export_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(EXPORT_NOT_FOUND, format!("export {export_id} not found")))
}

pub async fn files(conn: &mut PgConnection, export_id: Uuid) -> Result<Files, ApiError> {
    type FileRow = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
    let row: Option<FileRow> =
        sqlx::query_as("select jsonl, csv, manifest, signature from export where export_id = $1")
            .bind(export_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (jsonl, csv, manifest, signature) = row.ok_or_else(|| {
        ApiError::not_found(EXPORT_NOT_FOUND, format!("export {export_id} not found"))
    })?;
    Ok(Files {
        jsonl,
        csv,
        manifest,
        signature,
    })
}

/// Newest first, after the cursor `(created_at, export_id)`.
pub async fn list(
    conn: &mut PgConnection,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ExportRecord>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {RECORD_COLUMNS} from export
         where ($1::timestamptz is null or (created_at, export_id) < ($1, $2))
         order by created_at desc, export_id desc limit $3"
    )))
    .bind(after.map(|(time, _)| time))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
