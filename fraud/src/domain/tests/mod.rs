//! The domain's tests: `evaluation` checks each rule kind and the default set
//! case by case, `validation` the rule-set checks, `properties` what holds
//! for any rule set and snapshot (determinism and replay, monotonicity).

mod evaluation;
mod properties;
mod validation;

use std::time::Duration;

use rust_decimal::Decimal;

use super::*;

/// An amount in cents.
fn cents(value: i64) -> Decimal {
    Decimal::new(value, 2)
}

const DAY: Duration = Duration::from_secs(86_400);

/// A quiet USD transfer of 2.50 from a month-old account to a known payee.
fn snapshot() -> FeatureSnapshot {
    FeatureSnapshot {
        count_1h: 1,
        count_24h: 3,
        count_7d: 12,
        sum_1h: cents(250),
        sum_24h: cents(750),
        sum_7d: cents(3_000),
        distinct_sources_24h: 1,
        first_time_payee: false,
        account_age: Some(DAY * 30),
        kyc_age: Some(DAY * 30),
        anomaly_score: Some(Decimal::ZERO),
        history_size: 100,
        watchlist_hits: Vec::new(),
        structuring_count_24h: 0,
        amount: cents(250),
        currency: "USD".to_owned(),
        kind: TransactionKind::Transfer,
    }
}

/// A rule set holding only `rules`.
fn rule_set(rules: Vec<Rule>) -> RuleSet {
    RuleSet {
        rules,
        ..default_rule_set()
    }
}

/// The ids of the fired rules.
fn fired_ids(evaluation: &Evaluation) -> Vec<&str> {
    evaluation
        .fired
        .iter()
        .map(|rule| rule.rule_id.as_str())
        .collect()
}
