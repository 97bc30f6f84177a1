//! SQL for the `transaction` schema. The pool is private: a create writes
//! with one statement ([`TransactionStore::create_fresh`]) or, when its key is
//! held, through [`TransactionStore::idempotent`]; the consumer gets a
//! transaction from the queue runner and writes a batch with one statement
//! ([`write_batch`]); so a state change, its history row and its outgoing
//! messages commit together.
//!
//! Every status change is announced with `pg_notify('transaction_status',
//! '<id> <new status>')` in the transaction that makes it, so waiters in any replica learn of it once
//! it is committed.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use corebank_platform::error::{ApiError, constraint};
use corebank_platform::idempotency::{self, FreshClaim, IdempotencyConfig};
use corebank_platform::messaging::{self, OutboxKey, OutboxRows, OutgoingMessage};
use corebank_platform::money::Currency;
use corebank_platform::paging::Page;
use futures::future::BoxFuture;
use rust_decimal::Decimal;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::{NewTransaction, Transaction, TransactionKind, TransactionStatus};

mod commands;

pub use commands::{Change, LoggedCommand, lock_all, logged_commands, write_batch};

pub const TRANSACTION_NOT_FOUND: &str = "TRANSACTION_NOT_FOUND";

/// The LISTEN/NOTIFY channel of status changes; the payload is the transaction id.
pub const STATUS_CHANNEL: &str = "transaction_status";

#[derive(Debug, Clone)]
pub struct TransactionStore {
    pool: PgPool,
    idempotency: IdempotencyConfig,
    /// The outbox whose relay, when it runs in this process, takes the
    /// creates' events in memory (see `waking_relay_after`).
    outbox: Option<OutboxKey>,
}

#[derive(sqlx::FromRow)]
struct TransactionRow {
    transaction_id: Uuid,
    kind: String,
    status: String,
    source_account_id: Option<Uuid>,
    destination_account_id: Option<Uuid>,
    currency: String,
    amount: Decimal,
    description: String,
    failure_reason: String,
    failure_detail: String,
    journal_id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    last_change: i64,
    #[sqlx(flatten)]
    transaction: TransactionRow,
}

impl TryFrom<TransactionRow> for Transaction {
    type Error = ApiError;

    fn try_from(row: TransactionRow) -> Result<Self, ApiError> {
        Ok(Transaction {
            transaction_id: row.transaction_id,
            kind: TransactionKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?,
            status: status(&row.status)?,
            source_account_id: row.source_account_id,
            destination_account_id: row.destination_account_id,
            currency: Currency::parse(&row.currency)
                .map_err(|_| corrupt("currency", &row.currency))?,
            amount: row.amount,
            description: row.description,
            failure_reason: row.failure_reason,
            failure_detail: row.failure_detail,
            journal_id: row.journal_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn status(text: &str) -> Result<TransactionStatus, ApiError> {
    TransactionStatus::parse(text).ok_or_else(|| corrupt("status", text))
}

fn corrupt(column: &str, value: &str) -> ApiError {
    ApiError::internal(anyhow::anyhow!(
        "unknown transaction {column} {value:?} in database"
    ))
}

fn not_found(transaction_id: Uuid) -> ApiError {
    ApiError::not_found(
        TRANSACTION_NOT_FOUND,
        format!("transaction {transaction_id} not found"),
    )
}

const COLUMNS: &str = "transaction_id, kind, status, source_account_id, destination_account_id, currency, amount, \
                       description, failure_reason, failure_detail, journal_id, created_at, updated_at";

/// One row of the status history, as watchers replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub change_id: i64,
    pub to_status: TransactionStatus,
    pub created_at: DateTime<Utc>,
}

/// What ListTransactions filters on, besides the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// Source or destination.
    pub account_id: Uuid,
    pub status: Option<TransactionStatus>,
    /// Created at or after.
    pub start_time: Option<DateTime<Utc>>,
    /// Created before.
    pub end_time: Option<DateTime<Utc>>,
}

impl ListFilter {
    /// A stable summary of every filter, so a page token is only honoured
    /// with the query it was issued for.
    pub fn summary(&self) -> String {
        let time = |time: Option<DateTime<Utc>>| {
            time.map(|t| t.timestamp_micros().to_string())
                .unwrap_or_default()
        };
        format!(
            "account_id={};status={};start_time={};end_time={}",
            self.account_id,
            self.status.map(TransactionStatus::as_str).unwrap_or("any"),
            time(self.start_time),
            time(self.end_time)
        )
    }
}

/// The keyset cursor of a list: the last row's creation time and id.
pub fn cursor(transaction: &Transaction) -> String {
    format!(
        "{}_{}",
        transaction.created_at.timestamp_micros(),
        transaction.transaction_id
    )
}

fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('_')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

impl TransactionStore {
    pub fn new(pool: PgPool, idempotency: IdempotencyConfig) -> Self {
        Self {
            pool,
            idempotency,
            outbox: None,
        }
    }

    /// The same store, its creates handing their events to the relay of
    /// `outbox` in this process instead of notifying it.
    pub fn with_outbox(self, outbox: Option<OutboxKey>) -> Self {
        Self { outbox, ..self }
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

    /// Stores the new PENDING `transaction`, the first row of its history
    /// and its `event`, and claims `key` with `response`, in one statement
    /// (one round trip, no explicit transaction). `false` when the key is
    /// held (used before, or by a request still running): nothing was written
    /// and the caller runs [`Self::idempotent`], which answers as the key says.
    pub async fn create_fresh(
        &self,
        key: &str,
        fingerprint: &[u8],
        transaction: &Transaction,
        response: &impl prost::Message,
        event: OutgoingMessage,
    ) -> Result<bool, ApiError> {
        static STATEMENT: LazyLock<String> = LazyLock::new(|| {
            let transaction = FreshClaim::PARAMETERS + 1;
            let outbox = transaction + 8;
            format!(
                "with {claim}, inserted as (
                     insert into transaction (transaction_id, kind, status, source_account_id,
                                              destination_account_id, currency, amount, description,
                                              created_at, updated_at)
                     select ${t0}, ${t1}, 'pending', ${t2}, ${t3}, ${t4}, ${t5}, ${t6}, ${t7}, ${t7}
                      where exists (select 1 from claimed)
                     returning transaction_id, created_at
                 ), history as (
                     insert into transaction_status_change (transaction_id, from_status, to_status, created_at)
                     select transaction_id, null, 'pending', created_at from inserted
                 ), {outbox}
                 select exists (select 1 from claimed), (select count(*) from sent_woken)",
                claim = FreshClaim::cte("claimed", 1),
                outbox = OutboxRows::cte("sent", outbox, "exists (select 1 from claimed)"),
                t0 = transaction,
                t1 = transaction + 1,
                t2 = transaction + 2,
                t3 = transaction + 3,
                t4 = transaction + 4,
                t5 = transaction + 5,
                t6 = transaction + 6,
                t7 = transaction + 7,
            )
        });
        let claim = FreshClaim::new(
            key,
            fingerprint,
            response,
            transaction.created_at,
            self.idempotency,
        );
        let query = claim
            .bind(sqlx::query(sqlx::AssertSqlSafe(STATEMENT.as_str())))
            .bind(transaction.transaction_id)
            .bind(transaction.kind.as_str())
            .bind(transaction.source_account_id)
            .bind(transaction.destination_account_id)
            .bind(transaction.currency.code())
            .bind(transaction.amount)
            .bind(&transaction.description)
            .bind(transaction.created_at);
        // The rows are bound inside the scope: binding is where they are
        // noted for the relay, and outside it they would NOTIFY instead.
        let statement = async {
            OutboxRows::new(vec![event])
                .bind(query)
                .fetch_one(&self.pool)
                .await
        };
        let row = messaging::waking_relay_after(self.outbox.as_deref(), statement)
            .await
            .map_err(refused)?;
        Ok(row.try_get(0)?)
    }

    pub async fn get(&self, transaction_id: Uuid) -> Result<Transaction, ApiError> {
        let row: Option<TransactionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from transaction where transaction_id = $1"
        )))
        .bind(transaction_id)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| not_found(transaction_id))?.try_into()
    }

    /// The transaction and the id of its latest status change, read in one
    /// statement so they agree: a watcher starts from there.
    pub async fn snapshot(&self, transaction_id: Uuid) -> Result<(Transaction, i64), ApiError> {
        let row: Option<SnapshotRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select coalesce((select max(c.transaction_status_change_id) from transaction_status_change c
                              where c.transaction_id = t.transaction_id), 0) as last_change, {COLUMNS}
             from transaction t where transaction_id = $1"
        )))
        .bind(transaction_id)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| not_found(transaction_id))?;
        Ok((row.transaction.try_into()?, row.last_change))
    }

    /// The status changes after `after`, oldest first, and the transaction as
    /// it is now (read after them, so it is at least as new as the last one).
    pub async fn changes_after(
        &self,
        transaction_id: Uuid,
        after: i64,
    ) -> Result<(Vec<StatusChange>, Transaction), ApiError> {
        let rows: Vec<(i64, String, DateTime<Utc>)> = sqlx::query_as(
            "select transaction_status_change_id, to_status, created_at from transaction_status_change
             where transaction_id = $1 and transaction_status_change_id > $2
             order by transaction_status_change_id",
        )
        .bind(transaction_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let changes = rows
            .into_iter()
            .map(|(change_id, to_status, created_at)| {
                Ok(StatusChange {
                    change_id,
                    to_status: status(&to_status)?,
                    created_at,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let current = self.get(transaction_id).await?;
        Ok((changes, current))
    }

    /// Transactions touching an account, newest first. Each side of the
    /// account has its own index, so the two are read separately and merged.
    pub async fn list(
        &self,
        filter: &ListFilter,
        page: &Page,
    ) -> Result<Vec<Transaction>, ApiError> {
        let after = page
            .after
            .as_deref()
            .map(|text| {
                parse_cursor(text).ok_or_else(|| {
                    ApiError::invalid_field("page_token", "is not a token issued for this query")
                })
            })
            .transpose()?;
        let conditions = "($2::text is null or status = $2)
              and ($3::timestamptz is null or created_at >= $3)
              and ($4::timestamptz is null or created_at < $4)
              and ($5::timestamptz is null or (created_at, transaction_id) < ($5, $6))";
        let order = "order by created_at desc, transaction_id desc limit $7";
        let rows: Vec<TransactionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from (
                 (select {COLUMNS} from transaction where source_account_id = $1 and {conditions} {order})
                 union all
                 (select {COLUMNS} from transaction where destination_account_id = $1 and {conditions} {order})
             ) as touching
             {order}"
        )))
        .bind(filter.account_id)
        .bind(filter.status.map(TransactionStatus::as_str))
        .bind(filter.start_time)
        .bind(filter.end_time)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(page.fetch_limit())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Transaction::try_from).collect()
    }

    /// A dedicated connection listening to [`STATUS_CHANNEL`].
    pub async fn status_listener(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(STATUS_CHANNEL).await?;
        Ok(listener)
    }

    /// Forgets idempotency keys past their retention, and outbox and inbox rows
    /// older than `keep_messages_since`.
    pub async fn purge(
        &self,
        now: DateTime<Utc>,
        keep_messages_since: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        idempotency::purge_expired(&self.pool, now).await?;
        let mut conn = self.pool.acquire().await?;
        messaging::purge_sent(&mut conn, keep_messages_since).await?;
        messaging::purge_inbox(&mut conn, keep_messages_since).await?;
        Ok(())
    }
}

/// Stores a new PENDING transaction and the first row of its history.
#[tracing::instrument(skip_all, fields(transaction_id = %transaction_id, kind = new.kind.as_str()), err)]
pub async fn insert(
    conn: &mut PgConnection,
    transaction_id: Uuid,
    new: &NewTransaction,
    now: DateTime<Utc>,
) -> Result<Transaction, ApiError> {
    // The creation is history too (one statement with the row), but nobody
    // can be waiting for it yet: no notify.
    let row: TransactionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with inserted as (
             insert into transaction (transaction_id, kind, status, source_account_id, destination_account_id,
                                      currency, amount, description, created_at, updated_at)
             values ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $8)
             returning {COLUMNS}
         ), history as (
             insert into transaction_status_change (transaction_id, from_status, to_status, created_at)
             select transaction_id, null, 'pending', created_at from inserted
         )
         select * from inserted"
    )))
    .bind(transaction_id)
    .bind(new.kind.as_str())
    .bind(new.source_account_id)
    .bind(new.destination_account_id)
    .bind(new.currency.code())
    .bind(new.amount)
    .bind(&new.description)
    .bind(now)
    .fetch_one(&mut *conn)
    .await
    .map_err(refused)?;
    row.try_into()
}

/// A write the schema refused: a validated transaction breaking a
/// `transaction_*` constraint is a bug, not the caller's mistake.
fn refused(error: sqlx::Error) -> ApiError {
    match constraint(&error) {
        Some(name) if name.starts_with("transaction_") => ApiError::internal(anyhow::anyhow!(
            "validated transaction refused by {name}: {error}"
        )),
        _ => ApiError::from(error),
    }
}
