//! Accounts, customers and movements as the fraud service knows them: the
//! local state every feature is computed from.

use chrono::{DateTime, Utc};
use corebank_platform::db::PlannedPerCall;
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

/// How screened movements ended, each `(transaction id, status)`, in one
/// statement (in transaction id order, as every batch locks them); a
/// movement this service never screened (none before fraud existed) is
/// nothing to settle.
pub async fn settle_movements(
    conn: &mut PgConnection,
    outcomes: &[(Uuid, &str)],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut outcomes = outcomes.to_vec();
    outcomes.sort_unstable();
    let (ids, statuses): (Vec<Uuid>, Vec<&str>) = outcomes.into_iter().unzip();
    sqlx::query(
        "update movement m set status = o.status, updated_at = $3
           from unnest($1::uuid[], $2::text[]) as o (transaction_id, status)
          where m.transaction_id = o.transaction_id and m.status = 'in_flight'",
    )
    .planned_per_call()
    .bind(ids)
    .bind(statuses)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// An account of a screened movement as this service knows it: its owner
/// (if its opening was seen), the owner's last verification, and whether the
/// account or its owner is on the watchlist at the time of the screen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Party {
    pub account_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub opened_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
    pub account_listed: bool,
    pub customer_listed: bool,
}

/// A scalar subquery: the parties of the accounts in the uuid array
/// `accounts`, in their order, at the time `now`, as a JSON array of
/// [`Party`]: a column of the statement that records a movement, so the
/// lookup costs no round trip of its own.
pub fn parties_column(accounts: &str, now: &str) -> String {
    // Every join is a lateral probe with a limit, so even a generic plan
    // looks each party up by its index instead of hash-joining whole tables.
    format!(
        "(select coalesce(json_agg(x order by x.ord), '[]'::json) from (
             select a.account_id, p.customer_id, p.opened_at, c.verified_at,
                    account_watch.listed is not null as account_listed,
                    customer_watch.listed is not null as customer_listed, a.ord
               from unnest({accounts}::uuid[]) with ordinality as a (account_id, ord)
               left join lateral (
                    select customer_id, opened_at from account_profile
                     where account_id = a.account_id limit 1) p on true
               left join lateral (
                    select verified_at from customer_profile
                     where customer_id = p.customer_id limit 1) c on true
               left join lateral (
                    select 1 as listed from watchlist_entry w
                     where w.subject = 'account' and w.subject_id = a.account_id
                       and w.removed_at is null
                       and (w.expires_at is null or w.expires_at > {now}) limit 1) account_watch on true
               left join lateral (
                    select 1 as listed from watchlist_entry w
                     where w.subject = 'customer' and w.subject_id = p.customer_id
                       and w.removed_at is null
                       and (w.expires_at is null or w.expires_at > {now}) limit 1) customer_watch on true
         ) x)"
    )
}
