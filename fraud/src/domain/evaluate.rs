//! The screen's decision, pure: a rule set and a feature snapshot give the
//! outcome, the rules that fired with the values that made them fire, and
//! the review policy. No clock, no I/O, no randomness: re-evaluating a stored
//! decision's snapshot with its rule-set version gives the same answer.
//!
//! Severity orders the outcome: any fired DECLINE declines, else any fired
//! REVIEW reviews, else the movement is approved. ALERT and APPROVE rules are
//! recorded but never change the outcome.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::features::{FeatureSnapshot, StructuringBand, TransactionKind};
use super::rules::{Action, Rule, RuleKind, RuleSet, TimeoutAction};
use super::seconds;

/// The screen's answer, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Approve,
    Review,
    Decline,
}

/// A rule that fired, with the feature's value and the limit it crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredRule {
    pub rule_id: String,
    pub kind: RuleKind,
    pub action: Action,
    pub value: String,
    pub threshold: String,
}

/// Everything a decision records from evaluating one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub outcome: Outcome,
    /// Every fired rule, in rule-set order (alerts included).
    pub fired: Vec<FiredRule>,
    /// The fired ALERT rules.
    pub alerts: Vec<FiredRule>,
    /// The shortest deadline among fired REVIEW rules that set one; `None`:
    /// the service's default.
    #[serde(with = "seconds::option")]
    pub review_deadline: Option<Duration>,
    /// What the review's deadline decides: DECLINE if any fired REVIEW rule
    /// says so, else APPROVE. Only meaningful with a REVIEW outcome.
    pub timeout_action: TimeoutAction,
}

/// Evaluates every applicable rule of `rule_set` against `snapshot`.
pub fn evaluate(rule_set: &RuleSet, snapshot: &FeatureSnapshot) -> Evaluation {
    let mut fired = Vec::new();
    let mut review_deadline: Option<Duration> = None;
    let mut timeout_action = TimeoutAction::Approve;
    let mut outcome = Outcome::Approve;
    for rule in &rule_set.rules {
        if !rule.applies(snapshot.kind, &snapshot.currency) {
            continue;
        }
        let Some((value, threshold)) = check(rule, snapshot) else {
            continue;
        };
        match rule.action {
            Action::Decline => outcome = outcome.max(Outcome::Decline),
            Action::Review => {
                outcome = outcome.max(Outcome::Review);
                if let Some(deadline) = rule.review_deadline {
                    review_deadline = Some(review_deadline.map_or(deadline, |d| d.min(deadline)));
                }
                if rule.timeout_action == TimeoutAction::Decline {
                    timeout_action = TimeoutAction::Decline;
                }
            }
            Action::Approve | Action::Alert => {}
        }
        fired.push(FiredRule {
            rule_id: rule.rule_id.clone(),
            kind: rule.kind,
            action: rule.action,
            value,
            threshold,
        });
    }
    let alerts = fired
        .iter()
        .filter(|rule| rule.action == Action::Alert)
        .cloned()
        .collect();
    Evaluation {
        outcome,
        fired,
        alerts,
        review_deadline,
        timeout_action,
    }
}

/// Whether `rule` fires on `snapshot`: `Some((value, limit))` as text when it
/// does. A rule missing a parameter its kind needs never fires (validation
/// keeps such rules out of stored sets).
fn check(rule: &Rule, snapshot: &FeatureSnapshot) -> Option<(String, String)> {
    let amount = snapshot.amount;
    match rule.kind {
        RuleKind::AmountAbove => above(amount, rule.threshold?),
        RuleKind::VelocityCount => {
            let window = rule.window?;
            count_above(snapshot.count(window), rule.count_limit?)
        }
        RuleKind::VelocitySum => above(snapshot.sum(rule.window?), rule.threshold?),
        RuleKind::FirstPayeeAmount if snapshot.first_time_payee => above(amount, rule.threshold?),
        RuleKind::FirstPayeeAmount => None,
        RuleKind::FanIn => count_above(snapshot.distinct_sources_24h, rule.count_limit?),
        RuleKind::AnomalyScore => above(snapshot.anomaly_score?, rule.threshold?),
        RuleKind::Watchlist if !snapshot.watchlist_hits.is_empty() => {
            Some((snapshot.watchlist_hits.join(","), String::new()))
        }
        RuleKind::Watchlist => None,
        RuleKind::Structuring => {
            let band = StructuringBand {
                threshold: rule.threshold?,
                band: rule.band?,
            };
            // The deposit screened must itself be just under the threshold:
            // a large deposit after a run of small ones is not structuring.
            if snapshot.kind != TransactionKind::Deposit || !band.contains(amount) {
                return None;
            }
            count_above(snapshot.structuring_count_24h, rule.count_limit?)
        }
        RuleKind::NewAccount => new_account(rule, snapshot),
    }
}

/// An account younger than `min_age` (unknown age never fires), moving more
/// than `threshold` when the rule sets one.
fn new_account(rule: &Rule, snapshot: &FeatureSnapshot) -> Option<(String, String)> {
    let age = snapshot.account_age?;
    let min_age = rule.min_age?;
    if age >= min_age {
        return None;
    }
    let ages = (
        format!("{}s", age.as_secs()),
        format!("{}s", min_age.as_secs()),
    );
    match rule.threshold {
        None => Some(ages),
        Some(threshold) if snapshot.amount > threshold => Some((
            format!("{}; {}", ages.0, snapshot.amount),
            format!("{}; {threshold}", ages.1),
        )),
        Some(_) => None,
    }
}

fn above(value: Decimal, threshold: Decimal) -> Option<(String, String)> {
    (value > threshold).then(|| (value.to_string(), threshold.to_string()))
}

fn count_above(value: i64, limit: i64) -> Option<(String, String)> {
    (value > limit).then(|| (value.to_string(), limit.to_string()))
}
