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

use super::holds::hold_refusal;
use super::{get_hold, refusal};
use crate::domain::{
    self, BANK_CUSTOMER_ID, Direction, Entry, HoldStatus, Journal, JournalKind, Leg, reason,
};

/// Where a captured hold goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credit {
    /// Another account: a transfer.
    Account(Uuid),
    /// The settlement account of the hold's currency: a withdrawal.
    Settlement,
}

/// Captures an active, unexpired hold on `source` into a journal crediting
/// `credit`, all or nothing in one statement: the hold is locked, then both
/// accounts in id order, everything is checked under those locks, and only
/// then are the hold, both balances, the journal and its entries written.
/// So a refusal writes nothing and needs no savepoint; it reads the rows
/// again to say why.
#[tracing::instrument(skip_all, fields(hold_id = %hold_id), err)]
pub async fn capture(
    conn: &mut PgConnection,
    hold_id: Uuid,
    source: Uuid,
    credit: Credit,
    reference: &str,
    now: DateTime<Utc>,
) -> Result<Journal, ApiError> {
    let (destination, kind) = match credit {
        Credit::Account(destination) if destination == source => {
            return Err(ApiError::invalid_field(
                "destination_account_id",
                "must not be the account the hold is on",
            ));
        }
        Credit::Account(destination) => (Some(destination), JournalKind::Transfer),
        Credit::Settlement => (None, JournalKind::Withdrawal),
    };
    // At the database's microsecond precision, as in `post`.
    let posted_at = now.trunc_subsecs(6);
    let journal_id = Uuid::now_v7();
    let entry_ids = [Uuid::now_v7(), Uuid::now_v7()];
    let statement = CaptureStatement {
        hold_id,
        journal_id,
        posted_at,
        source,
        destination,
        reference,
        entry_ids,
        kind,
    };
    let mut captured = statement.run(conn).await?;
    if credit == Credit::Settlement
        && captured.credit_account.is_none()
        && let Ok(hold) = get_hold(conn, hold_id).await
    {
        // No settlement account in the hold's currency yet: it is created
        // on first use, and the capture, which wrote nothing, runs again.
        settlement_account(conn, hold.currency, now).await?;
        captured = statement.run(conn).await?;
    }
    let Captured {
        ok: Some(true),
        credit_account: Some(credited),
        currency: Some(currency),
        amount: Some(amount),
        debit_balance: Some(debit_balance),
        debit_seq: Some(debit_seq),
        credit_balance: Some(credit_balance),
        credit_seq: Some(credit_seq),
        ledger_seq: Some(ledger_seq),
    } = captured
    else {
        return Err(capture_refusal(conn, hold_id, source, credit, now).await);
    };
    let currency = Currency::parse(&currency).map_err(|error| {
        ApiError::internal(anyhow::anyhow!(
            "hold {hold_id} has currency {currency:?}: {error}"
        ))
    })?;
    let posting = Posting {
        journal_id,
        kind,
        reference,
        hold_id: Some(hold_id),
        currency,
        posted_at,
        ledger_seq,
    };
    Ok(posting.journal([
        Written {
            entry_id: entry_ids[0],
            account_id: source,
            direction: Direction::Debit,
            amount,
            balance_after: debit_balance,
            account_seq: debit_seq,
        },
        Written {
            entry_id: entry_ids[1],
            account_id: credited,
            direction: Direction::Credit,
            amount,
            balance_after: credit_balance,
            account_seq: credit_seq,
        },
    ]))
}

/// What [`capture`]'s statement returns; all null but `ok` (and
/// `credit_account`) when it refused.
#[derive(sqlx::FromRow)]
struct Captured {
    ok: Option<bool>,
    credit_account: Option<Uuid>,
    currency: Option<String>,
    amount: Option<Decimal>,
    debit_balance: Option<Decimal>,
    debit_seq: Option<i64>,
    credit_balance: Option<Decimal>,
    credit_seq: Option<i64>,
    ledger_seq: Option<i64>,
}

/// [`capture`]'s one statement and its parameters.
struct CaptureStatement<'a> {
    hold_id: Uuid,
    journal_id: Uuid,
    posted_at: DateTime<Utc>,
    source: Uuid,
    /// The credited account, or none for the settlement account of the
    /// hold's currency.
    destination: Option<Uuid>,
    reference: &'a str,
    entry_ids: [Uuid; 2],
    kind: JournalKind,
}

impl CaptureStatement<'_> {
    async fn run(&self, conn: &mut PgConnection) -> Result<Captured, sqlx::Error> {
        sqlx::query_as(
        "with held as (
             select account_id, currency, amount, status, expires_at from hold
              where hold_id = $1 for update
         ), target as (
             select coalesce($5::uuid, (select s.account_id from account s, held h
                                         where s.product = 'settlement' and s.currency = h.currency))
                    as account_id
         ), accounts as (
             select account_id, currency, status from account
              where account_id in ($4, (select account_id from target)) and exists (select 1 from held)
              order by account_id for update
         ), checked as (
             select h.status = 'active' and h.expires_at > $3 and h.account_id = $4
                    and (select count(*) from accounts a
                          where a.currency = h.currency and a.status = 'active') = 2 as ok
               from held h
         ), captured as (
             update hold set status = 'captured', journal_id = $2, updated_at = $3
              where hold_id = $1 and (select ok from checked)
             returning currency, amount
         ), debited as (
             update account a
                set ledger_balance = a.ledger_balance - c.amount, held_amount = a.held_amount - c.amount,
                    last_entry_seq = a.last_entry_seq + 1, updated_at = $3
               from captured c
              where a.account_id = $4
             returning a.ledger_balance, a.last_entry_seq
         ), credited as (
             update account a
                set ledger_balance = a.ledger_balance + c.amount,
                    last_entry_seq = a.last_entry_seq + 1, updated_at = $3
               from captured c
              where a.account_id = (select account_id from target)
             returning a.ledger_balance, a.last_entry_seq
         ), journal as (
             insert into journal (journal_id, kind, reference, hold_id, created_at)
             select $2, $9, $6, $1, $3 from captured
             returning ledger_seq
         ), entries as (
             insert into entry (entry_id, journal_id, account_id, currency, direction, amount,
                                balance_after, account_seq, created_at)
             select $7, $2, $4, c.currency, 'debit', c.amount, d.ledger_balance, d.last_entry_seq, $3
               from captured c, debited d
             union all
             select $8, $2, t.account_id, c.currency, 'credit', c.amount, k.ledger_balance,
                    k.last_entry_seq, $3
               from captured c, credited k, target t
         )
         select (select ok from checked) as ok,
                (select account_id from target) as credit_account,
                c.currency, c.amount,
                (select ledger_balance from debited) as debit_balance,
                (select last_entry_seq from debited) as debit_seq,
                (select ledger_balance from credited) as credit_balance,
                (select last_entry_seq from credited) as credit_seq,
                (select ledger_seq from journal) as ledger_seq
           from (select 1) as one left join captured c on true",
        )
        .bind(self.hold_id)
        .bind(self.journal_id)
        .bind(self.posted_at)
        .bind(self.source)
        .bind(self.destination)
        .bind(self.reference)
        .bind(self.entry_ids[0])
        .bind(self.entry_ids[1])
        .bind(self.kind.as_str())
        .fetch_one(conn)
        .await
    }
}

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

/// Why [`capture`] wrote nothing: the hold's state, a hold on another
/// account, an account that may not move, or no settlement account in the
/// hold's currency.
async fn capture_refusal(
    conn: &mut PgConnection,
    hold_id: Uuid,
    source: Uuid,
    credit: Credit,
    now: DateTime<Utc>,
) -> ApiError {
    let hold = match get_hold(conn, hold_id).await {
        Ok(hold) => hold,
        Err(error) => return error,
    };
    if hold.status_at(now) != HoldStatus::Active {
        return hold_refusal(conn, hold_id, now).await;
    }
    if hold.account_id != source {
        return ApiError::invalid_field(
            "source_account_id",
            format!(
                "is not account {}, which hold {hold_id} is on",
                hold.account_id
            ),
        );
    }
    let destination = match credit {
        Credit::Account(destination) => destination,
        Credit::Settlement => match settlement_account(conn, hold.currency, now).await {
            Ok(settlement) => settlement,
            Err(error) => return error,
        },
    };
    for account_id in [source, destination] {
        let error = refusal(conn, account_id, |account| {
            account.refuses_movement(hold.currency)
        })
        .await;
        if error.code() != corebank_platform::ErrorCode::Aborted {
            return error;
        }
    }
    ApiError::new(
        corebank_platform::ErrorCode::Aborted,
        "CONCURRENT_UPDATE",
        "the hold or its accounts changed concurrently, retry",
    )
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
