//! Holds: a reserve places one (gate, balance and hold in one statement), a
//! release or an expiry gives its amount back. Every change is a conditional
//! UPDATE that both checks the rule and locks the row; when it touches
//! nothing, the row is read to say why. Lock order is always hold, then
//! accounts by id.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use corebank_platform::db::PlannedPerCall;
use corebank_platform::error::ApiError;
use corebank_platform::money::Currency;
use rust_decimal::Decimal;
use sqlx::{FromRow, PgConnection, Row};
use uuid::Uuid;

use super::{HOLD_COLUMNS, HoldRow, get_hold, one_row_each, refusal};
use crate::domain::{Hold, HoldStatus, reason};

/// What a reserve checks before it places its hold.
#[derive(Debug, sqlx::FromRow)]
pub struct ReserveGate {
    /// Its compensation arrived first (a tombstone): refused, no late hold.
    pub cancelled: bool,
    /// The account's owner; none when the account does not exist.
    pub customer_id: Option<Uuid>,
    /// Whether the KYC mirror says the owner is VERIFIED.
    pub verified: bool,
}

impl ReserveGate {
    /// No tombstone, and the account's owner is VERIFIED.
    pub fn is_open(&self) -> bool {
        !self.cancelled && self.customer_id.is_some() && self.verified
    }
}

/// The tombstone of the reserve command `command_id`, the account's owner
/// and the owner's KYC status: the gate alone, in one statement.
pub async fn reserve_gate(
    conn: &mut PgConnection,
    command_id: &str,
    account_id: Option<Uuid>,
) -> Result<ReserveGate, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with {GATE} select * from gate"
    )))
    .bind(command_id)
    .bind(account_id)
    .fetch_one(conn)
    .await
}

/// The reserve's gate as a CTE named `gate`: command id `$1`, account `$2`.
const GATE: &str = "gate as (
    select exists (select 1 from command_tombstone where command_id = $1) as cancelled,
           a.customer_id,
           coalesce(k.kyc_status = 'verified', false) as verified
      from (select 1) as one
      left join account a on a.account_id = $2
      left join customer_kyc k on k.customer_id = a.customer_id
)";

/// What [`place_hold`] did.
#[derive(Debug)]
pub enum Reserved {
    Placed(Hold),
    /// The gate is shut; it says why.
    Gated(ReserveGate),
}

/// Places a hold for the reserve command `command_id` if its gate is open
/// (no tombstone, the owner VERIFIED) and the account is active, in
/// `currency`, and its available balance plus overdraft covers `amount`:
/// gate, balance and hold in one statement.
#[tracing::instrument(skip_all, fields(account_id = %account_id, hold_id = %hold_id), err)]
#[allow(clippy::too_many_arguments)]
pub async fn place_hold(
    conn: &mut PgConnection,
    command_id: &str,
    hold_id: Uuid,
    account_id: Uuid,
    currency: Currency,
    amount: Decimal,
    reference: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Reserved, ApiError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "with {GATE}, reserved as (
             update account set held_amount = held_amount + $3, updated_at = $5
              where account_id = $2 and currency = $4 and status = 'active'
                and ledger_balance - held_amount + overdraft_limit >= $3
                and (select not cancelled and verified from gate)
             returning account_id
         ), placed as (
             insert into hold (hold_id, account_id, currency, amount, status, reference, expires_at,
                               created_at, updated_at)
             select $6, account_id, $4, $3, 'active', $7, $8, $5, $5 from reserved
             returning {HOLD_COLUMNS}
         )
         select gate.*, placed.* from gate left join placed on true"
    )))
    .bind(command_id)
    .bind(account_id)
    .bind(amount)
    .bind(currency.code())
    .bind(now)
    .bind(hold_id)
    .bind(reference)
    .bind(expires_at)
    .fetch_one(&mut *conn)
    .await?;
    if row.try_get::<Option<Uuid>, _>("hold_id")?.is_some() {
        return Ok(Reserved::Placed(HoldRow::from_row(&row)?.try_into()?));
    }
    let gate = ReserveGate::from_row(&row)?;
    if !gate.is_open() {
        return Ok(Reserved::Gated(gate));
    }
    Err(refusal(conn, account_id, |account| {
        account.refuses_hold(currency, amount)
    })
    .await)
}

/// One reserve of [`place_holds`]: its command id, the hold to place, and
/// what to hold on which account.
#[derive(Debug, Clone, Copy)]
pub struct Reserve<'a> {
    pub command_id: &'a str,
    pub hold_id: Uuid,
    pub account_id: Uuid,
    pub currency: Currency,
    pub amount: Decimal,
    pub reference: &'a str,
}

/// [`place_holds`]'s statement: the accounts locked in id order, then each
/// reserve gated, checked and placed as [`place_hold`] does one.
static PLACE_HOLDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "with item as (
             select * from unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::numeric[],
                                  $6::text[])
                    with ordinality as i (command_id, hold_id, account_id, currency, amount,
                                          reference, ord)
         ), locked as materialized (
             select account_id from account where account_id in (select account_id from item)
              order by account_id for update
         ), gate as materialized (
             select i.ord,
                    exists (select 1 from command_tombstone t where t.command_id = i.command_id)
                        as cancelled,
                    a.customer_id,
                    coalesce(k.kyc_status = 'verified', false) as verified
               from item i
               left join account a on a.account_id = i.account_id
               left join customer_kyc k on k.customer_id = a.customer_id
              where (select count(*) from locked) >= 0
         ), reserved as (
             update account a set held_amount = a.held_amount + i.amount, updated_at = $7
               from item i join gate g on g.ord = i.ord
              where a.account_id = i.account_id and a.currency = i.currency
                and a.status = 'active'
                and a.ledger_balance - a.held_amount + a.overdraft_limit >= i.amount
                and not g.cancelled and g.verified
             returning i.ord
         ), placed as (
             insert into hold (hold_id, account_id, currency, amount, status, reference,
                               expires_at, created_at, updated_at)
             select i.hold_id, i.account_id, i.currency, i.amount, 'active', i.reference, $8,
                    $7, $7
               from item i join reserved r on r.ord = i.ord
              order by i.ord
             returning {HOLD_COLUMNS}
         )
         select g.cancelled, g.customer_id, g.verified, placed.*
           from gate g join item i on i.ord = g.ord
           left join placed on placed.hold_id = i.hold_id
          order by g.ord"
    )
});

/// [`place_hold`] for reserves on distinct accounts, in one statement: their
/// accounts locked in id order, then each reserve gated, checked and placed
/// as [`place_hold`] does one. The accounts being distinct, each reserve has
/// the outcome it would have had on its own.
#[tracing::instrument(skip_all, fields(reserves = reserves.len()), err(Debug))]
pub async fn place_holds(
    conn: &mut PgConnection,
    reserves: &[Reserve<'_>],
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Result<Reserved, ApiError>>, ApiError> {
    let column = |pick: fn(&Reserve<'_>) -> String| reserves.iter().map(pick).collect::<Vec<_>>();
    let rows = sqlx::query(sqlx::AssertSqlSafe(PLACE_HOLDS.as_str()))
        .planned_per_call()
        .bind(column(|r| r.command_id.to_owned()))
        .bind(reserves.iter().map(|r| r.hold_id).collect::<Vec<_>>())
        .bind(reserves.iter().map(|r| r.account_id).collect::<Vec<_>>())
        .bind(column(|r| r.currency.code().to_owned()))
        .bind(reserves.iter().map(|r| r.amount).collect::<Vec<_>>())
        .bind(column(|r| r.reference.to_owned()))
        .bind(now)
        .bind(expires_at)
        .fetch_all(&mut *conn)
        .await?;
    let rows = one_row_each(rows, reserves.len(), "reserves")?;
    let mut outcomes = Vec::with_capacity(reserves.len());
    for (reserve, row) in reserves.iter().zip(rows) {
        if row.try_get::<Option<Uuid>, _>("hold_id")?.is_some() {
            outcomes.push(Ok(Reserved::Placed(HoldRow::from_row(&row)?.try_into()?)));
            continue;
        }
        let gate = ReserveGate::from_row(&row)?;
        outcomes.push(if gate.is_open() {
            let (currency, amount) = (reserve.currency, reserve.amount);
            Err(refusal(conn, reserve.account_id, |account| {
                account.refuses_hold(currency, amount)
            })
            .await)
        } else {
            Ok(Reserved::Gated(gate))
        });
    }
    Ok(outcomes)
}

/// Releases an active, unexpired hold; allowed on a frozen account.
#[tracing::instrument(skip_all, fields(hold_id = %hold_id), err)]
pub async fn release_hold(
    conn: &mut PgConnection,
    hold_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Hold, ApiError> {
    let row: Option<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update hold set status = 'released', updated_at = $2
         where hold_id = $1 and status = 'active' and expires_at > $2
         returning {HOLD_COLUMNS}"
    )))
    .bind(hold_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let hold: Hold = match row {
        Some(row) => row.try_into()?,
        None => return Err(hold_refusal(conn, hold_id, now).await),
    };
    sqlx::query(
        "update account set held_amount = held_amount - $2, updated_at = $3 where account_id = $1",
    )
    .bind(hold.account_id)
    .bind(hold.amount)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(hold)
}

/// How many holds one sweep expires at most.
pub const EXPIRY_BATCH: u64 = 500;

/// Expires a batch of holds past their expiry and returns their amounts to
/// the accounts' available balances. Holds another transaction has locked
/// (being captured or released right now) are left for the next sweep.
pub async fn expire_holds(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<u64, ApiError> {
    let expired: Vec<(Uuid, Uuid, Decimal)> = sqlx::query_as(
        "update hold set status = 'expired', updated_at = $1
         where hold_id in (
             select hold_id from hold where status = 'active' and expires_at <= $1
             order by expires_at limit $2 for update skip locked)
         returning hold_id, account_id, amount",
    )
    .bind(now)
    .bind(EXPIRY_BATCH as i64)
    .fetch_all(&mut *conn)
    .await?;
    // Accounts in id order, as every posting locks them.
    let mut per_account: BTreeMap<Uuid, Decimal> = BTreeMap::new();
    for (hold_id, account_id, amount) in &expired {
        tracing::info!(%hold_id, %account_id, "hold expired");
        *per_account.entry(*account_id).or_default() += *amount;
    }
    for (account_id, amount) in per_account {
        sqlx::query("update account set held_amount = held_amount - $2, updated_at = $3 where account_id = $1")
            .bind(account_id)
            .bind(amount)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(expired.len() as u64)
}

/// Explains why a conditional UPDATE on a hold touched no row.
pub(super) async fn hold_refusal(
    conn: &mut PgConnection,
    hold_id: Uuid,
    now: DateTime<Utc>,
) -> ApiError {
    let hold = match get_hold(conn, hold_id).await {
        Ok(hold) => hold,
        Err(error) => return error,
    };
    match hold.status_at(now) {
        HoldStatus::Expired if hold.status == HoldStatus::Active => ApiError::failed_precondition(
            reason::HOLD_EXPIRED,
            format!("hold {hold_id} expired at {}", hold.expires_at),
        )
        .with_metadata("status", HoldStatus::Expired.as_str()),
        HoldStatus::Active => ApiError::new(
            corebank_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the hold changed concurrently, retry",
        ),
        status => ApiError::failed_precondition(
            reason::HOLD_NOT_ACTIVE,
            format!("hold {hold_id} is {}", status.as_str()),
        )
        .with_metadata("status", status.as_str()),
    }
}
