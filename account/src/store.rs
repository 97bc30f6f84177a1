//! SQL for the `account` schema. The pool is private: callers get
//! transactions through [`AccountStore::idempotent`] and pass the connection
//! to the write functions, so one request composes its writes atomically.
//!
//! Accounts and their lifecycle live here; holds and postings in [`ledger`].

mod feed;
pub mod holds;
pub mod ledger;
mod rows;

use chrono::{DateTime, Utc};
use corebank_platform::error::ApiError;
use corebank_platform::idempotency::{self, IdempotencyConfig};
use corebank_platform::paging::Page;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use self::rows::{
    ACCOUNT_COLUMNS, AccountRow, ENTRY_COLUMNS, EntryRow, HOLD_COLUMNS, HoldRow, JournalRow, known,
};
use crate::domain::{
    self, Account, AccountAction, AccountStatus, Entry, Hold, Journal, JournalKind, NewAccount,
    Product, Refusal, reason,
};

#[derive(Debug, Clone)]
pub struct AccountStore {
    pool: PgPool,
    idempotency: IdempotencyConfig,
}

fn bad_token() -> ApiError {
    ApiError::invalid_field("page_token", "is not a token issued for this query")
}

/// The rows of a set statement, one per item asked for and in its order;
/// any other count is a bug, reported rather than zipped short.
pub(crate) fn one_row_each<T>(rows: Vec<T>, asked: usize, what: &str) -> Result<Vec<T>, ApiError> {
    if rows.len() != asked {
        return Err(ApiError::internal(anyhow::anyhow!(
            "{asked} {what} came back as {} rows",
            rows.len()
        )));
    }
    Ok(rows)
}

pub(crate) fn account_not_found(account_id: Uuid) -> ApiError {
    ApiError::not_found(
        reason::ACCOUNT_NOT_FOUND,
        format!("account {account_id} not found"),
    )
}

impl AccountStore {
    pub fn new(pool: PgPool, idempotency: IdempotencyConfig) -> Self {
        Self { pool, idempotency }
    }

    /// Runs `effect` in one transaction, guarded by the idempotency key.
    pub async fn idempotent<Resp, F>(
        &self,
        key: Option<&str>,
        fingerprint: &[u8],
        now: DateTime<Utc>,
        effect: F,
    ) -> Result<Resp, ApiError>
    where
        Resp: prost::Message + Default,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Resp, ApiError>>,
    {
        idempotency::run(&self.pool, key, fingerprint, now, self.idempotency, effect).await
    }

    /// Whether `key` already holds a stored response for this very request,
    /// so a replay can skip checks that call other services.
    pub async fn has_response(
        &self,
        key: &str,
        fingerprint: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        let stored: Option<(Vec<u8>, bool)> = sqlx::query_as(
            "select fingerprint, response is not null from idempotency_key
             where idempotency_key = $1 and expires_at > $2",
        )
        .bind(key)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(matches!(stored, Some((stored, true)) if stored == fingerprint))
    }

    pub async fn get_account(&self, account_id: Uuid) -> Result<Account, ApiError> {
        let mut conn = self.pool.acquire().await?;
        get_account(&mut conn, account_id, false).await
    }

    /// A customer's accounts, keyset-paged on the (time-ordered) account id;
    /// for a partner, only accounts it owns.
    pub async fn list_accounts(
        &self,
        customer_id: Uuid,
        partner_id: Option<&str>,
        page: &Page,
    ) -> Result<Vec<Account>, ApiError> {
        let after = page
            .after
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| bad_token())?;
        let rows: Vec<AccountRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {ACCOUNT_COLUMNS} from account
             where customer_id = $1 and ($2::uuid is null or account_id > $2)
               and ($4::text is null or partner_id = $4)
             order by account_id limit $3"
        )))
        .bind(customer_id)
        .bind(after)
        .bind(page.fetch_limit())
        .bind(partner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Account::try_from).collect()
    }

    /// An account's entries, newest first, keyset-paged on its entry sequence.
    pub async fn list_entries(
        &self,
        account_id: Uuid,
        page: &Page,
    ) -> Result<Vec<Entry>, ApiError> {
        let before = page
            .after
            .as_deref()
            .map(str::parse::<i64>)
            .transpose()
            .map_err(|_| bad_token())?;
        let mut conn = self.pool.acquire().await?;
        get_account(&mut conn, account_id, false).await?;
        let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {ENTRY_COLUMNS} from entry
             where account_id = $1 and ($2::bigint is null or account_seq < $2)
             order by account_seq desc limit $3"
        )))
        .bind(account_id)
        .bind(before)
        .bind(page.fetch_limit())
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(Entry::try_from).collect()
    }

    pub async fn get_hold(&self, hold_id: Uuid) -> Result<Hold, ApiError> {
        let mut conn = self.pool.acquire().await?;
        get_hold(&mut conn, hold_id).await
    }

    pub async fn get_journal(&self, journal_id: Uuid) -> Result<Journal, ApiError> {
        let mut conn = self.pool.acquire().await?;
        let journal: Option<JournalRow> = sqlx::query_as(
            "select journal_id, ledger_seq, kind, reference, hold_id, created_at from journal where journal_id = $1",
        )
        .bind(journal_id)
        .fetch_optional(&mut *conn)
        .await?;
        let journal = journal.ok_or_else(|| {
            ApiError::not_found(
                reason::JOURNAL_NOT_FOUND,
                format!("journal {journal_id} not found"),
            )
        })?;
        let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {ENTRY_COLUMNS} from entry where journal_id = $1 order by entry_id"
        )))
        .bind(journal_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Journal {
            journal_id,
            ledger_seq: journal.ledger_seq,
            kind: known("journal kind", &journal.kind, JournalKind::parse)?,
            reference: journal.reference,
            hold_id: journal.hold_id,
            entries: rows
                .into_iter()
                .map(Entry::try_from)
                .collect::<Result<_, _>>()?,
            created_at: journal.created_at,
        })
    }

    /// Marks active holds past their expiry as expired and returns their
    /// amounts to the available balance; returns how many.
    pub async fn expire_holds(&self, now: DateTime<Utc>) -> Result<u64, ApiError> {
        let mut tx = self.pool.begin().await?;
        let expired = holds::expire_holds(&mut tx, now).await?;
        tx.commit().await?;
        Ok(expired)
    }
}

/// Reads one account; `for_update` locks the row.
pub async fn get_account(
    conn: &mut PgConnection,
    account_id: Uuid,
    for_update: bool,
) -> Result<Account, ApiError> {
    let lock = if for_update { " for update" } else { "" };
    let row: Option<AccountRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {ACCOUNT_COLUMNS} from account where account_id = $1{lock}"
    )))
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| account_not_found(account_id))?.try_into()
}

pub async fn get_hold(conn: &mut PgConnection, hold_id: Uuid) -> Result<Hold, ApiError> {
    let row: Option<HoldRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {HOLD_COLUMNS} from hold where hold_id = $1"
    )))
    .bind(hold_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| {
        ApiError::not_found(reason::HOLD_NOT_FOUND, format!("hold {hold_id} not found"))
    })?
    .try_into()
}

/// Explains why a conditional UPDATE on an account touched no row, from the
/// row as it reads now.
pub(crate) async fn refusal(
    conn: &mut PgConnection,
    account_id: Uuid,
    check: impl Fn(&Account) -> Option<Refusal>,
) -> ApiError {
    let account = match get_account(conn, account_id, false).await {
        Ok(account) => account,
        Err(error) => return error,
    };
    match check(&account) {
        Some(refusal) => refused(&account, refusal),
        None => ApiError::new(
            corebank_platform::ErrorCode::Aborted,
            "CONCURRENT_UPDATE",
            "the account changed concurrently, retry",
        ),
    }
}

pub(crate) fn refused(account: &Account, refusal: Refusal) -> ApiError {
    let message = match refusal {
        Refusal::Closed => format!("account {} is closed", account.account_id),
        Refusal::Frozen => format!("account {} is frozen", account.account_id),
        Refusal::CurrencyMismatch => {
            format!("account {} holds {}", account.account_id, account.currency)
        }
        Refusal::InsufficientFunds => format!(
            "account {} has insufficient available funds",
            account.account_id
        ),
    };
    let error = ApiError::failed_precondition(refusal.reason(), message)
        .with_metadata("account_id", account.account_id.to_string());
    match refusal {
        Refusal::CurrencyMismatch => {
            error.with_metadata("account_currency", account.currency.code())
        }
        Refusal::InsufficientFunds => error
            .with_metadata("available", account.currency.format(account.available()))
            .with_metadata(
                "overdraft_limit",
                account.currency.format(account.overdraft_limit),
            ),
        _ => error,
    }
}

#[tracing::instrument(skip_all, fields(account_id = %account_id, customer_id = %new.customer_id), err)]
pub async fn insert_account(
    conn: &mut PgConnection,
    account_id: Uuid,
    new: &NewAccount,
    now: DateTime<Utc>,
) -> Result<Account, ApiError> {
    let row: AccountRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "insert into account (account_id, customer_id, currency, product, status, overdraft_limit, partner_id, created_at, updated_at)
         values ($1, $2, $3, $4, 'active', $5, $7, $6, $6)
         returning {ACCOUNT_COLUMNS}"
    )))
    .bind(account_id)
    .bind(new.customer_id)
    .bind(new.currency.code())
    .bind(new.product.as_str())
    .bind(new.overdraft_limit)
    .bind(now)
    .bind(new.partner_id.as_deref())
    .fetch_one(&mut *conn)
    .await?;
    insert_event(
        conn,
        account_id,
        "open",
        None,
        AccountStatus::Active,
        "customer",
        "",
        now,
    )
    .await?;
    row.try_into()
}

/// Freezes, unfreezes or closes an account and appends the history row, in
/// the caller's transaction; a refused move changes nothing. Returns the
/// account as it is now and the status it left.
#[tracing::instrument(skip_all, fields(account_id = %account_id, action = action.as_str()), err)]
pub async fn transition(
    conn: &mut PgConnection,
    account_id: Uuid,
    action: AccountAction,
    actor: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(Account, AccountStatus), ApiError> {
    let current = get_account(conn, account_id, true).await?;
    if current.product == Product::Settlement {
        return Err(ApiError::failed_precondition(
            reason::SETTLEMENT_ACCOUNT,
            "the bank's settlement accounts cannot be frozen or closed",
        ));
    }
    let to = domain::lifecycle(action, current.status).map_err(|refusal| {
        ApiError::failed_precondition(
            refusal,
            format!(
                "cannot {} a {} account",
                action.as_str(),
                current.status.as_str()
            ),
        )
        .with_metadata("status", current.status.as_str())
    })?;
    if action == AccountAction::Close {
        let active_holds: bool = sqlx::query_scalar(
            "select exists (select 1 from hold where account_id = $1 and status = 'active')",
        )
        .bind(account_id)
        .fetch_one(&mut *conn)
        .await?;
        if active_holds {
            return Err(ApiError::failed_precondition(
                reason::ACCOUNT_HAS_ACTIVE_HOLDS,
                "release or capture the account's active holds first",
            ));
        }
        if !current.ledger_balance.is_zero() {
            return Err(ApiError::failed_precondition(
                reason::ACCOUNT_NOT_EMPTY,
                "only an account with a zero balance can be closed",
            )
            .with_metadata(
                "ledger_balance",
                current.currency.format(current.ledger_balance),
            ));
        }
    }
    sqlx::query("update account set status = $2, updated_at = $3 where account_id = $1")
        .bind(account_id)
        .bind(to.as_str())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    insert_event(
        conn,
        account_id,
        action.as_str(),
        Some(current.status),
        to,
        actor,
        why,
        now,
    )
    .await?;
    let from = current.status;
    Ok((
        Account {
            status: to,
            updated_at: now,
            ..current
        },
        from,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn insert_event(
    conn: &mut PgConnection,
    account_id: Uuid,
    action: &str,
    from: Option<AccountStatus>,
    to: AccountStatus,
    actor: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query(
        "insert into account_event (account_event_id, account_id, action, from_status, to_status, actor, reason, created_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(account_id)
    .bind(action)
    .bind(from.map(AccountStatus::as_str))
    .bind(to.as_str())
    .bind(actor)
    .bind(why)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
