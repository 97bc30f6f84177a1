//! Reconciliation: the read model against the ledger, as of one ledger
//! sequence. Per account the entry count and balance, per currency the
//! debit and credit totals; for an account that differs, entry by entry, so
//! the report says which entry is missing, extra or altered.

use std::collections::{BTreeMap, BTreeSet};

use corebank_platform::money::Currency;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::entry::Direction;

/// One account's figures on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFigures {
    pub currency: String,
    pub entry_count: i64,
    /// Credits minus debits.
    pub balance: Decimal,
}

/// One currency's totals on one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrencyFigures {
    pub debits: Decimal,
    pub credits: Decimal,
    pub entry_count: i64,
}

/// Everything one side (ledger or read model) says, as of one sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub accounts: BTreeMap<Uuid, AccountFigures>,
    pub currencies: BTreeMap<String, CurrencyFigures>,
}

/// One entry as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFigures {
    pub entry_id: Uuid,
    pub account_id: Uuid,
    pub currency: String,
    pub direction: Direction,
    pub amount: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MismatchKind {
    Missing,
    Extra,
    AmountDiffers,
    BalanceDiffers,
    CountDiffers,
    CurrencyTotalDiffers,
}

impl MismatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Extra => "extra",
            Self::AmountDiffers => "amount_differs",
            Self::BalanceDiffers => "balance_differs",
            Self::CountDiffers => "count_differs",
            Self::CurrencyTotalDiffers => "currency_total_differs",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Missing,
            Self::Extra,
            Self::AmountDiffers,
            Self::BalanceDiffers,
            Self::CountDiffers,
            Self::CurrencyTotalDiffers,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One difference between the ledger and the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub kind: MismatchKind,
    pub account_id: Option<Uuid>,
    pub currency: String,
    pub entry_id: Option<Uuid>,
    pub ledger_value: String,
    pub read_model_value: String,
    pub detail: String,
}

fn money(currency: &str, amount: Decimal) -> String {
    Currency::parse(currency)
        .map(|currency| currency.format(amount))
        .unwrap_or_else(|_| amount.normalize().to_string())
}

/// Account- and currency-level differences, and the accounts worth
/// comparing entry by entry.
pub fn compare_figures(ledger: &Figures, model: &Figures) -> (Vec<Mismatch>, Vec<Uuid>) {
    let mut mismatches = Vec::new();
    let mut drill = Vec::new();
    let accounts: BTreeSet<Uuid> = ledger
        .accounts
        .keys()
        .chain(model.accounts.keys())
        .copied()
        .collect();
    for account_id in accounts {
        let left = ledger.accounts.get(&account_id);
        let right = model.accounts.get(&account_id);
        let currency = left
            .or(right)
            .map(|figures| figures.currency.clone())
            .unwrap_or_default();
        let count = |side: Option<&AccountFigures>| side.map_or(0, |f| f.entry_count);
        let balance = |side: Option<&AccountFigures>| side.map_or(Decimal::ZERO, |f| f.balance);
        let mut differs = false;
        if count(left) != count(right) {
            differs = true;
            mismatches.push(Mismatch {
                kind: MismatchKind::CountDiffers,
                account_id: Some(account_id),
                currency: currency.clone(),
                entry_id: None,
                ledger_value: count(left).to_string(),
                read_model_value: count(right).to_string(),
                detail: format!("account {account_id} has a different number of entries"),
            });
        }
        if balance(left) != balance(right) {
            differs = true;
            mismatches.push(Mismatch {
                kind: MismatchKind::BalanceDiffers,
                account_id: Some(account_id),
                currency: currency.clone(),
                entry_id: None,
                ledger_value: money(&currency, balance(left)),
                read_model_value: money(&currency, balance(right)),
                detail: format!("account {account_id} has a different balance"),
            });
        }
        if differs {
            drill.push(account_id);
        }
    }
    let currencies: BTreeSet<&String> = ledger
        .currencies
        .keys()
        .chain(model.currencies.keys())
        .collect();
    let none = CurrencyFigures::default();
    for currency in currencies {
        let left = ledger.currencies.get(currency).unwrap_or(&none);
        let right = model.currencies.get(currency).unwrap_or(&none);
        let parts = [
            (
                "debits",
                money(currency, left.debits),
                money(currency, right.debits),
            ),
            (
                "credits",
                money(currency, left.credits),
                money(currency, right.credits),
            ),
            (
                "entry count",
                left.entry_count.to_string(),
                right.entry_count.to_string(),
            ),
        ];
        for (what, ledger_value, read_model_value) in parts {
            if ledger_value != read_model_value {
                mismatches.push(Mismatch {
                    kind: MismatchKind::CurrencyTotalDiffers,
                    account_id: None,
                    currency: currency.clone(),
                    entry_id: None,
                    ledger_value,
                    read_model_value,
                    detail: format!("{currency} {what} differ"),
                });
            }
        }
    }
    (mismatches, drill)
}

/// Entry-level differences of one account: missing from the read model,
/// extra in it, or the same entry with another amount, direction or account.
pub fn compare_entries(ledger: &[EntryFigures], model: &[EntryFigures]) -> Vec<Mismatch> {
    let in_model: BTreeMap<Uuid, &EntryFigures> = model.iter().map(|e| (e.entry_id, e)).collect();
    let in_ledger: BTreeMap<Uuid, &EntryFigures> = ledger.iter().map(|e| (e.entry_id, e)).collect();
    let describe = |entry: &EntryFigures| {
        format!(
            "{} {}",
            entry.direction.as_str(),
            money(&entry.currency, entry.amount)
        )
    };
    let mut mismatches = Vec::new();
    for (entry_id, expected) in &in_ledger {
        match in_model.get(entry_id) {
            None => mismatches.push(Mismatch {
                kind: MismatchKind::Missing,
                account_id: Some(expected.account_id),
                currency: expected.currency.clone(),
                entry_id: Some(*entry_id),
                ledger_value: describe(expected),
                read_model_value: String::new(),
                detail: format!("entry {entry_id} is in the ledger, not in the read model"),
            }),
            Some(actual) if actual != expected => mismatches.push(Mismatch {
                kind: MismatchKind::AmountDiffers,
                account_id: Some(expected.account_id),
                currency: expected.currency.clone(),
                entry_id: Some(*entry_id),
                ledger_value: describe(expected),
                read_model_value: describe(actual),
                detail: format!("entry {entry_id} differs"),
            }),
            Some(_) => {}
        }
    }
    for (entry_id, actual) in &in_model {
        if !in_ledger.contains_key(entry_id) {
            mismatches.push(Mismatch {
                kind: MismatchKind::Extra,
                account_id: Some(actual.account_id),
                currency: actual.currency.clone(),
                entry_id: Some(*entry_id),
                ledger_value: String::new(),
                read_model_value: describe(actual),
                detail: format!("entry {entry_id} is in the read model, not in the ledger"),
            });
        }
    }
    mismatches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        text.parse().expect("a decimal literal")
    }

    fn figures(accounts: &[(Uuid, i64, &str)], debits: &str, credits: &str) -> Figures {
        let mut out = Figures::default();
        let mut count = 0;
        for (account_id, entry_count, balance) in accounts {
            count += entry_count;
            out.accounts.insert(
                *account_id,
                AccountFigures {
                    currency: "USD".to_owned(),
                    entry_count: *entry_count,
                    balance: dec(balance),
                },
            );
        }
        out.currencies.insert(
            "USD".to_owned(),
            CurrencyFigures {
                debits: dec(debits),
                credits: dec(credits),
                entry_count: count,
            },
        );
        out
    }

    #[test]
    fn equal_sides_have_no_mismatch() {
        let a = Uuid::now_v7();
        let side = figures(&[(a, 2, "10.00")], "5", "15");
        assert_eq!(compare_figures(&side, &side), (vec![], vec![]));
    }

    #[test]
    fn a_changed_amount_is_a_balance_and_a_currency_difference_and_drills_into_the_account() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ledger = figures(&[(a, 1, "-10.00"), (b, 1, "10.00")], "10", "10");
        let model = figures(&[(a, 1, "-10.00"), (b, 1, "12.00")], "10", "12");
        let (mismatches, drill) = compare_figures(&ledger, &model);
        let kinds: Vec<_> = mismatches.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                MismatchKind::BalanceDiffers,
                MismatchKind::CurrencyTotalDiffers
            ]
        );
        assert_eq!(mismatches[0].ledger_value, "10.00");
        assert_eq!(mismatches[0].read_model_value, "12.00");
        assert_eq!(drill, [b]);
    }

    #[test]
    fn entries_are_missing_extra_or_altered() {
        let account_id = Uuid::now_v7();
        let entry = |amount: &str| EntryFigures {
            entry_id: Uuid::now_v7(),
            account_id,
            currency: "USD".to_owned(),
            direction: Direction::Credit,
            amount: dec(amount),
        };
        let kept = entry("1.00");
        let missing = entry("2.00");
        let extra = entry("3.00");
        let altered = entry("4.00");
        let mut altered_in_model = altered.clone();
        altered_in_model.amount = dec("40.00");
        let ledger = vec![kept.clone(), missing.clone(), altered.clone()];
        let model = vec![kept, extra.clone(), altered_in_model];
        let mut found: Vec<_> = compare_entries(&ledger, &model)
            .into_iter()
            .map(|m| (m.kind, m.entry_id))
            .collect();
        found.sort();
        let mut expected = vec![
            (MismatchKind::Missing, Some(missing.entry_id)),
            (MismatchKind::Extra, Some(extra.entry_id)),
            (MismatchKind::AmountDiffers, Some(altered.entry_id)),
        ];
        expected.sort();
        assert_eq!(found, expected);
    }
}
