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

/// How movements ended, in one statement; the first outcome of a
/// transaction stays.
pub async fn record_outcomes(
    conn: &mut PgConnection,
    outcomes: &[Outcome],
) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let column = |get: fn(&Outcome) -> Option<String>| outcomes.iter().map(get).collect::<Vec<_>>();
    sqlx::query(
        "insert into transaction_outcome (transaction_id, kind, status, reason_code, detail, journal_id,
             source_account_id, destination_account_id, currency, amount, ended_at)
         select o.transaction_id, o.kind, o.status, o.reason_code, o.detail, o.journal_id,
                o.source_account_id, o.destination_account_id, o.currency, o.amount, o.ended_at
           from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[],
                       $7::uuid[], $8::uuid[], $9::text[], $10::numeric[], $11::timestamptz[])
                with ordinality
                as o (transaction_id, kind, status, reason_code, detail, journal_id,
                      source_account_id, destination_account_id, currency, amount, ended_at, ord)
          order by o.ord
         on conflict (transaction_id) do nothing",
    )
    .bind(outcomes.iter().map(|o| o.transaction_id).collect::<Vec<_>>())
    .bind(column(|o| Some(o.kind.clone())))
    .bind(column(|o| Some(o.status.to_owned())))
    .bind(column(|o| Some(o.reason_code.clone())))
    .bind(column(|o| Some(o.detail.clone())))
    .bind(outcomes.iter().map(|o| o.journal_id).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.source_account_id).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.destination_account_id).collect::<Vec<_>>())
    .bind(column(|o| o.currency.clone()))
    .bind(outcomes.iter().map(|o| o.amount).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.ended_at).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A screening decision.
#[derive(Debug, Clone)]
pub struct Decision {
    pub decision_id: Uuid,
    pub transaction_id: Uuid,
    pub outcome: String,
    pub rule_set_version: i64,
    pub fired_rules: Vec<String>,
    pub decided_at: DateTime<Utc>,
}

/// Screening decisions, in one statement; each is made once per decision id.
pub async fn record_decisions(
    conn: &mut PgConnection,
    decisions: &[Decision],
) -> Result<(), sqlx::Error> {
    if decisions.is_empty() {
        return Ok(());
    }
    // unnest cannot take an array of arrays of differing lengths: each
    // decision's fired rules travel as one JSON array.
    let fired: Vec<sqlx::types::Json<&[String]>> = decisions
        .iter()
        .map(|d| sqlx::types::Json(d.fired_rules.as_slice()))
        .collect();
    sqlx::query(
        "insert into fraud_decision (decision_id, transaction_id, outcome, rule_set_version, fired_rules, decided_at)
         select d.decision_id, d.transaction_id, d.outcome, d.rule_set_version,
                array(select jsonb_array_elements_text(d.fired_rules)), d.decided_at
           from unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::jsonb[], $6::timestamptz[])
                with ordinality
                as d (decision_id, transaction_id, outcome, rule_set_version, fired_rules, decided_at, ord)
          order by d.ord
         on conflict (decision_id) do nothing",
    )
    .bind(decisions.iter().map(|d| d.decision_id).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.transaction_id).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.outcome.as_str()).collect::<Vec<_>>())
    .bind(decisions.iter().map(|d| d.rule_set_version).collect::<Vec<_>>())
    .bind(fired)
    .bind(decisions.iter().map(|d| d.decided_at).collect::<Vec<_>>())
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
