//! Accounts, customers and movements as the fraud service knows them: the
//! local state every feature is computed from.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Who owns an account and since when; the first event wins.
pub async fn record_account(
    conn: &mut PgConnection,
    account_id: Uuid,
    customer_id: Uuid,
    currency: &str,
    opened_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into account_profile (account_id, customer_id, currency, opened_at)
         values ($1, $2, $3, $4)
         on conflict (account_id) do nothing",
    )
    .bind(account_id)
    .bind(customer_id)
    .bind(currency)
    .bind(opened_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A customer's KYC status; an older change (lower sequence) than the one
/// kept is ignored. `verified_at` is the time of the latest move to verified.
pub async fn record_kyc(
    conn: &mut PgConnection,
    customer_id: Uuid,
    status: &str,
    sequence: i64,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let verified_at = (status == "verified").then_some(at);
    sqlx::query(
        "insert into customer_profile (customer_id, kyc_status, kyc_sequence, verified_at, updated_at)
         values ($1, $2, $3, $4, $5)
         on conflict (customer_id) do update
            set kyc_status = excluded.kyc_status,
                kyc_sequence = excluded.kyc_sequence,
                verified_at = coalesce(excluded.verified_at, customer_profile.verified_at),
                updated_at = excluded.updated_at
          where customer_profile.kyc_sequence < excluded.kyc_sequence",
    )
    .bind(customer_id)
    .bind(status)
    .bind(sequence)
    .bind(verified_at)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// How a screened movement ended; a movement this service never screened
/// (none before fraud existed) is nothing to settle.
pub async fn settle_movement(
    conn: &mut PgConnection,
    transaction_id: Uuid,
    status: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update movement set status = $2, updated_at = $3
          where transaction_id = $1 and status = 'in_flight'",
    )
    .bind(transaction_id)
    .bind(status)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The owner of `account_id`, if its opening was seen.
pub async fn owner_of(
    conn: &mut PgConnection,
    account_id: Uuid,
) -> Result<Option<(Uuid, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("select customer_id, opened_at from account_profile where account_id = $1")
        .bind(account_id)
        .fetch_optional(conn)
        .await
}

/// When the customer was last verified, if ever seen verified.
pub async fn verified_at(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("select verified_at from customer_profile where customer_id = $1")
            .bind(customer_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.flatten())
}
