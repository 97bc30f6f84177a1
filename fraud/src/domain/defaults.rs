//! The rule set a fresh service starts with (version 1), until an analyst
//! stores another. It is a plain bank default that lets ordinary retail
//! traffic through without a second look: small transfers among a few
//! accounts at up to hundreds an hour, and accounts funded by one large
//! deposit, all approve. Deposits are only reviewed for the watchlist and
//! alerted for structuring: money coming in is not blocked on size.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::features::{TransactionKind, Window};
use super::rules::{Action, Rule, RuleKind, RuleSet};

/// Past amounts the default anomaly score looks at.
pub const DEFAULT_ANOMALY_HISTORY: u32 = 100;

/// How long the default keeps a declined destination on the watchlist.
pub const DEFAULT_DECLINE_WATCHLIST_PERIOD: Duration = Duration::from_secs(30 * 86_400);

/// Amount limits per currency, in whole units: (currency, review above,
/// decline above, 24 h sum, first payee, new account). EUR and GBP are
/// rounded equivalents of the USD limits.
const AMOUNT_LIMITS: [(&str, i64, i64, i64, i64, i64); 3] = [
    ("USD", 10_000, 1_000_000, 50_000, 5_000, 1_000),
    ("EUR", 9_000, 900_000, 45_000, 4_500, 900),
    ("GBP", 8_000, 800_000, 40_000, 4_000, 800),
];

/// Version 1, `created_by` "system", `created_at` the Unix epoch (the store
/// stamps its own time when it writes it). Rules, in order:
///
/// | rule_id | kind | fires when | action | applies to |
/// | --- | --- | --- | --- | --- |
/// | `amount-review-<ccy>` | AMOUNT_ABOVE | amount > 10,000 USD / 9,000 EUR / 8,000 GBP | review | transfer, withdrawal |
/// | `amount-decline-<ccy>` | AMOUNT_ABOVE | amount > 1,000,000 USD / 900,000 EUR / 800,000 GBP | decline | transfer, withdrawal |
/// | `velocity-count-1h` | VELOCITY_COUNT | > 1,000 movements in 1 h | review | transfer, withdrawal |
/// | `velocity-sum-24h-<ccy>` | VELOCITY_SUM | > 50,000 USD / 45,000 EUR / 40,000 GBP in 24 h | review | transfer, withdrawal |
/// | `first-payee-<ccy>` | FIRST_PAYEE_AMOUNT | new payee and > 5,000 USD / 4,500 EUR / 4,000 GBP | review | transfer |
/// | `fan-in-24h` | FAN_IN | > 50 distinct sources in 24 h | review | transfer |
/// | `anomaly-score` | ANOMALY_SCORE | score > 8 | review | transfer, withdrawal |
/// | `watchlist` | WATCHLIST | any hit | review | transfer, deposit, withdrawal |
/// | `structuring-usd` | STRUCTURING | > 2 deposits in 24 h in [9,000, 10,000) USD | alert | deposit |
/// | `new-account-<ccy>` | NEW_ACCOUNT | account < 1 h old and > 1,000 USD / 900 EUR / 800 GBP | review | transfer, withdrawal |
///
/// Reviews use the service's default deadline and decline on timeout;
/// `anomaly_history` is 100 and `decline_watchlist_period` 30 days.
pub fn default_rule_set() -> RuleSet {
    use RuleKind::*;
    use TransactionKind::{Deposit, Transfer, Withdrawal};
    let outgoing = vec![Transfer, Withdrawal];
    let mut rules = Vec::new();
    for (currency, review, decline, _, _, _) in AMOUNT_LIMITS {
        let lower = currency.to_lowercase();
        rules.push(Rule {
            currency: Some(currency.to_owned()),
            threshold: Some(Decimal::from(review)),
            applies_to: outgoing.clone(),
            description: format!("large {currency} movement: an analyst looks"),
            ..Rule::new(
                &format!("amount-review-{lower}"),
                AmountAbove,
                Action::Review,
            )
        });
        rules.push(Rule {
            currency: Some(currency.to_owned()),
            threshold: Some(Decimal::from(decline)),
            applies_to: outgoing.clone(),
            description: format!("{currency} movement above the retail ceiling"),
            ..Rule::new(
                &format!("amount-decline-{lower}"),
                AmountAbove,
                Action::Decline,
            )
        });
    }
    rules.push(Rule {
        count_limit: Some(1_000),
        window: Some(Window::H1),
        applies_to: outgoing.clone(),
        description: "more movements in an hour than a person makes".to_owned(),
        ..Rule::new("velocity-count-1h", VelocityCount, Action::Review)
    });
    for (currency, _, _, daily, _, _) in AMOUNT_LIMITS {
        rules.push(Rule {
            currency: Some(currency.to_owned()),
            threshold: Some(Decimal::from(daily)),
            window: Some(Window::H24),
            applies_to: outgoing.clone(),
            description: format!("{currency} outflow in 24 h: account draining"),
            ..Rule::new(
                &format!("velocity-sum-24h-{}", currency.to_lowercase()),
                VelocitySum,
                Action::Review,
            )
        });
    }
    for (currency, _, _, _, first_payee, _) in AMOUNT_LIMITS {
        rules.push(Rule {
            currency: Some(currency.to_owned()),
            threshold: Some(Decimal::from(first_payee)),
            applies_to: vec![Transfer],
            description: format!("large first {currency} payment to a new payee"),
            ..Rule::new(
                &format!("first-payee-{}", currency.to_lowercase()),
                FirstPayeeAmount,
                Action::Review,
            )
        });
    }
    rules.push(Rule {
        count_limit: Some(50),
        applies_to: vec![Transfer],
        description: "many payers into one account in 24 h: mule pattern".to_owned(),
        ..Rule::new("fan-in-24h", FanIn, Action::Review)
    });
    rules.push(Rule {
        threshold: Some(Decimal::from(8)),
        applies_to: outgoing.clone(),
        description: "amount far from the account's usual ones".to_owned(),
        ..Rule::new("anomaly-score", AnomalyScore, Action::Review)
    });
    rules.push(Rule {
        applies_to: vec![Transfer, Deposit, Withdrawal],
        description: "an account or customer involved is on the watchlist".to_owned(),
        ..Rule::new("watchlist", Watchlist, Action::Review)
    });
    rules.push(Rule {
        currency: Some("USD".to_owned()),
        threshold: Some(Decimal::from(10_000)),
        band: Some(Decimal::from(1_000)),
        count_limit: Some(2),
        applies_to: vec![Deposit],
        description: "three or more deposits just under the 10,000 USD report".to_owned(),
        ..Rule::new("structuring-usd", Structuring, Action::Alert)
    });
    for (currency, _, _, _, _, new_account) in AMOUNT_LIMITS {
        rules.push(Rule {
            currency: Some(currency.to_owned()),
            threshold: Some(Decimal::from(new_account)),
            min_age: Some(Duration::from_secs(3_600)),
            applies_to: outgoing.clone(),
            description: format!("an account under an hour old moving {currency} out"),
            ..Rule::new(
                &format!("new-account-{}", currency.to_lowercase()),
                NewAccount,
                Action::Review,
            )
        });
    }
    RuleSet {
        version: 1,
        rules,
        anomaly_history: DEFAULT_ANOMALY_HISTORY,
        decline_watchlist_period: DEFAULT_DECLINE_WATCHLIST_PERIOD,
        created_by: "system".to_owned(),
        reason: "default rule set".to_owned(),
        created_at: DateTime::<Utc>::UNIX_EPOCH,
    }
}
