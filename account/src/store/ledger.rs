//! Postings: a hold captured into a transfer or a withdrawal, a deposit.
//! Every journal moves its accounts' balances under their row locks, taken
//! in account id order after the hold's; a refusal reads the rows again to
//! say why.

use chrono::{DateTime, SubsecRound, Utc};
use corebank_platform::error::{ApiError, constraint};
use corebank_platform::money::Currency;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::refusal;
use crate::domain::{
    self, BANK_CUSTOMER_ID, Direction, Entry, HoldStatus, Journal, JournalKind, Leg, reason,
};

mod capture;
mod capture_batch;

pub use capture::{Credit, capture};
pub use capture_batch::{Capture, capture_batch};

/// A journal as a posting wrote it, but for its entries.
struct Posting<'a> {
    journal_id: Uuid,
    kind: JournalKind,
    reference: &'a str,
    hold_id: Option<Uuid>,
    currency: Currency,
    posted_at: DateTime<Utc>,
    ledger_seq: i64,
}

/// One entry as a posting wrote it.
struct Written {
    entry_id: Uuid,
    account_id: Uuid,
    direction: Direction,
    amount: Decimal,
    balance_after: Decimal,
    account_seq: i64,
}

impl Posting<'_> {
    /// The journal with its two entries, listed in account id order.
    fn journal(self, written: [Written; 2]) -> Journal {
        let mut entries: Vec<Entry> = written
            .into_iter()
            .map(|written| Entry {
                entry_id: written.entry_id,
                journal_id: self.journal_id,
                account_id: written.account_id,
                currency: self.currency,
                direction: written.direction,
                amount: written.amount,
                balance_after: written.balance_after,
                account_seq: written.account_seq,
                created_at: self.posted_at,
            })
            .collect();
        entries.sort_by_key(|entry| entry.account_id);
        tracing::debug!(journal_id = %self.journal_id, ledger_seq = self.ledger_seq, kind = self.kind.as_str(), "journal posted");
        Journal {
            journal_id: self.journal_id,
            ledger_seq: self.ledger_seq,
            kind: self.kind,
            reference: self.reference.to_owned(),
            hold_id: self.hold_id,
            entries,
            created_at: self.posted_at,
        }
    }
}

/// Credits `account_id` from the settlement account of `currency`.
#[tracing::instrument(skip_all, fields(account_id = %account_id), err)]
pub async fn deposit(
    conn: &mut PgConnection,
    account_id: Uuid,
    currency: Currency,
    amount: Decimal,
    reference: &str,
    now: DateTime<Utc>,
) -> Result<Journal, ApiError> {
    let settlement = settlement_account(conn, currency, now).await?;
    if settlement == account_id {
        return Err(ApiError::invalid_field(
            "account_id",
            "must not be the bank's settlement account",
        ));
    }
    let legs = domain::transfer_legs(settlement, account_id, amount, Decimal::ZERO);
    post(
        conn,
        Uuid::now_v7(),
        JournalKind::Deposit,
        reference,
        None,
        currency,
        &legs,
        now,
    )
    .await
}

/// Writes a journal of two legs in one statement: moves each leg's account
/// balance (legs come in account id order, and the second update runs only
/// once the first has its row, so rows are locked in that order), then, once
/// both moved, takes the journal's place in the whole ledger and appends the
/// entries, each with the balance right after it. The database checks at
/// commit that the journal balances. A refused leg leaves the first leg's
/// update behind: the caller runs this in a savepoint of its own.
#[allow(clippy::too_many_arguments)]
async fn post(
    conn: &mut PgConnection,
    journal_id: Uuid,
    kind: JournalKind,
    reference: &str,
    hold_id: Option<Uuid>,
    currency: Currency,
    legs: &[Leg; 2],
    now: DateTime<Utc>,
) -> Result<Journal, ApiError> {
    // At the database's microsecond precision, so the journal returned (and
    // the event built from it) equals the rows read back later.
    let posted_at = now.trunc_subsecs(6);
    debug_assert!(domain::balanced(legs), "a journal's legs must sum to zero");
    debug_assert!(legs[0].account_id < legs[1].account_id);
    let entry_ids = [Uuid::now_v7(), Uuid::now_v7()];
    /// Each leg's balance and sequence after it moved, and the journal's
    /// ledger sequence; none past the leg that refused.
    #[derive(sqlx::FromRow)]
    struct Moved {
        balance_0: Option<Decimal>,
        seq_0: Option<i64>,
        balance_1: Option<Decimal>,
        seq_1: Option<i64>,
        ledger_seq: Option<i64>,
    }
    let moved: Moved = sqlx::query_as(
        "with first as (
                 update account
                    set ledger_balance = ledger_balance + $2, held_amount = held_amount - $3,
                        last_entry_seq = last_entry_seq + 1, updated_at = $8
                  where account_id = $1 and currency = $7 and status = 'active'
                 returning ledger_balance, last_entry_seq
             ), second as (
                 update account
                    set ledger_balance = ledger_balance + $5, held_amount = held_amount - $6,
                        last_entry_seq = last_entry_seq + 1, updated_at = $8
                  where account_id = $4 and currency = $7 and status = 'active'
                    and exists (select 1 from first)
                 returning ledger_balance, last_entry_seq
             ), journal as (
                 insert into journal (journal_id, kind, reference, hold_id, created_at)
                 select $9, $10, $11, $12, $8 where exists (select 1 from second)
                 returning ledger_seq
             ), entries as (
                 insert into entry (entry_id, journal_id, account_id, currency, direction, amount,
                                    balance_after, account_seq, created_at)
                 select e.entry_id, $9, e.account_id, $7, e.direction, e.amount, m.ledger_balance,
                        m.last_entry_seq, $8
                   from (select 1 as leg, * from first union all select 2, * from second) as m
                   join unnest($13::uuid[], $14::uuid[], $15::text[], $16::numeric[])
                        with ordinality as e (entry_id, account_id, direction, amount, leg)
                     on e.leg = m.leg
                  where exists (select 1 from journal)
             )
             select (select ledger_balance from first) as balance_0,
                    (select last_entry_seq from first) as seq_0,
                    (select ledger_balance from second) as balance_1,
                    (select last_entry_seq from second) as seq_1,
                    (select ledger_seq from journal) as ledger_seq",
    )
    .bind(legs[0].account_id)
    .bind(legs[0].direction.signed(legs[0].amount))
    .bind(legs[0].release_held)
    .bind(legs[1].account_id)
    .bind(legs[1].direction.signed(legs[1].amount))
    .bind(legs[1].release_held)
    .bind(currency.code())
    .bind(posted_at)
    .bind(journal_id)
    .bind(kind.as_str())
    .bind(reference)
    .bind(hold_id)
    .bind(entry_ids)
    .bind(legs.iter().map(|leg| leg.account_id).collect::<Vec<_>>())
    .bind(
        legs.iter()
            .map(|leg| leg.direction.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(legs.iter().map(|leg| leg.amount).collect::<Vec<_>>())
    .fetch_one(&mut *conn)
    .await
    .map_err(|error| match constraint(&error) {
        // Only a debit lowers what is available.
        Some("account_available_within_overdraft") => {
            let debited = legs
                .iter()
                .find(|leg| leg.direction == domain::Direction::Debit)
                .map_or(legs[0].account_id, |leg| leg.account_id);
            ApiError::failed_precondition(
                reason::INSUFFICIENT_FUNDS,
                format!("account {debited} has insufficient available funds"),
            )
        }
        _ => ApiError::from(error),
    })?;
    let (first, second, ledger_seq) = match moved {
        Moved {
            balance_0: Some(b0),
            seq_0: Some(s0),
            balance_1: Some(b1),
            seq_1: Some(s1),
            ledger_seq: Some(ledger_seq),
        } => ((b0, s0), (b1, s1), ledger_seq),
        Moved { balance_0, .. } => {
            // The leg whose account refused to move.
            let refused = if balance_0.is_none() {
                &legs[0]
            } else {
                &legs[1]
            };
            return Err(refusal(conn, refused.account_id, |account| {
                account.refuses_movement(currency)
            })
            .await);
        }
    };
    let posting = Posting {
        journal_id,
        kind,
        reference,
        hold_id,
        currency,
        posted_at,
        ledger_seq,
    };
    let [written_0, written_1] = [
        (&legs[0], entry_ids[0], first),
        (&legs[1], entry_ids[1], second),
    ]
    .map(|(leg, entry_id, (balance_after, account_seq))| Written {
        entry_id,
        account_id: leg.account_id,
        direction: leg.direction,
        amount: leg.amount,
        balance_after,
        account_seq,
    });
    Ok(posting.journal([written_0, written_1]))
}

/// The bank's settlement account in `currency`, created on first use.
pub async fn settlement_account(
    conn: &mut PgConnection,
    currency: Currency,
    now: DateTime<Utc>,
) -> Result<Uuid, ApiError> {
    const FIND: &str =
        "select account_id from account where product = 'settlement' and currency = $1";
    let existing: Option<Uuid> = sqlx::query_scalar(FIND)
        .bind(currency.code())
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(account_id) = existing {
        return Ok(account_id);
    }
    // A concurrent creator wins the unique index; this insert then waits for
    // it and does nothing, and the second read sees its row.
    sqlx::query(
        "insert into account (account_id, customer_id, currency, product, status, created_at, updated_at)
         values ($1, $2, $3, 'settlement', 'active', $4, $4)
         on conflict (currency) where product = 'settlement' do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(BANK_CUSTOMER_ID)
    .bind(currency.code())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(FIND)
        .bind(currency.code())
        .fetch_one(&mut *conn)
        .await?)
}
