//! A rule-set update as requested, before validation ([`RuleSetDraft`]),
//! what validation gives back ([`NewRuleSet`], or every [`Violation`]), and
//! the way back from a stored set to a draft so it can be re-validated.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::features::{TransactionKind, Window};
use super::rules::{Action, Rule, RuleKind, RuleSet, TimeoutAction};

/// One invalid field: its path in the request and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

/// Every violation of one request, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleViolations(Vec<Violation>);

impl RuleViolations {
    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Adds those of `other` whose field has no violation yet: a field that
    /// failed to parse is not also reported as missing.
    pub fn merge_unreported(&mut self, other: RuleViolations) {
        for violation in other.0 {
            if !self.0.iter().any(|known| known.field == violation.field) {
                self.0.push(violation);
            }
        }
    }

    /// How many violations were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }

    /// The (field, message) pairs.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|v| (v.field.as_str(), v.message.as_str()))
            .collect()
    }

    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }
}

impl std::fmt::Display for RuleViolations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect();
        write!(f, "invalid rule set: {}", parts.join("; "))
    }
}

impl std::error::Error for RuleViolations {}

/// A rule as requested, before validation: whatever was absent is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDraft {
    pub rule_id: String,
    pub kind: Option<RuleKind>,
    pub action: Option<Action>,
    pub currency: Option<String>,
    pub threshold: Option<Decimal>,
    pub count_limit: Option<i64>,
    pub window: Option<Window>,
    pub band: Option<Decimal>,
    pub min_age: Option<Duration>,
    pub review_deadline: Option<Duration>,
    /// Any action as requested; only APPROVE or DECLINE pass.
    pub timeout_action: Option<Action>,
    pub applies_to: Vec<TransactionKind>,
    pub description: String,
}

/// A rule-set update as requested (the fields of `UpdateRuleSetRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSetDraft {
    pub rules: Vec<RuleDraft>,
    pub anomaly_history: i64,
    pub decline_watchlist_period: Option<Duration>,
    pub actor: String,
    pub reason: String,
}

/// A validated rule set still without the version and time the store gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRuleSet {
    pub rules: Vec<Rule>,
    pub anomaly_history: u32,
    pub decline_watchlist_period: Duration,
    pub created_by: String,
    pub reason: String,
}

impl NewRuleSet {
    /// The stored version.
    pub fn into_rule_set(self, version: i64, created_at: DateTime<Utc>) -> RuleSet {
        RuleSet {
            version,
            rules: self.rules,
            anomaly_history: self.anomaly_history,
            decline_watchlist_period: self.decline_watchlist_period,
            created_by: self.created_by,
            reason: self.reason,
            created_at,
        }
    }
}

impl From<&Rule> for RuleDraft {
    fn from(rule: &Rule) -> Self {
        Self {
            rule_id: rule.rule_id.clone(),
            kind: Some(rule.kind),
            action: Some(rule.action),
            currency: rule.currency.clone(),
            threshold: rule.threshold,
            count_limit: rule.count_limit,
            window: rule.window,
            band: rule.band,
            min_age: rule.min_age,
            review_deadline: rule.review_deadline,
            // A stored non-review rule keeps the default it was given.
            timeout_action: (rule.action == Action::Review).then_some(match rule.timeout_action {
                TimeoutAction::Approve => Action::Approve,
                TimeoutAction::Decline => Action::Decline,
            }),
            applies_to: rule.applies_to.clone(),
            description: rule.description.clone(),
        }
    }
}

impl From<&RuleSet> for RuleSetDraft {
    fn from(set: &RuleSet) -> Self {
        Self {
            rules: set.rules.iter().map(RuleDraft::from).collect(),
            anomaly_history: i64::from(set.anomaly_history),
            decline_watchlist_period: Some(set.decline_watchlist_period),
            actor: set.created_by.clone(),
            reason: set.reason.clone(),
        }
    }
}
