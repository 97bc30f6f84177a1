//! SQL of the ledger feed: entries in ledger order and totals as of one
//! ledger sequence. Read only: each request reads in one repeatable-read,
//! read-only transaction, so the head, the page and the totals it answers
//! with are one snapshot of the ledger.

use chrono::{DateTime, Utc};
use corebank_platform::error::ApiError;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::AccountStore;
use super::rows::{currency, known};
use crate::domain::feed::{
    AccountTotals, CurrencyTotals, EntryPage, EntryQuery, LedgerEntry, LedgerSummary, SummaryQuery,
    resolve_as_of, resolve_up_to,
};
use crate::domain::{Direction, JournalKind};

#[derive(sqlx::FromRow)]
struct LedgerEntryRow {
    entry_id: Uuid,
    journal_id: Uuid,
    ledger_seq: i64,
    account_id: Uuid,
    account_seq: i64,
    counterparty_account_id: Option<Uuid>,
    currency: String,
    direction: String,
    amount: Decimal,
    balance_after: Decimal,
    kind: String,
    reference: String,
    posted_at: DateTime<Utc>,
}

impl TryFrom<LedgerEntryRow> for LedgerEntry {
    type Error = ApiError;

    fn try_from(row: LedgerEntryRow) -> Result<Self, ApiError> {
        Ok(LedgerEntry {
            entry_id: row.entry_id,
            journal_id: row.journal_id,
            ledger_seq: row.ledger_seq,
            account_id: row.account_id,
            account_seq: row.account_seq,
            counterparty_account_id: row.counterparty_account_id,
            currency: currency(&row.currency)?,
            direction: known("direction", &row.direction, Direction::parse)?,
            amount: row.amount,
            balance_after: row.balance_after,
            kind: known("journal kind", &row.kind, JournalKind::parse)?,
            reference: row.reference,
            posted_at: row.posted_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AccountTotalsRow {
    account_id: Uuid,
    currency: String,
    entry_count: i64,
    balance: Decimal,
    last_account_seq: i64,
}

#[derive(sqlx::FromRow)]
struct CurrencyTotalsRow {
    currency: String,
    debits: Decimal,
    credits: Decimal,
    entry_count: i64,
}

/// The highest journal sequence, 0 for an empty ledger.
async fn head(conn: &mut PgConnection) -> Result<i64, ApiError> {
    Ok(
        sqlx::query_scalar("select coalesce(max(ledger_seq), 0) from journal")
            .fetch_one(&mut *conn)
            .await?,
    )
}

impl AccountStore {
    /// A page of entries in ledger order (journal sequence, then account id),
    /// keyset-paged on that order.
    #[tracing::instrument(skip_all, fields(after = query.after_ledger_seq, up_to = query.up_to_ledger_seq), err)]
    pub async fn list_ledger_entries(&self, query: &EntryQuery) -> Result<EntryPage, ApiError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await?;
        let head = head(&mut tx).await?;
        let up_to = resolve_up_to(
            query.up_to_ledger_seq,
            query.cursor.map(|cursor| cursor.up_to),
            head,
        );
        // The counterparty is the other leg of a two-legged journal; a
        // journal with more legs has none.
        let rows: Vec<LedgerEntryRow> = sqlx::query_as(
            "select e.entry_id, e.journal_id, j.ledger_seq, e.account_id, e.account_seq,
                    legs.counterparty_account_id, e.currency, e.direction, e.amount, e.balance_after,
                    j.kind, j.reference, j.created_at as posted_at
             from entry e
             join journal j on j.journal_id = e.journal_id
             cross join lateral (
                 select case when count(*) = 2
                             then (array_agg(o.account_id) filter (where o.entry_id <> e.entry_id))[1]
                        end as counterparty_account_id
                 from entry o where o.journal_id = e.journal_id
             ) legs
             where j.ledger_seq > $1 and j.ledger_seq <= $2
               and ($3::uuid is null or e.account_id = $3)
               and ($4::bigint is null or (j.ledger_seq, e.account_id, e.entry_id) > ($4, $5::uuid, $6::uuid))
             order by j.ledger_seq, e.account_id, e.entry_id
             limit $7",
        )
        .bind(query.after_ledger_seq)
        .bind(up_to)
        .bind(query.account_id)
        .bind(query.cursor.map(|cursor| cursor.ledger_seq))
        .bind(query.cursor.map(|cursor| cursor.account_id))
        .bind(query.cursor.map(|cursor| cursor.entry_id))
        .bind(query.limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(EntryPage {
            entries: rows
                .into_iter()
                .map(LedgerEntry::try_from)
                .collect::<Result<_, _>>()?,
            up_to_ledger_seq: up_to,
            head_ledger_seq: head,
        })
    }

    /// Per-account totals (a page, by account id) and per-currency totals of
    /// the entries of journals up to the resolved sequence, posted within the
    /// window when one is given.
    #[tracing::instrument(skip_all, fields(as_of = query.as_of_ledger_seq), err)]
    pub async fn ledger_summary(&self, query: &SummaryQuery) -> Result<LedgerSummary, ApiError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await?;
        let head = head(&mut tx).await?;
        let as_of = resolve_as_of(
            query.as_of_ledger_seq,
            query.cursor.map(|cursor| cursor.as_of),
            head,
        );
        const COUNTED: &str = "from entry e
             join journal j on j.journal_id = e.journal_id
             where j.ledger_seq <= $1
               and ($2::timestamptz is null or j.created_at >= $2)
               and ($3::timestamptz is null or j.created_at < $3)";
        let accounts: Vec<AccountTotalsRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select e.account_id, e.currency, count(*) as entry_count,
                    sum(case e.direction when 'credit' then e.amount else -e.amount end) as balance,
                    max(e.account_seq) as last_account_seq
             {COUNTED}
               and ($4::uuid is null or e.account_id > $4)
             group by e.account_id, e.currency
             order by e.account_id
             limit $5"
        )))
        .bind(as_of)
        .bind(query.posted_from)
        .bind(query.posted_before)
        .bind(query.cursor.map(|cursor| cursor.account_id))
        .bind(query.limit)
        .fetch_all(&mut *tx)
        .await?;
        let currencies: Vec<CurrencyTotalsRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select e.currency,
                    coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0) as debits,
                    coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as credits,
                    count(*) as entry_count
             {COUNTED}
             group by e.currency
             order by e.currency"
        )))
        .bind(as_of)
        .bind(query.posted_from)
        .bind(query.posted_before)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(LedgerSummary {
            as_of_ledger_seq: as_of,
            head_ledger_seq: head,
            accounts: accounts
                .into_iter()
                .map(|row| {
                    Ok(AccountTotals {
                        account_id: row.account_id,
                        currency: currency(&row.currency)?,
                        entry_count: row.entry_count,
                        balance: row.balance,
                        last_account_seq: row.last_account_seq,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
            currencies: currencies
                .into_iter()
                .map(|row| {
                    Ok(CurrencyTotals {
                        currency: currency(&row.currency)?,
                        debits: row.debits,
                        credits: row.credits,
                        entry_count: row.entry_count,
                    })
                })
                .collect::<Result<_, ApiError>>()?,
        })
    }
}
