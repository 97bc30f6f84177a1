//! Money movements and their status lifecycle: pure types and rules, no I/O.
//!
//! A transaction is created PENDING; the saga moves it to PROCESSING, then to
//! exactly one terminal status, COMPLETED or FAILED, which never changes again.
//! REVIEW (the saga is parked at a step awaiting a final answer, such as a
//! fraud analyst's) sits between PROCESSING and the terminal statuses.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_platform::Violations;
use corebank_platform::money::{self, AmountLimits, Currency};
use rust_decimal::Decimal;
use uuid::Uuid;

/// What kind of money movement a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    /// Between two customer accounts.
    Transfer,
    /// Into an account, from the bank's settlement account.
    Deposit,
    /// Out of an account, to the bank's settlement account.
    Withdrawal,
}

impl TransactionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "transfer" => Some(Self::Transfer),
            "deposit" => Some(Self::Deposit),
            "withdrawal" => Some(Self::Withdrawal),
            _ => None,
        }
    }
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Pending,
    Processing,
    /// Held for an analyst's fraud review.
    Review,
    Completed,
    Failed,
}

impl TransactionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Review => "review",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "processing" => Some(Self::Processing),
            "review" => Some(Self::Review),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// COMPLETED and FAILED are final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// How far along the lifecycle a status is; a move never goes back.
    fn rank(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Processing => 1,
            Self::Review => 2,
            Self::Completed | Self::Failed => 3,
        }
    }

    /// Decides a move to `to`. Commands arrive at least once and not always
    /// in order, so a move to where the transaction already is (or, for a
    /// non-terminal target, past it) changes nothing instead of failing; only
    /// a terminal transaction asked to end differently, or a move back to
    /// PENDING, is refused.
    pub fn transition(self, to: TransactionStatus) -> Result<Move, IllegalTransition> {
        use TransactionStatus::*;
        match (self, to) {
            (from, Pending) if from != Pending => Err(IllegalTransition { from, to }),
            (from, to) if from == to => Ok(Move::Unchanged),
            (Completed, Failed) | (Failed, Completed) => Err(IllegalTransition { from: self, to }),
            (from, to) if from.rank() >= to.rank() => Ok(Move::Unchanged),
            _ => Ok(Move::Changed),
        }
    }
}

/// The outcome of a legal transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The status changes: write it, record it, announce it.
    Changed,
    /// Already there (or past it): nothing to write.
    Unchanged,
}

/// A status move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} transaction cannot become {}", .from.as_str(), .to.as_str())]
pub struct IllegalTransition {
    pub from: TransactionStatus,
    pub to: TransactionStatus,
}

/// The reason code of a command refused because the transaction already
/// ended the other way.
pub const TRANSACTION_ALREADY_TERMINAL: &str = "TRANSACTION_ALREADY_TERMINAL";

/// A stored transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub transaction_id: Uuid,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    /// None for a deposit.
    pub source_account_id: Option<Uuid>,
    /// None for a withdrawal.
    pub destination_account_id: Option<Uuid>,
    pub currency: Currency,
    pub amount: Decimal,
    pub description: String,
    /// With FAILED: a stable reason such as INSUFFICIENT_FUNDS.
    pub failure_reason: String,
    pub failure_detail: String,
    /// With COMPLETED: the ledger journal.
    pub journal_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Transaction {
    /// The transaction as it is right after `change` (the status history
    /// replayed): outcome fields belong to the terminal status only.
    pub fn as_of(&self, to: TransactionStatus, at: DateTime<Utc>) -> Transaction {
        let mut snapshot = self.clone();
        snapshot.status = to;
        snapshot.updated_at = at;
        if to != TransactionStatus::Failed {
            snapshot.failure_reason.clear();
            snapshot.failure_detail.clear();
        }
        if to != TransactionStatus::Completed {
            snapshot.journal_id.clear();
        }
        snapshot
    }
}

/// What a saga command asks of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Processing,
    /// The saga's `step` waits for its final answer until `deadline`.
    Review {
        step: String,
        deadline: Option<DateTime<Utc>>,
    },
    Completed {
        journal_id: String,
    },
    Failed {
        reason_code: String,
        detail: String,
    },
}

impl Outcome {
    pub fn status(&self) -> TransactionStatus {
        match self {
            Self::Processing => TransactionStatus::Processing,
            Self::Review { .. } => TransactionStatus::Review,
            Self::Completed { .. } => TransactionStatus::Completed,
            Self::Failed { .. } => TransactionStatus::Failed,
        }
    }
}

/// A validated request to move money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransaction {
    pub kind: TransactionKind,
    pub source_account_id: Option<Uuid>,
    pub destination_account_id: Option<Uuid>,
    pub currency: Currency,
    pub amount: Decimal,
    pub description: String,
}

/// The raw fields of a create request, before validation. `source` and
/// `destination` name the request fields they come from, so violations name
/// what the caller sent (`account_id` for deposits and withdrawals).
#[derive(Debug, Clone, Copy)]
pub struct NewTransactionInput<'a> {
    pub kind: TransactionKind,
    pub source: Option<(&'static str, &'a str)>,
    pub destination: Option<(&'static str, &'a str)>,
    /// `None` when the request has no amount at all.
    pub amount: Option<MoneyInput<'a>>,
    pub description: &'a str,
}

/// An amount as it arrives on the wire.
#[derive(Debug, Clone, Copy)]
pub struct MoneyInput<'a> {
    pub currency: &'a str,
    pub amount: &'a str,
}

/// The longest description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// The longest a caller may ask to wait for a terminal status.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

impl NewTransaction {
    /// Validates every field, collecting all violations into `violations`.
    pub fn parse(
        input: NewTransactionInput<'_>,
        limits: AmountLimits,
        violations: &mut Violations,
    ) -> Option<Self> {
        let source = input
            .source
            .map(|(field, text)| violations.take(field, parse_account_id(text)));
        let destination = input
            .destination
            .map(|(field, text)| violations.take(field, parse_account_id(text)));
        if let (Some(Some(source)), Some(Some(destination))) = (source, destination)
            && source == destination
        {
            let field = input
                .destination
                .map(|(field, _)| field)
                .unwrap_or("destination_account_id");
            violations.add(field, "must differ from source_account_id");
        }
        let money = match input.amount {
            None => {
                violations.add("amount", "is required");
                None
            }
            Some(money) => parse_money(money, limits, violations),
        };
        violations.take("description", parse_description(input.description));
        if !violations.is_empty() {
            return None;
        }
        let (currency, amount) = money?;
        Some(Self {
            kind: input.kind,
            source_account_id: source.flatten(),
            destination_account_id: destination.flatten(),
            currency,
            amount,
            description: input.description.to_owned(),
        })
    }
}

fn parse_money(
    input: MoneyInput<'_>,
    limits: AmountLimits,
    violations: &mut Violations,
) -> Option<(Currency, Decimal)> {
    let currency = if input.currency.is_empty() {
        violations.add("amount.currency", "is required");
        None
    } else {
        violations.take("amount.currency", Currency::parse(input.currency))
    };
    match currency {
        Some(currency) => {
            let amount = violations.take(
                "amount.amount",
                money::parse_amount(currency, input.amount, limits),
            )?;
            Some((currency, amount))
        }
        None => {
            // Without a currency the scale cannot be checked; still refuse what
            // is not a positive decimal at all, so the caller sees both fields.
            let any = Currency::parse("KWD").ok()?;
            let unbounded = AmountLimits { max: Decimal::MAX };
            if let Err(error) = money::parse_amount(any, input.amount, unbounded) {
                violations.add("amount.amount", error.to_string());
            }
            None
        }
    }
}

/// An account id: a UUID.
pub fn parse_account_id(text: &str) -> Result<Uuid, &'static str> {
    if text.is_empty() {
        return Err("is required");
    }
    Uuid::parse_str(text).map_err(|_| "must be a UUID")
}

pub fn parse_description(text: &str) -> Result<&str, &'static str> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err("must be at most 500 characters");
    }
    Ok(text)
}

/// How long to wait for a terminal status: a protobuf `Duration`'s seconds
/// and nanos (absent means zero), at most [`MAX_WAIT`].
pub fn parse_wait(seconds: i64, nanos: i32) -> Result<Duration, &'static str> {
    if seconds < 0 || nanos < 0 {
        return Err("must not be negative");
    }
    if nanos >= 1_000_000_000 {
        return Err("is not a valid duration");
    }
    let wait = Duration::new(seconds as u64, nanos as u32);
    if wait > MAX_WAIT {
        return Err("must be at most 30s");
    }
    Ok(wait)
}

/// The reason code stored with a failure. The orchestrator owns the codes;
/// a failure must be recorded whatever it sends, so an empty code becomes
/// `UNKNOWN` and an overlong one is cut rather than refused.
pub fn failure_reason_code(text: &str) -> String {
    let code = text.trim();
    if code.is_empty() {
        return "UNKNOWN".to_owned();
    }
    code.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransactionStatus::*;

    fn fields(violations: Violations) -> Vec<String> {
        violations
            .into_error()
            .violations()
            .iter()
            .map(|v| v.field.clone())
            .collect()
    }

    fn transfer<'a>(
        source: &'a str,
        destination: &'a str,
        currency: &'a str,
        amount: &'a str,
    ) -> NewTransactionInput<'a> {
        NewTransactionInput {
            kind: TransactionKind::Transfer,
            source: Some(("source_account_id", source)),
            destination: Some(("destination_account_id", destination)),
            amount: Some(MoneyInput { currency, amount }),
            description: "rent",
        }
    }

    #[test]
    fn the_happy_path_moves_forward_to_one_terminal_status() {
        assert_eq!(Pending.transition(Processing), Ok(Move::Changed));
        assert_eq!(Processing.transition(Completed), Ok(Move::Changed));
        assert_eq!(Processing.transition(Failed), Ok(Move::Changed));
        assert_eq!(Processing.transition(Review), Ok(Move::Changed));
        assert_eq!(Review.transition(Completed), Ok(Move::Changed));
    }

    #[test]
    fn a_review_is_entered_from_pending_or_processing_once_and_ends_either_way() {
        assert_eq!(Pending.transition(Review), Ok(Move::Changed));
        assert_eq!(Processing.transition(Review), Ok(Move::Changed));
        assert_eq!(Review.transition(Review), Ok(Move::Unchanged));
        assert_eq!(Review.transition(Failed), Ok(Move::Changed));
        assert_eq!(Review.transition(Completed), Ok(Move::Changed));
    }

    #[test]
    fn a_late_mark_review_leaves_a_terminal_transaction_alone() {
        for from in [Completed, Failed] {
            assert_eq!(from.transition(Review), Ok(Move::Unchanged), "{from:?}");
        }
    }

    #[test]
    fn a_transaction_may_end_without_having_been_marked_processing() {
        assert_eq!(Pending.transition(Completed), Ok(Move::Changed));
        assert_eq!(Pending.transition(Failed), Ok(Move::Changed));
    }

    #[test]
    fn a_late_mark_processing_changes_nothing() {
        for from in [Processing, Review, Completed, Failed] {
            assert_eq!(from.transition(Processing), Ok(Move::Unchanged), "{from:?}");
        }
    }

    #[test]
    fn ending_the_same_way_twice_is_harmless() {
        assert_eq!(Completed.transition(Completed), Ok(Move::Unchanged));
        assert_eq!(Failed.transition(Failed), Ok(Move::Unchanged));
    }

    #[test]
    fn terminal_statuses_never_change() {
        for from in [Completed, Failed] {
            for to in [Pending, Processing, Review, Completed, Failed] {
                assert_ne!(from.transition(to), Ok(Move::Changed), "{from:?} -> {to:?}");
            }
        }
        assert_eq!(
            Completed.transition(Failed),
            Err(IllegalTransition {
                from: Completed,
                to: Failed
            })
        );
        assert_eq!(
            Failed.transition(Completed),
            Err(IllegalTransition {
                from: Failed,
                to: Completed
            })
        );
    }

    #[test]
    fn nothing_goes_back_to_pending() {
        assert_eq!(Pending.transition(Pending), Ok(Move::Unchanged));
        for from in [Processing, Review, Completed, Failed] {
            assert!(from.transition(Pending).is_err(), "{from:?}");
        }
    }

    #[test]
    fn only_completed_and_failed_are_terminal() {
        let terminal: Vec<_> = [Pending, Processing, Review, Completed, Failed]
            .into_iter()
            .filter(|status| status.is_terminal())
            .collect();
        assert_eq!(terminal, [Completed, Failed]);
    }

    #[test]
    fn statuses_and_kinds_round_trip_through_their_names() {
        for status in [Pending, Processing, Review, Completed, Failed] {
            assert_eq!(TransactionStatus::parse(status.as_str()), Some(status));
        }
        for kind in [
            TransactionKind::Transfer,
            TransactionKind::Deposit,
            TransactionKind::Withdrawal,
        ] {
            assert_eq!(TransactionKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn a_valid_transfer_parses() {
        let (a, b) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        let mut violations = Violations::default();
        let new = NewTransaction::parse(
            transfer(&a, &b, "USD", "125.50"),
            AmountLimits::default(),
            &mut violations,
        )
        .unwrap();
        assert_eq!(new.amount, Decimal::new(12550, 2));
        assert_eq!(new.currency.code(), "USD");
        assert_eq!(new.source_account_id.unwrap().to_string(), a);
    }

    #[test]
    fn every_invalid_field_of_a_transfer_is_named() {
        let mut violations = Violations::default();
        let mut input = transfer("nope", "", "usd", "-1");
        let long = "x".repeat(501);
        input.description = &long;
        assert!(NewTransaction::parse(input, AmountLimits::default(), &mut violations).is_none());
        assert_eq!(
            fields(violations),
            [
                "source_account_id",
                "destination_account_id",
                "amount.currency",
                "amount.amount",
                "description"
            ]
        );
    }

    #[test]
    fn a_transfer_to_the_same_account_is_refused() {
        let a = Uuid::now_v7().to_string();
        let mut violations = Violations::default();
        assert!(
            NewTransaction::parse(
                transfer(&a, &a, "USD", "1"),
                AmountLimits::default(),
                &mut violations
            )
            .is_none()
        );
        assert_eq!(fields(violations), ["destination_account_id"]);
    }

    #[test]
    fn amounts_follow_the_currency_exponent_and_the_limit() {
        let (a, b) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        let limits = AmountLimits {
            max: Decimal::from(100),
        };
        for (currency, amount) in [
            ("USD", "1.005"),
            ("JPY", "1.5"),
            ("USD", "0"),
            ("USD", "100.01"),
        ] {
            let mut violations = Violations::default();
            assert!(
                NewTransaction::parse(transfer(&a, &b, currency, amount), limits, &mut violations)
                    .is_none()
            );
            assert_eq!(fields(violations), ["amount.amount"], "{currency} {amount}");
        }
    }

    #[test]
    fn a_missing_amount_is_named() {
        let mut violations = Violations::default();
        let input = NewTransactionInput {
            kind: TransactionKind::Deposit,
            source: None,
            destination: Some(("account_id", "")),
            amount: None,
            description: "",
        };
        assert!(NewTransaction::parse(input, AmountLimits::default(), &mut violations).is_none());
        assert_eq!(fields(violations), ["account_id", "amount"]);
    }

    #[test]
    fn a_wait_is_between_zero_and_thirty_seconds() {
        assert_eq!(parse_wait(0, 0), Ok(Duration::ZERO));
        assert_eq!(parse_wait(30, 0), Ok(MAX_WAIT));
        assert!(parse_wait(30, 1).is_err());
        assert!(parse_wait(-1, 0).is_err());
        assert!(parse_wait(0, -5).is_err());
    }

    #[test]
    fn a_snapshot_of_an_earlier_status_hides_the_outcome() {
        let now = Utc::now();
        let failed = Transaction {
            transaction_id: Uuid::now_v7(),
            kind: TransactionKind::Withdrawal,
            status: Failed,
            source_account_id: Some(Uuid::now_v7()),
            destination_account_id: None,
            currency: Currency::parse("EUR").unwrap(),
            amount: Decimal::ONE,
            description: String::new(),
            failure_reason: "INSUFFICIENT_FUNDS".to_owned(),
            failure_detail: "balance 0.00".to_owned(),
            journal_id: String::new(),
            created_at: now,
            updated_at: now,
        };
        let earlier = failed.as_of(Processing, now);
        assert_eq!(earlier.status, Processing);
        assert!(earlier.failure_reason.is_empty());
        assert_eq!(failed.as_of(Failed, now), failed);
    }

    #[test]
    fn a_failure_always_has_a_reason_code() {
        assert_eq!(
            failure_reason_code("INSUFFICIENT_FUNDS"),
            "INSUFFICIENT_FUNDS"
        );
        assert_eq!(failure_reason_code(" "), "UNKNOWN");
        assert_eq!(failure_reason_code(&"X".repeat(100)).len(), 64);
    }
}
