//! A ledger entry as the projection sees it, and the one rule that makes
//! shuffled and duplicated deliveries build the same read model: an
//! account's entries are applied strictly in its sequence (1, 2, 3, …).

use std::collections::BTreeMap;

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

/// What one batch of arrivals does to one account's projection.
#[derive(Debug, Default)]
pub struct Sequenced<'a> {
    /// Entries to apply now, in sequence order, each with the running
    /// balance right after it.
    pub applied: Vec<(&'a PostedEntry, Decimal)>,
    /// Sequences of stored waiting entries among `applied` (to delete).
    pub unblocked: Vec<i64>,
    /// Arrivals whose predecessor is still missing (to store).
    pub early: Vec<&'a PostedEntry>,
    /// Arrivals applied before, or repeated within the batch.
    pub duplicates: usize,
    /// The account's last applied sequence and balance afterwards.
    pub last_applied: i64,
    pub balance: Decimal,
}

/// Sequences one account's `arrivals` after `last_applied` (balance
/// `balance`), with the entries already `waiting` for a gap: the same result
/// as offering the arrivals one by one (see [`offer`]), each applied entry
/// unblocking its waiting successors.
pub fn sequence<'a>(
    last_applied: i64,
    balance: Decimal,
    waiting: &'a [PostedEntry],
    arrivals: &[&'a PostedEntry],
) -> Sequenced<'a> {
    // Every candidate by sequence, and whether it is stored as waiting.
    let mut candidates: BTreeMap<i64, (&'a PostedEntry, bool)> = waiting
        .iter()
        .filter(|entry| entry.account_seq > last_applied)
        .map(|entry| (entry.account_seq, (entry, true)))
        .collect();
    let mut result = Sequenced {
        last_applied,
        balance,
        ..Sequenced::default()
    };
    for entry in arrivals {
        if offer(last_applied, entry.account_seq) == Offer::Duplicate
            || candidates.contains_key(&entry.account_seq)
        {
            result.duplicates += 1;
        } else {
            candidates.insert(entry.account_seq, (entry, false));
        }
    }
    while let Some((entry, stored)) = candidates.remove(&(result.last_applied + 1)) {
        result.balance += entry.signed_amount();
        result.last_applied = entry.account_seq;
        result.applied.push((entry, result.balance));
        if stored {
            result.unblocked.push(entry.account_seq);
        }
    }
    result.early = candidates
        .into_values()
        .filter(|(_, stored)| !stored)
        .map(|(entry, _)| entry)
        .collect();
    result
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

    /// Entry `seq` of one account: credits of `seq` units.
    fn entry(seq: i64) -> PostedEntry {
        PostedEntry {
            entry_id: Uuid::now_v7(),
            journal_id: Uuid::now_v7(),
            ledger_seq: seq,
            account_id: Uuid::nil(),
            account_seq: seq,
            counterparty_account_id: None,
            currency: "USD".to_owned(),
            direction: Direction::Credit,
            amount: Decimal::from(seq),
            ledger_balance_after: balance_after(seq),
            kind: "deposit".to_owned(),
            transaction_id: String::new(),
            post_time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    /// 1 + 2 + … + seq.
    fn balance_after(seq: i64) -> Decimal {
        Decimal::from(seq * (seq + 1) / 2)
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

    /// `items`, some of them again (`duplicates` picks which), in a seeded
    /// Fisher–Yates shuffle.
    fn arrivals<T: Copy>(mut items: Vec<T>, duplicates: &[usize], seed: u64) -> Vec<T> {
        for index in duplicates {
            items.push(items[index % items.len()]);
        }
        let mut state = seed | 1;
        for i in (1..items.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            items.swap(i, (state % (i as u64 + 1)) as usize);
        }
        items
    }

    proptest! {
        #[test]
        fn shuffled_and_duplicated_deliveries_apply_every_entry_once_in_order(
            count in 1i64..60,
            duplicates in proptest::collection::vec(0usize..60, 0..40),
            seed in any::<u64>(),
        ) {
            let arrivals = arrivals((1..=count).collect(), &duplicates, seed);
            prop_assert_eq!(project(&arrivals), (1..=count).collect::<Vec<_>>());
        }

        /// The batch form keeps the same rule: the arrivals cut into batches
        /// of any size, each sequenced at once against the stored waiting
        /// entries, apply every entry once, in order, with the right
        /// running balance.
        #[test]
        fn batches_of_any_size_apply_every_entry_once_in_order(
            count in 1i64..40,
            duplicates in proptest::collection::vec(0usize..40, 0..20),
            sizes in proptest::collection::vec(1usize..8, 1..40),
            seed in any::<u64>(),
        ) {
            let entries: Vec<PostedEntry> = (1..=count).map(entry).collect();
            let arrivals = arrivals((0..entries.len()).collect(), &duplicates, seed);
            let (mut last, mut balance) = (0, Decimal::ZERO);
            let mut waiting: Vec<PostedEntry> = Vec::new();
            let mut applied = Vec::new();
            let mut rest = arrivals.as_slice();
            let mut size = sizes.iter().cycle();
            while !rest.is_empty() {
                let (batch, after) = rest.split_at((*size.next().unwrap()).min(rest.len()));
                rest = after;
                let batch: Vec<&PostedEntry> = batch.iter().map(|&i| &entries[i]).collect();
                let result = sequence(last, balance, &waiting, &batch);
                for (entry, running) in &result.applied {
                    prop_assert_eq!(*running, balance_after(entry.account_seq));
                    applied.push(entry.account_seq);
                }
                let early: Vec<PostedEntry> = result.early.iter().map(|e| (*e).clone()).collect();
                let unblocked = result.unblocked.clone();
                (last, balance) = (result.last_applied, result.balance);
                waiting.retain(|entry| !unblocked.contains(&entry.account_seq));
                waiting.extend(early);
            }
            prop_assert_eq!(applied, (1..=count).collect::<Vec<_>>());
            prop_assert!(waiting.is_empty());
            prop_assert_eq!(balance, balance_after(count));
        }
    }
}
