//! Applying the ledger's entries to the read model, per account in sequence
//! order: the next entry is applied (with every waiting successor it
//! unblocks), an earlier one is a duplicate, a later one waits in
//! `pending_entry`. The account's cursor row is locked first, so concurrent
//! consumers (or replicas) serialise per account; a journal's entries are
//! offered in account id order, as the ledger locks them, so two consumers
//! never wait on each other in a cycle.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Direction, Offer, PostedEntry, offer};

/// The columns of `entry` and `pending_entry` both have, in this order.
const ENTRY_COLUMNS: &str = "entry_id, journal_id, ledger_seq, account_id, account_seq,
    counterparty_account_id, currency, direction, amount, ledger_balance_after, kind,
    transaction_id, post_time";

/// A row of `entry` or `pending_entry`, as read back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub entry_id: Uuid,
    pub journal_id: Uuid,
    pub ledger_seq: i64,
    pub account_id: Uuid,
    pub account_seq: i64,
    pub counterparty_account_id: Option<Uuid>,
    pub currency: String,
    pub direction: String,
    pub amount: Decimal,
    pub ledger_balance_after: Decimal,
    pub kind: String,
    pub transaction_id: String,
    pub post_time: DateTime<Utc>,
}

impl EntryRow {
    pub fn into_entry(self) -> Result<PostedEntry, sqlx::Error> {
        let direction = Direction::parse(&self.direction).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown direction {:?}", self.direction).into())
        })?;
        Ok(PostedEntry {
            entry_id: self.entry_id,
            journal_id: self.journal_id,
            ledger_seq: self.ledger_seq,
            account_id: self.account_id,
            account_seq: self.account_seq,
            counterparty_account_id: self.counterparty_account_id,
            currency: self.currency,
            direction,
            amount: self.amount,
            ledger_balance_after: self.ledger_balance_after,
            kind: self.kind,
            transaction_id: self.transaction_id,
            post_time: self.post_time,
        })
    }
}

type Insert<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `entry` to `$1`…`$13`, in [`ENTRY_COLUMNS`] order.
fn bind_entry<'q>(query: Insert<'q>, entry: &'q PostedEntry) -> Insert<'q> {
    query
        .bind(entry.entry_id)
        .bind(entry.journal_id)
        .bind(entry.ledger_seq)
        .bind(entry.account_id)
        .bind(entry.account_seq)
        .bind(entry.counterparty_account_id)
        .bind(&entry.currency)
        .bind(entry.direction.as_str())
        .bind(entry.amount)
        .bind(entry.ledger_balance_after)
        .bind(&entry.kind)
        .bind(&entry.transaction_id)
        .bind(entry.post_time)
}

/// Offers one entry to its account's projection; returns what became of it.
#[tracing::instrument(skip_all, fields(account_id = %entry.account_id, account_seq = entry.account_seq), err)]
pub async fn offer_entry(
    conn: &mut PgConnection,
    entry: &PostedEntry,
    now: DateTime<Utc>,
) -> Result<Offer, sqlx::Error> {
    const LOCK: &str =
        "select last_account_seq, balance from account_cursor where account_id = $1 for update";
    // The cursor exists after an account's first entry: lock it in one
    // statement, and create it only when it is missing.
    let cursor: Option<(i64, Decimal)> = sqlx::query_as(LOCK)
        .bind(entry.account_id)
        .fetch_optional(&mut *conn)
        .await?;
    let (last_applied, balance) = match cursor {
        Some(cursor) => cursor,
        None => {
            sqlx::query(
                "insert into account_cursor (account_id, currency, updated_at) values ($1, $2, $3)
                 on conflict (account_id) do nothing",
            )
            .bind(entry.account_id)
            .bind(&entry.currency)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            sqlx::query_as(LOCK)
                .bind(entry.account_id)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    let outcome = offer(last_applied, entry.account_seq);
    match outcome {
        Offer::Duplicate => {
            metrics::counter!("reporting_entries_total", "outcome" => "duplicate").increment(1);
        }
        Offer::Early => {
            bind_entry(
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "insert into pending_entry ({ENTRY_COLUMNS}, received_at)
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                     on conflict (account_id, account_seq) do nothing"
                ))),
                entry,
            )
            .bind(now)
            .execute(&mut *conn)
            .await?;
            metrics::counter!("reporting_entries_total", "outcome" => "early").increment(1);
        }
        Offer::Apply => {
            let mut balance = apply(conn, entry, balance, now).await?;
            let mut last = entry.account_seq;
            // Every waiting successor the gap was holding back.
            loop {
                let next: Option<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "delete from pending_entry where account_id = $1 and account_seq = $2
                     returning {ENTRY_COLUMNS}"
                )))
                .bind(entry.account_id)
                .bind(last + 1)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = next else { break };
                balance = apply(conn, &row.into_entry()?, balance, now).await?;
                last += 1;
            }
            sqlx::query(
                "update account_cursor set last_account_seq = $2, balance = $3, updated_at = $4
                 where account_id = $1",
            )
            .bind(entry.account_id)
            .bind(last)
            .bind(balance)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(outcome)
}

/// Writes one entry and its day's totals; returns the running balance after it.
async fn apply(
    conn: &mut PgConnection,
    entry: &PostedEntry,
    balance_before: Decimal,
    now: DateTime<Utc>,
) -> Result<Decimal, sqlx::Error> {
    let running = balance_before + entry.signed_amount();
    if running != entry.ledger_balance_after {
        // Reconciliation reports it; the read model keeps its own sum.
        tracing::warn!(
            entry_id = %entry.entry_id,
            account_id = %entry.account_id,
            %running,
            ledger = %entry.ledger_balance_after,
            "running balance differs from the ledger's"
        );
    }
    bind_entry(
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into entry ({ENTRY_COLUMNS}, running_balance, applied_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))),
        entry,
    )
    .bind(running)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let (debit, credit) = match entry.direction {
        Direction::Debit => (entry.amount, Decimal::ZERO),
        Direction::Credit => (Decimal::ZERO, entry.amount),
    };
    sqlx::query(
        "insert into daily_total (account_id, day, currency, debits, credits, entry_count,
                                  closing_balance, last_account_seq)
         values ($1, ($2 at time zone 'UTC')::date, $3, $4, $5, 1, $6, $7)
         on conflict (account_id, day) do update set
             debits = daily_total.debits + excluded.debits,
             credits = daily_total.credits + excluded.credits,
             entry_count = daily_total.entry_count + 1,
             closing_balance = case when excluded.last_account_seq > daily_total.last_account_seq
                                    then excluded.closing_balance else daily_total.closing_balance end,
             last_account_seq = greatest(daily_total.last_account_seq, excluded.last_account_seq)",
    )
    .bind(entry.account_id)
    .bind(entry.post_time)
    .bind(&entry.currency)
    .bind(debit)
    .bind(credit)
    .bind(running)
    .bind(entry.account_seq)
    .execute(&mut *conn)
    .await?;
    metrics::counter!("reporting_entries_total", "outcome" => "applied").increment(1);
    Ok(running)
}

/// Throws the ledger-derived read models away (a rebuild refills them). The
/// tables are locked against writers first, so a consumer's batch waits for
/// the rebuild's commit instead of interleaving with it.
pub async fn clear_ledger_models(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("lock table account_cursor, entry, pending_entry, daily_total in exclusive mode")
        .execute(&mut *conn)
        .await?;
    for table in ["pending_entry", "daily_total", "entry", "account_cursor"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("delete from {table}")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// An account's lifecycle as its events tell it; the latest change wins.
pub async fn record_account_opened(
    conn: &mut PgConnection,
    account_id: Uuid,
    customer_id: Uuid,
    currency: &str,
    opened_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into account_profile (account_id, customer_id, currency, status, opened_at, status_changed_at)
         values ($1, $2, $3, 'active', $4, $4)
         on conflict (account_id) do update set customer_id = excluded.customer_id,
             currency = excluded.currency, opened_at = excluded.opened_at",
    )
    .bind(account_id)
    .bind(customer_id)
    .bind(currency)
    .bind(opened_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn record_account_status(
    conn: &mut PgConnection,
    account_id: Uuid,
    status: &str,
    changed_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into account_profile (account_id, status, status_changed_at) values ($1, $2, $3)
         on conflict (account_id) do update set status = excluded.status,
             status_changed_at = excluded.status_changed_at
         where account_profile.status_changed_at <= excluded.status_changed_at",
    )
    .bind(account_id)
    .bind(status)
    .bind(changed_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A customer's KYC status; a higher sequence wins whatever the arrival order.
pub async fn record_kyc(
    conn: &mut PgConnection,
    customer_id: Uuid,
    status: &str,
    sequence: i64,
    changed_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into customer_kyc (customer_id, kyc_status, kyc_sequence, changed_at)
         values ($1, $2, $3, $4)
         on conflict (customer_id) do update set kyc_status = excluded.kyc_status,
             kyc_sequence = excluded.kyc_sequence, changed_at = excluded.changed_at
         where customer_kyc.kyc_sequence < excluded.kyc_sequence",
    )
    .bind(customer_id)
    .bind(status)
    .bind(sequence)
    .bind(changed_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How a money movement ended. A transaction ends once; a repeat is a no-op.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub transaction_id: Uuid,
    pub kind: String,
    pub status: &'static str,
    pub reason_code: String,
    pub detail: String,
    pub journal_id: Option<Uuid>,
    pub source_account_id: Option<Uuid>,
    pub destination_account_id: Option<Uuid>,
    pub currency: Option<String>,
    pub amount: Option<Decimal>,
    pub ended_at: DateTime<Utc>,
}

pub async fn record_outcome(conn: &mut PgConnection, outcome: &Outcome) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into transaction_outcome (transaction_id, kind, status, reason_code, detail, journal_id,
             source_account_id, destination_account_id, currency, amount, ended_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (transaction_id) do nothing",
    )
    .bind(outcome.transaction_id)
    .bind(&outcome.kind)
    .bind(outcome.status)
    .bind(&outcome.reason_code)
    .bind(&outcome.detail)
    .bind(outcome.journal_id)
    .bind(outcome.source_account_id)
    .bind(outcome.destination_account_id)
    .bind(&outcome.currency)
    .bind(outcome.amount)
    .bind(outcome.ended_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A screening decision (made once per decision id).
pub async fn record_decision(
    conn: &mut PgConnection,
    decision_id: Uuid,
    transaction_id: Uuid,
    outcome: &str,
    rule_set_version: i64,
    fired_rules: &[String],
    decided_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into fraud_decision (decision_id, transaction_id, outcome, rule_set_version, fired_rules, decided_at)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (decision_id) do nothing",
    )
    .bind(decision_id)
    .bind(transaction_id)
    .bind(outcome)
    .bind(rule_set_version)
    .bind(fired_rules)
    .bind(decided_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The final word of a review on the decisions of its transaction.
pub async fn record_review_outcome(
    conn: &mut PgConnection,
    transaction_id: Uuid,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("update fraud_decision set review_outcome = $2 where transaction_id = $1")
        .bind(transaction_id)
        .bind(outcome)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
