//! A hold captured into a transfer or a withdrawal: all or nothing in one
//! statement, and when it refuses, why.

use super::super::get_hold;
use super::super::holds::hold_refusal;
use super::*;

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
    let capturing = Capturing {
        hold_id,
        journal_id,
        entry_ids,
        source,
        kind,
        reference,
        posted_at,
    };
    match captured.journal(capturing)? {
        Some(journal) => Ok(journal),
        None => Err(capture_refusal(conn, hold_id, source, credit, now).await),
    }
}

/// What a capture statement ([`capture`]'s, or one row of
/// [`capture_batch`](super::capture_batch)'s) returns for one capture; all
/// null but `ok` (and `credit_account`) when it refused.
#[derive(sqlx::FromRow)]
pub(super) struct Captured {
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

/// One capture as its statement was told to write it.
pub(super) struct Capturing<'a> {
    pub(super) hold_id: Uuid,
    pub(super) journal_id: Uuid,
    /// The debit's entry, then the credit's.
    pub(super) entry_ids: [Uuid; 2],
    pub(super) source: Uuid,
    pub(super) kind: JournalKind,
    pub(super) reference: &'a str,
    pub(super) posted_at: DateTime<Utc>,
}

impl Captured {
    /// Whether the statement says it captured.
    pub(super) fn ok(&self) -> bool {
        self.ok == Some(true)
    }

    /// The journal the capture wrote, or `None` when it refused.
    pub(super) fn journal(self, capturing: Capturing<'_>) -> Result<Option<Journal>, ApiError> {
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
        } = self
        else {
            return Ok(None);
        };
        let hold_id = capturing.hold_id;
        let currency = Currency::parse(&currency).map_err(|error| {
            ApiError::internal(anyhow::anyhow!(
                "hold {hold_id} has currency {currency:?}: {error}"
            ))
        })?;
        let posting = Posting {
            journal_id: capturing.journal_id,
            kind: capturing.kind,
            reference: capturing.reference,
            hold_id: Some(hold_id),
            currency,
            posted_at: capturing.posted_at,
            ledger_seq,
        };
        Ok(Some(posting.journal([
            Written {
                entry_id: capturing.entry_ids[0],
                account_id: capturing.source,
                direction: Direction::Debit,
                amount,
                balance_after: debit_balance,
                account_seq: debit_seq,
            },
            Written {
                entry_id: capturing.entry_ids[1],
                account_id: credited,
                direction: Direction::Credit,
                amount,
                balance_after: credit_balance,
                account_seq: credit_seq,
            },
        ])))
    }
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

/// Why [`capture`] wrote nothing: the hold's state, a hold on another
/// account, an account that may not move, or no settlement account in the
/// hold's currency.
pub(super) async fn capture_refusal(
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
