//! Accounts, holds and the ledger: pure types and rules, no I/O.
//!
//! The store enforces these rules with conditional statements; when one of
//! them touches no row, the functions here explain why from the row as read.

use chrono::{DateTime, Duration, Utc};
use corebank_platform::Violations;
use corebank_platform::money::Currency;
use rust_decimal::Decimal;
use uuid::Uuid;

pub mod feed;

/// Stable reasons this service answers with.
pub mod reason {
    pub const ACCOUNT_NOT_FOUND: &str = "ACCOUNT_NOT_FOUND";
    pub const ACCOUNT_FROZEN: &str = "ACCOUNT_FROZEN";
    pub const ACCOUNT_CLOSED: &str = "ACCOUNT_CLOSED";
    pub const ACCOUNT_NOT_FROZEN: &str = "ACCOUNT_NOT_FROZEN";
    pub const ACCOUNT_NOT_EMPTY: &str = "ACCOUNT_NOT_EMPTY";
    pub const ACCOUNT_HAS_ACTIVE_HOLDS: &str = "ACCOUNT_HAS_ACTIVE_HOLDS";
    pub const SETTLEMENT_ACCOUNT: &str = "SETTLEMENT_ACCOUNT";
    pub const INSUFFICIENT_FUNDS: &str = "INSUFFICIENT_FUNDS";
    pub const CURRENCY_MISMATCH: &str = "CURRENCY_MISMATCH";
    pub const HOLD_NOT_FOUND: &str = "HOLD_NOT_FOUND";
    pub const HOLD_NOT_ACTIVE: &str = "HOLD_NOT_ACTIVE";
    pub const HOLD_EXPIRED: &str = "HOLD_EXPIRED";
    pub const JOURNAL_NOT_FOUND: &str = "JOURNAL_NOT_FOUND";
    pub const CUSTOMER_NOT_FOUND: &str = "CUSTOMER_NOT_FOUND";
    pub const KYC_NOT_VERIFIED: &str = "KYC_NOT_VERIFIED";
}

/// The customer id of the bank's own settlement accounts.
pub const BANK_CUSTOMER_ID: Uuid = Uuid::nil();

/// How long a hold lives when the request does not say.
pub const DEFAULT_HOLD_TTL: Duration = Duration::days(7);
/// The longest a hold may live.
pub const MAX_HOLD_TTL: Duration = Duration::days(30);

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(
    /// What kind of account; settlement accounts belong to the bank.
    Product { Checking => "checking", Savings => "savings", Settlement => "settlement" }
);

text_enum!(
    /// Frozen accounts take no new holds, debits or credits; closed ones nothing at all.
    AccountStatus { Active => "active", Frozen => "frozen", Closed => "closed" }
);

text_enum!(
    /// active → captured | released | expired; the three are final.
    HoldStatus { Active => "active", Captured => "captured", Released => "released", Expired => "expired" }
);

text_enum!(
    /// Which way an entry moves its account's ledger balance: credit adds.
    Direction { Debit => "debit", Credit => "credit" }
);

text_enum!(
    JournalKind { Transfer => "transfer", Deposit => "deposit", Withdrawal => "withdrawal" }
);

text_enum!(
    /// A lifecycle change an operator asks for (opening is not one: it has no `from`).
    AccountAction { Freeze => "freeze", Unfreeze => "unfreeze", Close => "close" }
);

impl Direction {
    /// The entry's effect on the ledger balance.
    pub fn signed(self, amount: Decimal) -> Decimal {
        match self {
            Self::Credit => amount,
            Self::Debit => -amount,
        }
    }
}

/// A stored account with its balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: Uuid,
    pub customer_id: Uuid,
    pub currency: Currency,
    pub product: Product,
    pub status: AccountStatus,
    pub overdraft_limit: Decimal,
    pub ledger_balance: Decimal,
    pub held_amount: Decimal,
    /// The partner owning the customer; `None` for the bank's own.
    pub partner_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why an account refuses a movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Closed,
    Frozen,
    CurrencyMismatch,
    InsufficientFunds,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Closed => reason::ACCOUNT_CLOSED,
            Self::Frozen => reason::ACCOUNT_FROZEN,
            Self::CurrencyMismatch => reason::CURRENCY_MISMATCH,
            Self::InsufficientFunds => reason::INSUFFICIENT_FUNDS,
        }
    }
}

impl Account {
    /// Ledger minus active holds.
    pub fn available(&self) -> Decimal {
        self.ledger_balance - self.held_amount
    }

    /// Whether the account takes a credit (or a capture's debit) in `currency`.
    pub fn refuses_movement(&self, currency: Currency) -> Option<Refusal> {
        match self.status {
            AccountStatus::Closed => Some(Refusal::Closed),
            AccountStatus::Frozen => Some(Refusal::Frozen),
            AccountStatus::Active if self.currency != currency => Some(Refusal::CurrencyMismatch),
            AccountStatus::Active => None,
        }
    }

    /// Whether the account takes a new hold of `amount` in `currency`: the
    /// available balance may not drop below minus the overdraft limit.
    pub fn refuses_hold(&self, currency: Currency, amount: Decimal) -> Option<Refusal> {
        self.refuses_movement(currency).or_else(|| {
            (self.available() + self.overdraft_limit < amount).then_some(Refusal::InsufficientFunds)
        })
    }
}

/// Where a lifecycle action leads from `from`, or the reason it is refused.
pub fn lifecycle(
    action: AccountAction,
    from: AccountStatus,
) -> Result<AccountStatus, &'static str> {
    use AccountStatus::*;
    match (action, from) {
        (_, Closed) => Err(reason::ACCOUNT_CLOSED),
        (AccountAction::Freeze, Active) => Ok(Frozen),
        (AccountAction::Unfreeze, Frozen) => Ok(Active),
        (AccountAction::Unfreeze, Active) => Err(reason::ACCOUNT_NOT_FROZEN),
        (AccountAction::Close, Active) => Ok(Closed),
        (AccountAction::Freeze | AccountAction::Close, Frozen) => Err(reason::ACCOUNT_FROZEN),
    }
}

/// A validated request to open an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub customer_id: Uuid,
    /// The customer's partner, as the customer service recorded it.
    pub partner_id: Option<String>,
    pub currency: Currency,
    pub product: Product,
    pub overdraft_limit: Decimal,
}

/// A stored hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub hold_id: Uuid,
    pub account_id: Uuid,
    pub currency: Currency,
    pub amount: Decimal,
    pub status: HoldStatus,
    pub reference: String,
    pub expires_at: DateTime<Utc>,
    pub journal_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Hold {
    /// The status as of `now`: an active hold past its expiry is expired,
    /// even before the sweeper has marked it.
    pub fn status_at(&self, now: DateTime<Utc>) -> HoldStatus {
        if self.status == HoldStatus::Active && self.expires_at <= now {
            HoldStatus::Expired
        } else {
            self.status
        }
    }
}

/// The lifetime of a new hold: the default when not given, at most 30 days.
pub fn hold_ttl(requested: Option<Duration>) -> Result<Duration, &'static str> {
    match requested {
        None => Ok(DEFAULT_HOLD_TTL),
        Some(ttl) if ttl <= Duration::zero() => Err("must be positive"),
        Some(ttl) if ttl > MAX_HOLD_TTL => Err("must be at most 30 days"),
        Some(ttl) => Ok(ttl),
    }
}

/// One posted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub entry_id: Uuid,
    pub journal_id: Uuid,
    pub account_id: Uuid,
    pub currency: Currency,
    pub direction: Direction,
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub account_seq: i64,
    pub created_at: DateTime<Utc>,
}

/// A posted journal with its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    pub journal_id: Uuid,
    /// The journal's position in the whole ledger (unique, increasing with
    /// each posting; a rolled back posting leaves a gap).
    pub ledger_seq: i64,
    pub kind: JournalKind,
    pub reference: String,
    pub hold_id: Option<Uuid>,
    pub entries: Vec<Entry>,
    pub created_at: DateTime<Utc>,
}

/// One side of a posting before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub account_id: Uuid,
    pub direction: Direction,
    pub amount: Decimal,
    /// How much of the account's held amount this leg consumes (a capture).
    pub release_held: Decimal,
}

/// A transfer of `amount` from `debit` to `credit`, as two legs in lock
/// order (by account id), so concurrent postings never deadlock.
pub fn transfer_legs(
    debit: Uuid,
    credit: Uuid,
    amount: Decimal,
    release_held: Decimal,
) -> [Leg; 2] {
    let debit_leg = Leg {
        account_id: debit,
        direction: Direction::Debit,
        amount,
        release_held,
    };
    let credit_leg = Leg {
        account_id: credit,
        direction: Direction::Credit,
        amount,
        release_held: Decimal::ZERO,
    };
    if debit <= credit {
        [debit_leg, credit_leg]
    } else {
        [credit_leg, debit_leg]
    }
}

/// Whether legs sum to zero: the rule every journal obeys.
pub fn balanced(legs: &[Leg]) -> bool {
    legs.iter()
        .map(|leg| leg.direction.signed(leg.amount))
        .sum::<Decimal>()
        == Decimal::ZERO
}

/// Free text kept with a hold or journal.
pub fn parse_reference(text: &str) -> Result<String, &'static str> {
    let reference = text.trim();
    if reference.chars().count() > 200 {
        return Err("must be at most 200 characters");
    }
    if reference.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(reference.to_owned())
}

/// Validates who asks for a lifecycle change and why; both go to the history.
pub fn parse_decision(violations: &mut Violations, actor: &str, reason: &str) -> (String, String) {
    violations.check(!actor.trim().is_empty(), "actor", "is required");
    violations.check(
        actor.len() <= 100,
        "actor",
        "must be at most 100 characters",
    );
    violations.check(!reason.trim().is_empty(), "reason", "is required");
    violations.check(
        reason.len() <= 1000,
        "reason",
        "must be at most 1000 characters",
    );
    (actor.trim().to_owned(), reason.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn account(ledger: i64, held: i64, overdraft: i64) -> Account {
        let now = Utc::now();
        Account {
            account_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            currency: usd(),
            product: Product::Checking,
            status: AccountStatus::Active,
            overdraft_limit: Decimal::from(overdraft),
            ledger_balance: Decimal::from(ledger),
            held_amount: Decimal::from(held),
            partner_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn available_is_ledger_minus_holds() {
        assert_eq!(account(100, 30, 0).available(), Decimal::from(70));
    }

    #[test]
    fn a_hold_may_use_the_available_balance_and_the_overdraft_but_no_more() {
        let with_overdraft = account(100, 30, 50);
        assert_eq!(with_overdraft.refuses_hold(usd(), Decimal::from(120)), None);
        assert_eq!(
            with_overdraft.refuses_hold(usd(), Decimal::from(121)),
            Some(Refusal::InsufficientFunds)
        );
    }

    #[test]
    fn closed_beats_frozen_beats_currency_beats_funds() {
        let mut closed = account(0, 0, 0);
        closed.status = AccountStatus::Closed;
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(
            closed.refuses_hold(eur, Decimal::ONE),
            Some(Refusal::Closed)
        );
        let mut frozen = account(0, 0, 0);
        frozen.status = AccountStatus::Frozen;
        assert_eq!(
            frozen.refuses_hold(eur, Decimal::ONE),
            Some(Refusal::Frozen)
        );
        assert_eq!(
            account(0, 0, 0).refuses_hold(eur, Decimal::ONE),
            Some(Refusal::CurrencyMismatch)
        );
    }

    #[test]
    fn the_lifecycle_allows_only_its_moves() {
        use AccountStatus::*;
        assert_eq!(lifecycle(AccountAction::Freeze, Active), Ok(Frozen));
        assert_eq!(lifecycle(AccountAction::Unfreeze, Frozen), Ok(Active));
        assert_eq!(lifecycle(AccountAction::Close, Active), Ok(Closed));
        assert_eq!(
            lifecycle(AccountAction::Freeze, Frozen),
            Err(reason::ACCOUNT_FROZEN)
        );
        assert_eq!(
            lifecycle(AccountAction::Close, Frozen),
            Err(reason::ACCOUNT_FROZEN)
        );
        assert_eq!(
            lifecycle(AccountAction::Unfreeze, Active),
            Err(reason::ACCOUNT_NOT_FROZEN)
        );
        for action in [
            AccountAction::Freeze,
            AccountAction::Unfreeze,
            AccountAction::Close,
        ] {
            assert_eq!(lifecycle(action, Closed), Err(reason::ACCOUNT_CLOSED));
        }
    }

    #[test]
    fn a_hold_lives_seven_days_by_default_and_thirty_at_most() {
        assert_eq!(hold_ttl(None), Ok(Duration::days(7)));
        assert_eq!(hold_ttl(Some(Duration::days(30))), Ok(Duration::days(30)));
        assert!(hold_ttl(Some(Duration::days(30) + Duration::seconds(1))).is_err());
        assert!(hold_ttl(Some(Duration::zero())).is_err());
        assert!(hold_ttl(Some(Duration::seconds(-5))).is_err());
    }

    #[test]
    fn an_active_hold_past_its_expiry_reads_as_expired() {
        let now = Utc::now();
        let hold = Hold {
            hold_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            currency: usd(),
            amount: Decimal::ONE,
            status: HoldStatus::Active,
            reference: String::new(),
            expires_at: now,
            journal_id: None,
            created_at: now,
            updated_at: now,
        };
        assert_eq!(
            hold.status_at(now - Duration::seconds(1)),
            HoldStatus::Active
        );
        assert_eq!(hold.status_at(now), HoldStatus::Expired);
        let released = Hold {
            status: HoldStatus::Released,
            ..hold
        };
        assert_eq!(released.status_at(now), HoldStatus::Released);
    }

    #[test]
    fn transfer_legs_are_in_account_id_order_and_balance() {
        let first = Uuid::now_v7();
        let second = Uuid::now_v7();
        for (debit, credit) in [(first, second), (second, first)] {
            let legs = transfer_legs(debit, credit, Decimal::from(5), Decimal::ZERO);
            assert!(legs[0].account_id < legs[1].account_id);
            assert!(balanced(&legs));
        }
    }

    #[test]
    fn text_enums_round_trip() {
        for status in [
            HoldStatus::Active,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ] {
            assert_eq!(HoldStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(Product::parse("settlement"), Some(Product::Settlement));
        assert_eq!(Product::parse("Checking"), None);
    }

    #[test]
    fn a_reference_is_bounded_text() {
        assert_eq!(
            parse_reference("  transfer 42 "),
            Ok("transfer 42".to_owned())
        );
        assert!(parse_reference(&"x".repeat(201)).is_err());
        assert!(parse_reference("a\u{0}b").is_err());
    }

    proptest::proptest! {
        #[test]
        fn a_hold_is_refused_exactly_when_it_would_pass_the_overdraft(
            ledger in -1_000_i64..1_000, held in 0_i64..500, overdraft in 0_i64..500, amount in 1_i64..2_000,
        ) {
            let account = account(ledger, held, overdraft);
            let refused = account.refuses_hold(usd(), Decimal::from(amount)).is_some();
            proptest::prop_assert_eq!(refused, ledger - held + overdraft < amount);
        }
    }
}
