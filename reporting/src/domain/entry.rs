//! A ledger entry as the projection sees it, and the one rule that makes
//! shuffled and duplicated deliveries build the same read model: an
//! account's entries are applied strictly in its sequence (1, 2, 3, …).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Which way an entry moves its account's balance: credits add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Debit,
    Credit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debit => "debit",
            Self::Credit => "credit",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "debit" => Some(Self::Debit),
            "credit" => Some(Self::Credit),
            _ => None,
        }
    }

    /// The direction of a signed amount (negative: debit).
    pub fn of_signed(amount: Decimal) -> Self {
        if amount.is_sign_negative() {
            Self::Debit
        } else {
            Self::Credit
        }
    }

    /// `amount` (positive) signed as it moves the balance.
    pub fn signed(self, amount: Decimal) -> Decimal {
        match self {
            Self::Debit => -amount,
            Self::Credit => amount,
        }
    }
}

/// One posted ledger entry with its journal's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedEntry {
    pub entry_id: Uuid,
    pub journal_id: Uuid,
    /// The journal's position in the whole ledger.
    pub ledger_seq: i64,
    pub account_id: Uuid,
    /// The entry's position in its account: 1, 2, 3, … without gaps.
    pub account_seq: i64,
    pub counterparty_account_id: Option<Uuid>,
    pub currency: String,
    pub direction: Direction,
    /// Positive.
    pub amount: Decimal,
    /// The account's balance right after the entry, as the ledger says.
    pub ledger_balance_after: Decimal,
    /// transfer | deposit | withdrawal
    pub kind: String,
    pub transaction_id: String,
    pub post_time: DateTime<Utc>,
}

impl PostedEntry {
    /// The amount signed as it moves the balance.
    pub fn signed_amount(&self) -> Decimal {
        self.direction.signed(self.amount)
    }
}

/// What to do with an entry that arrives for an account whose last applied
/// sequence is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Applied already (a redelivery, or the same entry from a rebuild).
    Duplicate,
    /// The next one: apply it now.
    Apply,
    /// Its predecessor has not arrived: keep it until it has.
    Early,
}

/// Where an entry with sequence `seq` stands after `last_applied`.
pub fn offer(last_applied: i64, seq: i64) -> Offer {
    match seq.cmp(&(last_applied + 1)) {
        std::cmp::Ordering::Less => Offer::Duplicate,
        std::cmp::Ordering::Equal => Offer::Apply,
        std::cmp::Ordering::Greater => Offer::Early,
    }
}

/// A statement line's description, from the account's point of view.
pub fn describe(kind: &str, direction: Direction, counterparty: Option<Uuid>) -> String {
    match (kind, direction, counterparty) {
        ("transfer", Direction::Debit, Some(other)) => format!("transfer to {other}"),
        ("transfer", Direction::Credit, Some(other)) => format!("transfer from {other}"),
        ("deposit", Direction::Credit, _) => "deposit".to_owned(),
        ("deposit", Direction::Debit, Some(other)) => format!("deposit into {other}"),
        ("withdrawal", Direction::Debit, _) => "withdrawal".to_owned(),
        ("withdrawal", Direction::Credit, Some(other)) => format!("withdrawal from {other}"),
        (kind, _, _) => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_next_sequence_is_applied_an_earlier_one_is_a_duplicate_a_later_one_waits() {
        assert_eq!(offer(0, 1), Offer::Apply);
        assert_eq!(offer(4, 5), Offer::Apply);
        assert_eq!(offer(4, 4), Offer::Duplicate);
        assert_eq!(offer(4, 1), Offer::Duplicate);
        assert_eq!(offer(4, 6), Offer::Early);
    }

    #[test]
    fn a_line_is_described_from_the_account_s_side() {
        let other = Uuid::nil();
        assert_eq!(
            describe("transfer", Direction::Debit, Some(other)),
            format!("transfer to {other}")
        );
        assert_eq!(
            describe("transfer", Direction::Credit, Some(other)),
            format!("transfer from {other}")
        );
        assert_eq!(
            describe("deposit", Direction::Credit, Some(other)),
            "deposit"
        );
        assert_eq!(
            describe("withdrawal", Direction::Debit, Some(other)),
            "withdrawal"
        );
    }

    /// The rule the projection keeps: whatever order and however often the
    /// entries of one account arrive, applying them by `offer` (holding the
    /// early ones until their turn) applies each exactly once, in order.
    fn project(arrivals: &[i64]) -> Vec<i64> {
        let mut last = 0;
        let mut waiting = std::collections::BTreeSet::new();
        let mut applied = Vec::new();
        for &seq in arrivals {
            match offer(last, seq) {
                Offer::Duplicate => {}
                Offer::Early => {
                    waiting.insert(seq);
                }
                Offer::Apply => {
                    applied.push(seq);
                    last = seq;
                    while waiting.remove(&(last + 1)) {
                        last += 1;
                        applied.push(last);
                    }
                }
            }
        }
        applied
    }

    proptest! {
        #[test]
        fn shuffled_and_duplicated_deliveries_apply_every_entry_once_in_order(
            count in 1i64..60,
            duplicates in proptest::collection::vec(0usize..60, 0..40),
            seed in any::<u64>(),
        ) {
            let mut arrivals: Vec<i64> = (1..=count).collect();
            for index in duplicates {
                arrivals.push(arrivals[index % arrivals.len()]);
            }
            // A seeded Fisher–Yates shuffle.
            let mut state = seed | 1;
            for i in (1..arrivals.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                arrivals.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(project(&arrivals), (1..=count).collect::<Vec<_>>());
        }
    }
}
