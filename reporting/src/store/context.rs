//! The context the read models are described with, kept from events:
//! account lifecycles, customers' KYC, how transactions ended and fraud
//! decisions. Each write is an upsert that arrival order does not change.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

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
