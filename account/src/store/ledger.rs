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
use super::{HOLD_COLUMNS, HoldRow, get_hold, refusal};
use crate::domain::{
    self, BANK_CUSTOMER_ID, Direction, Entry, Hold, HoldStatus, Journal, JournalKind, Leg, reason,
};

/// Captures an active, unexpired hold into a journal: debits the held
/// account, credits `destination` or, when none, the settlement account of
/// the hold's currency (a withdrawal).
#[tracing::instrument(skip_all, fields(hold_id = %hold_id), err)]
pub async fn capture_hold(
    conn: &mut PgConnection,
    hold_id: Uuid,
    destination: Option<Uuid>,
    reference: &str,
    now: DateTime<Utc>,
) -> Result<Journal, ApiError> {
    let journal_id = Uuid::now_v7();
    let row: Option<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "update hold set status = 'captured', journal_id = $2, updated_at = $3
         where hold_id = $1 and status = 'active' and expires_at > $3
         returning {HOLD_COLUMNS}"
    )))
    .bind(hold_id)
    .bind(journal_id)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let hold: Hold = match row {
        Some(row) => row.try_into()?,
        None => return Err(hold_refusal(conn, hold_id, now).await),
    };
    let (credit, kind) = match destination {
        Some(destination) if destination == hold.account_id => {
            return Err(ApiError::invalid_field(
                "destination_account_id",
                "must not be the account the hold is on",
            ));
        }
        Some(destination) => (destination, JournalKind::Transfer),
        None => (
            settlement_account(conn, hold.currency, now).await?,
            JournalKind::Withdrawal,
        ),
    };
    let legs = domain::transfer_legs(hold.account_id, credit, hold.amount, hold.amount);
    post(
        conn,
        journal_id,
        kind,
        reference,
        Some(hold_id),
        hold.currency,
        &legs,
        now,
    )
    .await
}

/// Captures an active, unexpired hold on `source` into a transfer journal
/// crediting `destination`, all or nothing in one statement: the hold is
/// locked, then both accounts in id order, everything is checked under those
/// locks, and only then are the hold, both balances, the journal and its
/// entries written. So a refusal writes nothing and needs no savepoint; it
/// reads the rows again to say why.
#[tracing::instrument(skip_all, fields(hold_id = %hold_id), err)]
pub async fn capture_transfer(
    conn: &mut PgConnection,
    hold_id: Uuid,
    source: Uuid,
    destination: Uuid,
    reference: &str,
    now: DateTime<Utc>,
) -> Result<Journal, ApiError> {
    if destination == source {
        return Err(ApiError::invalid_field(
            "destination_account_id",
            "must not be the account the hold is on",
        ));
    }
    // At the database's microsecond precision, as in `post`.
    let posted_at = now.trunc_subsecs(6);
    let journal_id = Uuid::now_v7();
    let entry_ids = [Uuid::now_v7(), Uuid::now_v7()];
    #[derive(sqlx::FromRow)]
    struct Captured {
        ok: Option<bool>,
        currency: Option<String>,
        amount: Option<Decimal>,
        debit_balance: Option<Decimal>,
        debit_seq: Option<i64>,
        credit_balance: Option<Decimal>,
        credit_seq: Option<i64>,
        ledger_seq: Option<i64>,
    }
    let captured: Captured = sqlx::query_as(
        "with held as (
             select account_id, currency, amount, status, expires_at from hold
              where hold_id = $1 for update
         ), accounts as (
             select account_id, currency, status from account
              where account_id in ($4, $5) and exists (select 1 from held)
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
              where a.account_id = $5
             returning a.ledger_balance, a.last_entry_seq
         ), journal as (
             insert into journal (journal_id, kind, reference, hold_id, created_at)
             select $2, 'transfer', $6, $1, $3 from captured
             returning ledger_seq
         ), entries as (
             insert into entry (entry_id, journal_id, account_id, currency, direction, amount,
                                balance_after, account_seq, created_at)
             select $7, $2, $4, c.currency, 'debit', c.amount, d.ledger_balance, d.last_entry_seq, $3
               from captured c, debited d
             union all
             select $8, $2, $5, c.currency, 'credit', c.amount, k.ledger_balance, k.last_entry_seq, $3
               from captured c, credited k
         )
         select (select ok from checked) as ok,
                c.currency, c.amount,
                (select ledger_balance from debited) as debit_balance,
                (select last_entry_seq from debited) as debit_seq,
                (select ledger_balance from credited) as credit_balance,
                (select last_entry_seq from credited) as credit_seq,
                (select ledger_seq from journal) as ledger_seq
           from (select 1) as one left join captured c on true",
    )
    .bind(hold_id)
    .bind(journal_id)
    .bind(posted_at)
    .bind(source)
    .bind(destination)
    .bind(reference)
    .bind(entry_ids[0])
    .bind(entry_ids[1])
    .fetch_one(&mut *conn)
    .await?;
    let Captured {
        ok: Some(true),
        currency: Some(currency),
        amount: Some(amount),
        debit_balance: Some(debit_balance),
        debit_seq: Some(debit_seq),
        credit_balance: Some(credit_balance),
        credit_seq: Some(credit_seq),
        ledger_seq: Some(ledger_seq),
    } = captured
    else {
        return Err(capture_refusal(conn, hold_id, source, destination, now).await);
    };
    let currency = Currency::parse(&currency).map_err(|error| {
        ApiError::internal(anyhow::anyhow!(
            "hold {hold_id} has currency {currency:?}: {error}"
        ))
    })?;
    let entry = |entry_id, account_id, direction, (balance_after, account_seq)| Entry {
        entry_id,
        journal_id,
        account_id,
        currency,
        direction,
        amount,
        balance_after,
        account_seq,
        created_at: posted_at,
    };
    let mut entries = vec![
        entry(
            entry_ids[0],
            source,
            Direction::Debit,
            (debit_balance, debit_seq),
        ),
        entry(
            entry_ids[1],
            destination,
            Direction::Credit,
            (credit_balance, credit_seq),
        ),
    ];
    // In account id order, as `post` lists them.
    entries.sort_by_key(|entry| entry.account_id);
    tracing::debug!(%journal_id, ledger_seq, kind = "transfer", "journal posted");
    Ok(Journal {
        journal_id,
        ledger_seq,
        kind: JournalKind::Transfer,
        reference: reference.to_owned(),
        hold_id: Some(hold_id),
        entries,
        created_at: posted_at,
    })
}

/// Why [`capture_transfer`] wrote nothing: the hold's state, a hold on
/// another account, or an account that may not move.
async fn capture_refusal(
    conn: &mut PgConnection,
    hold_id: Uuid,
    source: Uuid,
    destination: Uuid,
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
    let entries = legs
        .iter()
        .zip(entry_ids)
        .zip([first, second])
        .map(|((leg, entry_id), (balance_after, account_seq))| Entry {
            entry_id,
            journal_id,
            account_id: leg.account_id,
            currency,
            direction: leg.direction,
            amount: leg.amount,
            balance_after,
            account_seq,
            created_at: posted_at,
        })
        .collect();
    tracing::debug!(%journal_id, ledger_seq, kind = kind.as_str(), "journal posted");
    Ok(Journal {
        journal_id,
        ledger_seq,
        kind,
        reference: reference.to_owned(),
        hold_id,
        entries,
        created_at: posted_at,
    })
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
