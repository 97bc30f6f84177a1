//! Proto ⇄ domain: parsing request fields into domain values (each error
//! worded for a `BadRequest` field violation) and rendering domain values.

use chrono::{DateTime, Utc};
use corebank_platform::Violations;
use corebank_platform::messaging::OutgoingMessage;
use corebank_platform::money::Currency;
use corebank_platform::time::to_timestamp;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::feed::{LedgerEntry, LedgerSummary};
use crate::domain::{
    Account, AccountAction, AccountStatus, Direction, Entry, Hold, HoldStatus, Journal,
    JournalKind, Product,
};

/// A required UUID field.
pub fn parse_id(text: &str) -> Result<Uuid, &'static str> {
    if text.is_empty() {
        return Err("is required");
    }
    Uuid::parse_str(text).map_err(|_| "must be a UUID")
}

/// The idempotency key every mutating method requires.
pub fn required_key(violations: &mut Violations, key: &str) -> String {
    corebank_platform::idempotency::required_key(violations, key)
}

/// An optional protobuf timestamp as UTC time.
pub fn parse_time(
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, &'static str> {
    let Some(timestamp) = timestamp else {
        return Ok(None);
    };
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err("must be a valid timestamp");
    }
    corebank_platform::time::from_timestamp(timestamp)
        .map(Some)
        .ok_or("must be a valid timestamp")
}

pub fn product_from_proto(value: i32) -> Result<Product, &'static str> {
    match pb::AccountProduct::try_from(value) {
        Ok(pb::AccountProduct::Checking) => Ok(Product::Checking),
        Ok(pb::AccountProduct::Savings) => Ok(Product::Savings),
        Ok(pb::AccountProduct::Unspecified) => Err("is required: CHECKING or SAVINGS"),
        Ok(pb::AccountProduct::Settlement) => {
            Err("settlement accounts cannot be opened by clients")
        }
        Err(_) => Err("is not a known product"),
    }
}

fn money_out(currency: Currency, amount: Decimal) -> Option<pb::Money> {
    Some(pb::Money {
        currency: currency.code().to_owned(),
        amount: currency.format(amount),
    })
}

fn product_to_proto(product: Product) -> pb::AccountProduct {
    match product {
        Product::Checking => pb::AccountProduct::Checking,
        Product::Savings => pb::AccountProduct::Savings,
        Product::Settlement => pb::AccountProduct::Settlement,
    }
}

fn status_to_proto(status: AccountStatus) -> pb::AccountStatus {
    match status {
        AccountStatus::Active => pb::AccountStatus::Active,
        AccountStatus::Frozen => pb::AccountStatus::Frozen,
        AccountStatus::Closed => pb::AccountStatus::Closed,
    }
}

fn hold_status_to_proto(status: HoldStatus) -> pb::HoldStatus {
    match status {
        HoldStatus::Active => pb::HoldStatus::Active,
        HoldStatus::Captured => pb::HoldStatus::Captured,
        HoldStatus::Released => pb::HoldStatus::Released,
        HoldStatus::Expired => pb::HoldStatus::Expired,
    }
}

fn kind_to_proto(kind: JournalKind) -> pb::JournalKind {
    match kind {
        JournalKind::Transfer => pb::JournalKind::Transfer,
        JournalKind::Deposit => pb::JournalKind::Deposit,
        JournalKind::Withdrawal => pb::JournalKind::Withdrawal,
    }
}

fn direction_to_proto(direction: Direction) -> pb::EntryDirection {
    match direction {
        Direction::Debit => pb::EntryDirection::Debit,
        Direction::Credit => pb::EntryDirection::Credit,
    }
}

pub fn account_to_proto(account: &Account) -> pb::Account {
    pb::Account {
        account_id: account.account_id.to_string(),
        customer_id: account.customer_id.to_string(),
        currency: account.currency.code().to_owned(),
        product: product_to_proto(account.product) as i32,
        status: status_to_proto(account.status) as i32,
        overdraft_limit: money_out(account.currency, account.overdraft_limit),
        create_time: Some(to_timestamp(account.created_at)),
        update_time: Some(to_timestamp(account.updated_at)),
        partner_id: account.partner_id.clone().unwrap_or_default(),
    }
}

pub fn balance_to_proto(account: &Account) -> pb::Balance {
    pb::Balance {
        account_id: account.account_id.to_string(),
        ledger: money_out(account.currency, account.ledger_balance),
        available: money_out(account.currency, account.available()),
        held: money_out(account.currency, account.held_amount),
        overdraft_limit: money_out(account.currency, account.overdraft_limit),
    }
}

/// A hold as seen at `now` (an unswept hold past its expiry reads EXPIRED).
pub fn hold_to_proto(hold: &Hold, now: DateTime<Utc>) -> pb::Hold {
    pb::Hold {
        hold_id: hold.hold_id.to_string(),
        account_id: hold.account_id.to_string(),
        amount: money_out(hold.currency, hold.amount),
        status: hold_status_to_proto(hold.status_at(now)) as i32,
        reference: hold.reference.clone(),
        expire_time: Some(to_timestamp(hold.expires_at)),
        journal_id: hold.journal_id.map(|id| id.to_string()).unwrap_or_default(),
        create_time: Some(to_timestamp(hold.created_at)),
        update_time: Some(to_timestamp(hold.updated_at)),
    }
}

pub fn entry_to_proto(entry: &Entry) -> pb::Entry {
    pb::Entry {
        entry_id: entry.entry_id.to_string(),
        journal_id: entry.journal_id.to_string(),
        account_id: entry.account_id.to_string(),
        direction: direction_to_proto(entry.direction) as i32,
        amount: money_out(entry.currency, entry.amount),
        running_balance: money_out(entry.currency, entry.balance_after),
        create_time: Some(to_timestamp(entry.created_at)),
    }
}

pub fn journal_to_proto(journal: &Journal) -> pb::Journal {
    pb::Journal {
        journal_id: journal.journal_id.to_string(),
        kind: kind_to_proto(journal.kind) as i32,
        reference: journal.reference.clone(),
        entries: journal.entries.iter().map(entry_to_proto).collect(),
        hold_id: journal.hold_id.map(|id| id.to_string()).unwrap_or_default(),
        create_time: Some(to_timestamp(journal.created_at)),
    }
}

/// A feed entry; amounts as decimal strings at the currency's scale.
pub fn ledger_entry_to_proto(entry: &LedgerEntry) -> pb::LedgerEntry {
    pb::LedgerEntry {
        entry_id: entry.entry_id.to_string(),
        journal_id: entry.journal_id.to_string(),
        ledger_seq: entry.ledger_seq,
        account_id: entry.account_id.to_string(),
        account_seq: entry.account_seq,
        counterparty_account_id: entry
            .counterparty_account_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        currency: entry.currency.code().to_owned(),
        direction: direction_to_proto(entry.direction) as i32,
        amount: entry.currency.format(entry.amount),
        balance_after: entry.currency.format(entry.balance_after),
        kind: kind_to_proto(entry.kind) as i32,
        transaction_id: entry.reference.clone(),
        post_time: Some(to_timestamp(entry.posted_at)),
    }
}

pub fn ledger_summary_to_proto(
    summary: &LedgerSummary,
    next_page_token: String,
) -> pb::LedgerSummary {
    pb::LedgerSummary {
        as_of_ledger_seq: summary.as_of_ledger_seq,
        head_ledger_seq: summary.head_ledger_seq,
        accounts: summary
            .accounts
            .iter()
            .map(|account| pb::AccountLedgerSummary {
                account_id: account.account_id.to_string(),
                currency: account.currency.code().to_owned(),
                entry_count: account.entry_count,
                balance: account.currency.format(account.balance),
                last_account_seq: account.last_account_seq,
            })
            .collect(),
        currencies: summary
            .currencies
            .iter()
            .map(|total| pb::CurrencyLedgerTotal {
                currency: total.currency.code().to_owned(),
                debits: total.currency.format(total.debits),
                credits: total.currency.format(total.credits),
                entry_count: total.entry_count,
            })
            .collect(),
        next_page_token,
    }
}

/// The event a lifecycle action publishes, under its routing key.
pub fn status_changed(
    action: AccountAction,
    account: &Account,
    from: AccountStatus,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> OutgoingMessage {
    let routing_key = match action {
        AccountAction::Freeze => wire::event::ACCOUNT_FROZEN,
        AccountAction::Unfreeze => wire::event::ACCOUNT_UNFROZEN,
        AccountAction::Close => wire::event::ACCOUNT_CLOSED,
    };
    let changed = pb::AccountStatusChangedEvent {
        account_id: account.account_id.to_string(),
        from_status: from.as_str().to_owned(),
        to_status: account.status.as_str().to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        change_time: Some(to_timestamp(now)),
    };
    OutgoingMessage::event_of(routing_key, &changed).with_occurred_at(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_malformed_ones_are_refused() {
        let noon = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 500,
        };
        assert!(matches!(parse_time(Some(&noon)), Ok(Some(_))));
        assert_eq!(parse_time(None), Ok(None));
        let negative = prost_types::Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert!(parse_time(Some(&negative)).is_err());
    }

    #[test]
    fn settlement_accounts_cannot_be_opened_by_clients() {
        assert_eq!(
            product_from_proto(pb::AccountProduct::Checking as i32),
            Ok(Product::Checking)
        );
        assert!(product_from_proto(pb::AccountProduct::Settlement as i32).is_err());
        assert!(product_from_proto(0).is_err());
        assert!(product_from_proto(42).is_err());
    }

    #[test]
    fn amounts_are_rendered_with_the_currency_exponent() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(money_out(usd, Decimal::new(-5, 0)).unwrap().amount, "-5.00");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(
            money_out(jpy, Decimal::new(70_000_000_000, 8))
                .unwrap()
                .amount,
            "700"
        );
    }
}
