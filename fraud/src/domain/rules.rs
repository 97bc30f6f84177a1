//! The versioned rule set: what each rule looks at, what it does when it
//! fires and, for reviews, how long an analyst has and what happens when
//! nobody decides. A version is immutable once stored (as jsonb); a decision
//! names the version it used. Building one from a request goes through
//! [`super::validate`]; the defaults are in [`super::defaults`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::features::{StructuringBand, TransactionKind, Window};
use super::seconds;

/// What a rule checks; semantics as in `fraud.proto`'s `RuleKind`, every
/// limit strict (`>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// amount > threshold.
    AmountAbove,
    /// count in `window` > count_limit.
    VelocityCount,
    /// sum in `window` > threshold.
    VelocitySum,
    /// first movement to this payee and amount > threshold.
    FirstPayeeAmount,
    /// distinct sources into the destination in 24 h > count_limit.
    FanIn,
    /// anomaly score > threshold.
    AnomalyScore,
    /// any watchlist hit.
    Watchlist,
    /// a deposit inside the band below threshold, and deposits in the band
    /// in 24 h > count_limit.
    Structuring,
    /// account younger than min_age (and amount > threshold, when set).
    NewAccount,
}

impl RuleKind {
    /// Every kind, in proto order.
    pub const ALL: [Self; 9] = [
        Self::AmountAbove,
        Self::VelocityCount,
        Self::VelocitySum,
        Self::FirstPayeeAmount,
        Self::FanIn,
        Self::AnomalyScore,
        Self::Watchlist,
        Self::Structuring,
        Self::NewAccount,
    ];

    /// The proto enum's name without its prefix, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::AmountAbove => "AMOUNT_ABOVE",
            Self::VelocityCount => "VELOCITY_COUNT",
            Self::VelocitySum => "VELOCITY_SUM",
            Self::FirstPayeeAmount => "FIRST_PAYEE_AMOUNT",
            Self::FanIn => "FAN_IN",
            Self::AnomalyScore => "ANOMALY_SCORE",
            Self::Watchlist => "WATCHLIST",
            Self::Structuring => "STRUCTURING",
            Self::NewAccount => "NEW_ACCOUNT",
        }
    }
}

/// What a fired rule does to the movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing: the rule is recorded as fired, the outcome is unchanged.
    Approve,
    /// Holds the movement for an analyst.
    Review,
    /// Refuses the movement.
    Decline,
    /// Raises an alert; the movement goes on.
    Alert,
}

/// What an unanswered review becomes when its deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    Approve,
    /// The default: an unreviewed suspicion does not move money.
    #[default]
    Decline,
}

/// One rule; which parameters count depends on `kind` (see
/// [`super::validate`] for which are required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Stable and unique in the set, `[a-z0-9_-]+`.
    pub rule_id: String,
    pub kind: RuleKind,
    pub action: Action,
    /// `None`: every currency.
    pub currency: Option<String>,
    /// An amount in `currency`, or a score for `AnomalyScore`.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub threshold: Option<Decimal>,
    pub count_limit: Option<i64>,
    pub window: Option<Window>,
    /// Structuring: how far below the threshold counts as "just under".
    #[serde(with = "rust_decimal::serde::str_option")]
    pub band: Option<Decimal>,
    /// NewAccount: accounts younger than this.
    #[serde(with = "seconds::option")]
    pub min_age: Option<Duration>,
    /// Review: how long an analyst has; `None`: the service's default.
    #[serde(with = "seconds::option")]
    pub review_deadline: Option<Duration>,
    /// Review: what the deadline decides.
    #[serde(default)]
    pub timeout_action: TimeoutAction,
    /// Which movements the rule looks at; empty: all.
    pub applies_to: Vec<TransactionKind>,
    pub description: String,
}

impl Rule {
    /// A rule of `kind` with no parameters, looking at every movement; set
    /// the rest with struct update syntax.
    pub fn new(rule_id: &str, kind: RuleKind, action: Action) -> Self {
        Self {
            rule_id: rule_id.to_owned(),
            kind,
            action,
            currency: None,
            threshold: None,
            count_limit: None,
            window: None,
            band: None,
            min_age: None,
            review_deadline: None,
            timeout_action: TimeoutAction::default(),
            applies_to: Vec::new(),
            description: String::new(),
        }
    }

    /// Whether the rule looks at a movement of `kind` in `currency`.
    pub fn applies(&self, kind: TransactionKind, currency: &str) -> bool {
        let currency_matches = self.currency.as_deref().is_none_or(|own| own == currency);
        let kind_matches = self.applies_to.is_empty() || self.applies_to.contains(&kind);
        currency_matches && kind_matches
    }

    /// The band of a structuring rule with both parameters.
    pub fn structuring_band(&self) -> Option<StructuringBand> {
        match (self.kind, self.threshold, self.band) {
            (RuleKind::Structuring, Some(threshold), Some(band)) => {
                Some(StructuringBand { threshold, band })
            }
            _ => None,
        }
    }
}

/// One immutable version of the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    /// Increasing from 1.
    pub version: i64,
    /// Evaluated in this order; fired rules are listed in it.
    pub rules: Vec<Rule>,
    /// How many past amounts the anomaly score looks at.
    pub anomaly_history: u32,
    /// How long an analyst's decline keeps the destination on the watchlist.
    #[serde(with = "seconds")]
    pub decline_watchlist_period: Duration,
    pub created_by: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

impl RuleSet {
    /// The structuring band the store must count deposits of `currency` in,
    /// if a structuring rule looks at such deposits. Validation allows at
    /// most one structuring rule per currency, so there is one band to count.
    pub fn structuring_band(&self, currency: &str) -> Option<StructuringBand> {
        self.rules
            .iter()
            .filter(|rule| rule.applies(TransactionKind::Deposit, currency))
            .find_map(Rule::structuring_band)
    }
}
