//! What a screen knows about a movement when it decides: the feature
//! snapshot. The store computes it from local state (events and earlier
//! screens), the rules read it, and the decision keeps it as jsonb, so the
//! same snapshot with the same rule-set version always gives the same answer.
//!
//! Conventions the store follows when it fills a snapshot:
//! - counts and sums include the movement being screened;
//! - for a transfer or withdrawal the "source" features are the source
//!   account's outgoing movements; for a deposit (no source) they are the
//!   destination's deposits;
//! - durations are whole seconds ([`age`] truncates).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::seconds;

/// The kind of money movement screened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    Transfer,
    Deposit,
    Withdrawal,
}

impl TransactionKind {
    /// Every kind, in proto order.
    pub const ALL: [Self; 3] = [Self::Transfer, Self::Deposit, Self::Withdrawal];

    /// The lowercase name used in jsonb and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
        }
    }
}

/// The look-back of a velocity feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Window {
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
}

impl Window {
    /// How far back the window reaches.
    pub fn duration(self) -> Duration {
        match self {
            Self::H1 => Duration::from_secs(3_600),
            Self::H24 => Duration::from_secs(86_400),
            Self::D7 => Duration::from_secs(7 * 86_400),
        }
    }

    /// The short name used in jsonb and fired-rule texts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "1h",
            Self::H24 => "24h",
            Self::D7 => "7d",
        }
    }
}

/// The features one decision used, exactly as it saw them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureSnapshot {
    /// Movements from the source in the last hour, this one included.
    pub count_1h: i64,
    pub count_24h: i64,
    pub count_7d: i64,
    /// Amounts from the source in the last hour, this one included.
    #[serde(with = "rust_decimal::serde::str")]
    pub sum_1h: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub sum_24h: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub sum_7d: Decimal,
    /// Distinct sources that paid the destination in 24 h, this one included.
    pub distinct_sources_24h: i64,
    /// No earlier movement from this source to this destination.
    pub first_time_payee: bool,
    /// Absent when the service has not seen the source account open.
    #[serde(with = "seconds::option")]
    pub account_age: Option<Duration>,
    /// Since the customer's KYC was verified; absent when unknown.
    #[serde(with = "seconds::option")]
    pub kyc_age: Option<Duration>,
    /// Robust z-score of the amount ([`super::anomaly::score`]); absent with
    /// too little history.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub anomaly_score: Option<Decimal>,
    /// How many past amounts the score looked at.
    pub history_size: u32,
    /// Watch-listed subjects involved, e.g. `account:<uuid>` ([`account_hit`]).
    pub watchlist_hits: Vec<String>,
    /// Deposits into the destination in 24 h inside the structuring band of
    /// the active rule set ([`StructuringBand`]), this one included if in it.
    pub structuring_count_24h: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO 4217 code of `amount` (and of the sums).
    pub currency: String,
    pub kind: TransactionKind,
}

impl FeatureSnapshot {
    /// Movements from the source in `window`.
    pub fn count(&self, window: Window) -> i64 {
        match window {
            Window::H1 => self.count_1h,
            Window::H24 => self.count_24h,
            Window::D7 => self.count_7d,
        }
    }

    /// Amount moved from the source in `window`.
    pub fn sum(&self, window: Window) -> Decimal {
        match window {
            Window::H1 => self.sum_1h,
            Window::H24 => self.sum_24h,
            Window::D7 => self.sum_7d,
        }
    }
}

/// Which deposits count as "just under the reporting threshold": amounts in
/// `[threshold - band, threshold)`. The store counts deposits in this band to
/// fill [`FeatureSnapshot::structuring_count_24h`]; the rule set names it
/// ([`super::rules::RuleSet::structuring_band`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructuringBand {
    pub threshold: Decimal,
    pub band: Decimal,
}

impl StructuringBand {
    /// The lowest amount inside the band (inclusive).
    pub fn lower(&self) -> Decimal {
        self.threshold - self.band
    }

    /// Whether `amount` is just under the threshold.
    pub fn contains(&self, amount: Decimal) -> bool {
        amount >= self.lower() && amount < self.threshold
    }
}

/// Time since `since` in whole seconds; zero when `since` is in the future
/// (clock skew between services must not make an account "older").
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let seconds = (now - since).num_seconds();
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The watchlist hit of an account.
pub fn account_hit(account_id: Uuid) -> String {
    format!("account:{account_id}")
}

/// The watchlist hit of a customer.
pub fn customer_hit(customer_id: Uuid) -> String {
    format!("customer:{customer_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_band_holds_amounts_just_under_the_threshold() {
        let band = StructuringBand {
            threshold: Decimal::new(10_000, 0),
            band: Decimal::new(1_000, 0),
        };
        assert!(band.contains(Decimal::new(900_000, 2)));
        assert!(band.contains(Decimal::new(999_999, 2)));
        assert!(!band.contains(Decimal::new(10_000, 0)));
        assert!(!band.contains(Decimal::new(899_999, 2)));
    }

    #[test]
    fn an_age_is_whole_seconds_and_never_negative() {
        let opened = DateTime::from_timestamp(1_700_000_000, 0).expect("valid time");
        let later = DateTime::from_timestamp(1_700_000_090, 900_000_000).expect("valid time");
        assert_eq!(age(opened, later), Duration::from_secs(90));
        assert_eq!(age(later, opened), Duration::ZERO);
    }

    #[test]
    fn a_snapshot_is_stored_with_decimal_strings_and_integer_seconds() {
        let snapshot = FeatureSnapshot {
            count_1h: 1,
            count_24h: 1,
            count_7d: 1,
            sum_1h: Decimal::new(125, 2),
            sum_24h: Decimal::new(125, 2),
            sum_7d: Decimal::new(125, 2),
            distinct_sources_24h: 1,
            first_time_payee: true,
            account_age: Some(Duration::from_secs(60)),
            kyc_age: None,
            anomaly_score: None,
            history_size: 0,
            watchlist_hits: vec![],
            structuring_count_24h: 0,
            amount: Decimal::new(125, 2),
            currency: "USD".to_owned(),
            kind: TransactionKind::Transfer,
        };
        let json = serde_json::to_value(&snapshot).expect("serializes");
        assert_eq!(json["sum_1h"], "1.25");
        assert_eq!(json["account_age"], 60);
        assert!(json["kyc_age"].is_null());
        assert_eq!(json["kind"], "transfer");
        let back: FeatureSnapshot = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, snapshot);
    }
}
