//! Money movements and their status lifecycle: pure types and rules, no I/O.
//!
//! A transaction is created PENDING; the saga moves it to exactly one terminal
//! status, COMPLETED or FAILED, which never changes again. REVIEW (the saga is
//! parked at a step awaiting a final answer, such as a fraud analyst's) sits
//! before the terminal statuses. PROCESSING, between PENDING and the others,
//! is taken only when a saga announces itself with a MarkProcessing command,
//! which corebank's own sagas no longer send (one message less per movement).

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
    /// The PENDING transaction `new` becomes when it is stored at `now`.
    pub fn pending(transaction_id: Uuid, new: &NewTransaction, now: DateTime<Utc>) -> Self {
        Self {
            transaction_id,
            kind: new.kind,
            status: TransactionStatus::Pending,
            source_account_id: new.source_account_id,
            destination_account_id: new.destination_account_id,
            currency: new.currency,
            amount: new.amount,
            description: new.description.clone(),
            failure_reason: String::new(),
            failure_detail: String::new(),
            journal_id: String::new(),
            created_at: now,
            updated_at: now,
        }
    }

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
mod tests;
