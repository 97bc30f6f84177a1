//! Statements and daily totals, read from the projection.
//!
//! A statement covers the entries posted in [start, end), widened to a run of
//! consecutive account sequences, so that the opening balance (the running
//! balance before its first line) plus its lines is its closing balance by
//! construction, even when two postings' clocks disagree by a few
//! microseconds at the boundary.

use chrono::{DateTime, NaiveDate, Utc};
use corebank_platform::ApiError;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

/// The reason code of an account the read model has never heard of.
pub const ACCOUNT_NOT_FOUND: &str = "ACCOUNT_NOT_FOUND";

/// A statement's figures for the whole period.
#[derive(Debug, Clone)]
pub struct Period {
    pub currency: String,
    pub opening_balance: Decimal,
    pub closing_balance: Decimal,
    pub total_debits: Decimal,
    pub total_credits: Decimal,
    pub line_count: i64,
    /// The account sequences of the first and last line, when any.
    pub seq_range: Option<(i64, i64)>,
}

/// One statement line.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Line {
    pub entry_id: Uuid,
    pub journal_id: Uuid,
    pub ledger_seq: i64,
    pub account_seq: i64,
    pub counterparty_account_id: Option<Uuid>,
    pub direction: String,
    pub amount: Decimal,
    pub running_balance: Decimal,
    pub kind: String,
    pub transaction_id: String,
    pub post_time: DateTime<Utc>,
}

/// The statement's period figures of `account_id` over [start, end).
pub async fn period(
    conn: &mut PgConnection,
    account_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Period, ApiError> {
    let currency: Option<String> = sqlx::query_scalar(
        "select currency from account_cursor where account_id = $1
         union all
         select currency from account_profile where account_id = $1 and currency is not null
         limit 1",
    )
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(currency) = currency else {
        return Err(ApiError::not_found(
            ACCOUNT_NOT_FOUND,
            format!("account {account_id} not found"),
        ));
    };
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "select min(account_seq), max(account_seq) from entry
         where account_id = $1 and post_time >= $2 and post_time < $3",
    )
    .bind(account_id)
    .bind(start)
    .bind(end)
    .fetch_one(&mut *conn)
    .await?;
    let (Some(first), Some(last)) = (first, last) else {
        // No line: opening = closing = the balance after the last earlier entry.
        let before: Option<Decimal> = sqlx::query_scalar(
            "select running_balance from entry where account_id = $1 and post_time < $2
             order by account_seq desc limit 1",
        )
        .bind(account_id)
        .bind(start)
        .fetch_optional(&mut *conn)
        .await?;
        let balance = before.unwrap_or(Decimal::ZERO);
        return Ok(Period {
            currency,
            opening_balance: balance,
            closing_balance: balance,
            total_debits: Decimal::ZERO,
            total_credits: Decimal::ZERO,
            line_count: 0,
            seq_range: None,
        });
    };
    let (debits, credits, count, opening, closing): (
        Option<Decimal>,
        Option<Decimal>,
        i64,
        Option<Decimal>,
        Option<Decimal>,
    ) = sqlx::query_as(
        "select sum(amount) filter (where direction = 'debit'),
                sum(amount) filter (where direction = 'credit'),
                count(*),
                (select running_balance - case direction when 'credit' then amount else -amount end
                 from entry where account_id = $1 and account_seq = $2),
                (select running_balance from entry where account_id = $1 and account_seq = $3)
         from entry where account_id = $1 and account_seq between $2 and $3",
    )
    .bind(account_id)
    .bind(first)
    .bind(last)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Period {
        currency,
        opening_balance: opening.unwrap_or(Decimal::ZERO),
        closing_balance: closing.unwrap_or(Decimal::ZERO),
        total_debits: debits.unwrap_or(Decimal::ZERO),
        total_credits: credits.unwrap_or(Decimal::ZERO),
        line_count: count,
        seq_range: Some((first, last)),
    })
}

/// A page of lines with account sequences in `range`, after `after`.
pub async fn lines(
    conn: &mut PgConnection,
    account_id: Uuid,
    range: (i64, i64),
    after: i64,
    limit: i64,
) -> Result<Vec<Line>, ApiError> {
    Ok(sqlx::query_as(
        "select entry_id, journal_id, ledger_seq, account_seq, counterparty_account_id, direction,
                amount, running_balance, kind, transaction_id, post_time
         from entry
         where account_id = $1 and account_seq between $2 and $3 and account_seq > $4
         order by account_seq limit $5",
    )
    .bind(account_id)
    .bind(range.0)
    .bind(range.1)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// One account's day.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DailyTotalRow {
    pub account_id: Uuid,
    pub day: NaiveDate,
    pub currency: String,
    pub debits: Decimal,
    pub credits: Decimal,
    pub entry_count: i64,
    pub closing_balance: Decimal,
}

/// One currency's day, bank-wide.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CurrencyDayRow {
    pub currency: String,
    pub day: NaiveDate,
    pub debits: Decimal,
    pub credits: Decimal,
    pub entry_count: i64,
}

/// What daily totals are asked for.
#[derive(Debug, Clone, Default)]
pub struct DailyFilter {
    pub account_id: Option<Uuid>,
    pub currency: Option<String>,
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
}

/// Daily totals by day, then account, after the cursor `(day, account)`.
pub async fn daily_totals(
    conn: &mut PgConnection,
    filter: &DailyFilter,
    after: Option<(NaiveDate, Uuid)>,
    limit: i64,
) -> Result<Vec<DailyTotalRow>, ApiError> {
    Ok(sqlx::query_as(
        "select account_id, day, currency, debits, credits, entry_count, closing_balance
         from daily_total
         where ($1::uuid is null or account_id = $1)
           and ($2::text is null or currency = $2)
           and ($3::date is null or day >= $3)
           and ($4::date is null or day <= $4)
           and ($5::date is null or (day, account_id) > ($5, $6))
         order by day, account_id
         limit $7",
    )
    .bind(filter.account_id)
    .bind(&filter.currency)
    .bind(filter.start)
    .bind(filter.end)
    .bind(after.map(|(day, _)| day))
    .bind(after.map(|(_, account)| account))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Bank-wide totals per currency for `days` (every account).
pub async fn bank_totals(
    conn: &mut PgConnection,
    days: &[NaiveDate],
    currency: Option<&str>,
) -> Result<Vec<CurrencyDayRow>, ApiError> {
    Ok(sqlx::query_as(
        "select currency, day, sum(debits) as debits, sum(credits) as credits,
                sum(entry_count)::bigint as entry_count
         from daily_total
         where day = any($1) and ($2::text is null or currency = $2)
         group by currency, day
         order by day, currency",
    )
    .bind(days)
    .bind(currency)
    .fetch_all(&mut *conn)
    .await?)
}
