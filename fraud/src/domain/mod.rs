//! Fraud's pure rules: the feature snapshot a screen decides from, the
//! anomaly score, the versioned rule set with its validation and defaults,
//! and the evaluation that turns a snapshot into a decision. No I/O here:
//! no tonic, sqlx or lapin; the store computes features, the consumer and
//! the gRPC edge carry them.

pub mod anomaly;
pub mod defaults;
pub mod draft;
pub mod evaluate;
pub mod features;
pub mod rules;
pub mod seconds;
pub mod validate;

#[cfg(test)]
mod tests;

pub use anomaly::{Baseline, MIN_HISTORY};
pub use defaults::{DEFAULT_ANOMALY_HISTORY, DEFAULT_DECLINE_WATCHLIST_PERIOD, default_rule_set};
pub use draft::{NewRuleSet, RuleDraft, RuleSetDraft, RuleViolations, Violation};
pub use evaluate::{Evaluation, FiredRule, Outcome, evaluate};
pub use features::{
    FeatureSnapshot, StructuringBand, TransactionKind, Window, account_hit, age, customer_hit,
};
pub use rules::{Action, Rule, RuleKind, RuleSet, TimeoutAction};
pub use validate::validate;
