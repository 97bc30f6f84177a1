//! Row types of the `account` schema and their conversion to domain values;
//! a value the domain does not know is an internal error, never guessed at.

use chrono::{DateTime, Utc};
use corebank_platform::error::ApiError;
use corebank_platform::money::Currency;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::{Account, AccountStatus, Direction, Entry, Hold, HoldStatus, Product};

pub(super) const ACCOUNT_COLUMNS: &str = "account_id, customer_id, currency, product, status, overdraft_limit, ledger_balance, \
                               held_amount, partner_id, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct AccountRow {
    pub(super) account_id: Uuid,
    pub(super) customer_id: Uuid,
    pub(super) currency: String,
    pub(super) product: String,
    pub(super) status: String,
    pub(super) overdraft_limit: Decimal,
    pub(super) ledger_balance: Decimal,
    pub(super) held_amount: Decimal,
    pub(super) partner_id: Option<String>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

impl TryFrom<AccountRow> for Account {
    type Error = ApiError;

    fn try_from(row: AccountRow) -> Result<Self, ApiError> {
        Ok(Account {
            account_id: row.account_id,
            customer_id: row.customer_id,
            currency: currency(&row.currency)?,
            product: known("product", &row.product, Product::parse)?,
            status: known("status", &row.status, AccountStatus::parse)?,
            overdraft_limit: row.overdraft_limit,
            ledger_balance: row.ledger_balance,
            held_amount: row.held_amount,
            partner_id: row.partner_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(super) const HOLD_COLUMNS: &str = "hold_id, account_id, currency, amount, status, reference, expires_at, journal_id, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(super) struct HoldRow {
    pub(super) hold_id: Uuid,
    pub(super) account_id: Uuid,
    pub(super) currency: String,
    pub(super) amount: Decimal,
    pub(super) status: String,
    pub(super) reference: String,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) journal_id: Option<Uuid>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

impl TryFrom<HoldRow> for Hold {
    type Error = ApiError;

    fn try_from(row: HoldRow) -> Result<Self, ApiError> {
        Ok(Hold {
            hold_id: row.hold_id,
            account_id: row.account_id,
            currency: currency(&row.currency)?,
            amount: row.amount,
            status: known("hold status", &row.status, HoldStatus::parse)?,
            reference: row.reference,
            expires_at: row.expires_at,
            journal_id: row.journal_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(super) const ENTRY_COLUMNS: &str = "entry_id, journal_id, account_id, currency, direction, amount, balance_after, account_seq, created_at";

#[derive(sqlx::FromRow)]
pub(super) struct EntryRow {
    pub(super) entry_id: Uuid,
    pub(super) journal_id: Uuid,
    pub(super) account_id: Uuid,
    pub(super) currency: String,
    pub(super) direction: String,
    pub(super) amount: Decimal,
    pub(super) balance_after: Decimal,
    pub(super) account_seq: i64,
    pub(super) created_at: DateTime<Utc>,
}

impl TryFrom<EntryRow> for Entry {
    type Error = ApiError;

    fn try_from(row: EntryRow) -> Result<Self, ApiError> {
        Ok(Entry {
            entry_id: row.entry_id,
            journal_id: row.journal_id,
            account_id: row.account_id,
            currency: currency(&row.currency)?,
            direction: known("direction", &row.direction, Direction::parse)?,
            amount: row.amount,
            balance_after: row.balance_after,
            account_seq: row.account_seq,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct JournalRow {
    pub(super) ledger_seq: i64,
    pub(super) kind: String,
    pub(super) reference: String,
    pub(super) hold_id: Option<Uuid>,
    pub(super) created_at: DateTime<Utc>,
}

pub(super) fn currency(code: &str) -> Result<Currency, ApiError> {
    Currency::parse(code)
        .map_err(|error| ApiError::internal(anyhow::anyhow!("in database: {error}")))
}

pub(super) fn known<T>(
    what: &str,
    text: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, ApiError> {
    parse(text)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("unknown {what} {text:?} in database")))
}
