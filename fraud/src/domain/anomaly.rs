//! How unusual an amount is for the account that moves it: a robust z-score
//! against the account's own last N amounts (N is the rule set's
//! `anomaly_history`), all in `Decimal`.
//!
//! ```text
//! score = 0.6745 * (x - median) / scale
//! scale = max(MAD, 5% of |median|, 10% of (max - min), 1)
//! ```
//!
//! `MAD` is the median absolute deviation from the median; 0.6745 makes it
//! comparable to a standard deviation for normal data (Iglewicz & Hoaglin's
//! modified z-score). Median and MAD ignore a few outliers, which a mean and
//! a standard deviation would not. The scale is floored because MAD alone is
//! zero, or nearly, whenever most past amounts are the same, and then any
//! other amount would look infinitely unusual:
//! - 5% of the median: a constant history still tolerates small changes, and
//!   20 times a constant amount of 50.00 scores about 256;
//! - 10% of the history's range: an amount the account has already moved in
//!   its window scores at most 0.6745 * 10 = 6.745, below the default cut-off
//!   of 8, however the history is spread;
//! - one unit of currency: a deviation of a few units is never suspicious,
//!   which also keeps small histories of tiny amounts (a handful of transfers
//!   of a few cents to a few units) from flagging each other.
//!
//! Only high scores matter (the rule is `score > threshold`); amounts below
//! the median score negative. Scores are rounded to 4 decimal places so the
//! stored snapshot holds exactly the number the rule compared.

use rust_decimal::{Decimal, RoundingStrategy};

/// Fewer past amounts than this give no score: there is no "usual" yet.
pub const MIN_HISTORY: usize = 5;

/// Decimal places of a score.
pub const SCORE_DP: u32 = 4;

/// 0.6745, the 75th percentile of the standard normal distribution.
const CONSISTENCY: Decimal = Decimal::from_parts(6_745, 0, 0, false, 4);
/// 5%: the scale's floor relative to the median.
const MEDIAN_FRACTION: Decimal = Decimal::from_parts(5, 0, 0, false, 2);
/// 10%: the scale's floor relative to the history's range.
const RANGE_FRACTION: Decimal = Decimal::from_parts(1, 0, 0, false, 1);
/// One unit of currency: the scale's absolute floor.
const MATERIALITY: Decimal = Decimal::ONE;

/// The usual amount of an account and how far amounts usually stray from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Baseline {
    pub median: Decimal,
    /// The median absolute deviation, unfloored.
    pub mad: Decimal,
    /// The divisor of the score: MAD with its floors.
    pub scale: Decimal,
}

impl Baseline {
    /// The baseline of `history`; `None` with fewer than [`MIN_HISTORY`] amounts.
    pub fn of(history: &[Decimal]) -> Option<Self> {
        if history.len() < MIN_HISTORY {
            return None;
        }
        let mut sorted = history.to_vec();
        sorted.sort_unstable();
        let median = median_of_sorted(&sorted);
        let mut deviations: Vec<Decimal> = sorted.iter().map(|x| (*x - median).abs()).collect();
        deviations.sort_unstable();
        let mad = median_of_sorted(&deviations);
        // Sorted and non-empty, so first and last are min and max.
        let range = sorted[sorted.len() - 1] - sorted[0];
        let scale = mad
            .max(median.abs() * MEDIAN_FRACTION)
            .max(range * RANGE_FRACTION)
            .max(MATERIALITY);
        Some(Self { median, mad, scale })
    }

    /// The robust z-score of `amount`, rounded to [`SCORE_DP`] places; it
    /// saturates instead of overflowing for absurd amounts.
    pub fn score(&self, amount: Decimal) -> Decimal {
        let saturated = if amount >= self.median {
            Decimal::MAX
        } else {
            Decimal::MIN
        };
        amount
            .checked_sub(self.median)
            .and_then(|deviation| deviation.checked_mul(CONSISTENCY))
            .and_then(|scaled| scaled.checked_div(self.scale))
            .unwrap_or(saturated)
            .round_dp_with_strategy(SCORE_DP, RoundingStrategy::MidpointAwayFromZero)
    }
}

/// The robust z-score of `amount` against `history` (any order); `None` with
/// fewer than [`MIN_HISTORY`] past amounts.
pub fn score(amount: Decimal, history: &[Decimal]) -> Option<Decimal> {
    Baseline::of(history).map(|baseline| baseline.score(amount))
}

/// The median of sorted, non-empty values (the mean of the middle two for an
/// even count; halving a decimal is exact).
fn median_of_sorted(sorted: &[Decimal]) -> Decimal {
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / Decimal::TWO
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cents(value: i64) -> Decimal {
        Decimal::new(value, 2)
    }

    /// The default rule set's cut-off.
    fn cut_off() -> Decimal {
        Decimal::new(8, 0)
    }

    #[test]
    fn too_little_history_gives_no_score() {
        let history = vec![cents(100); MIN_HISTORY - 1];
        assert_eq!(score(cents(100), &history), None);
        assert_eq!(score(cents(100), &[]), None);
    }

    #[test]
    fn the_usual_amount_of_a_constant_history_scores_zero() {
        let history = vec![cents(5_000); 20];
        assert_eq!(score(cents(5_000), &history), Some(Decimal::ZERO));
    }

    #[test]
    fn twenty_times_a_constant_amount_scores_far_above_the_cut_off() {
        let history = vec![cents(5_000); 20];
        let scored = score(cents(100_000), &history).expect("enough history");
        // 0.6745 * 950 / 2.50 (5% of the median)
        assert_eq!(scored, Decimal::new(2_563_100, 4));
        assert!(scored > cut_off() * Decimal::TEN);
        let small = vec![cents(250); 5];
        assert!(score(cents(5_000), &small).expect("enough history") > cut_off() * Decimal::TWO);
    }

    #[test]
    fn median_and_mad_ignore_a_lone_outlier() {
        let mut history = vec![cents(2_000), cents(2_100), cents(1_900), cents(2_050)];
        history.extend([cents(1_950), cents(2_000), cents(500_000)]);
        let baseline = Baseline::of(&history).expect("enough history");
        assert_eq!(baseline.median, cents(2_000));
        assert_eq!(baseline.mad, cents(50));
    }

    #[test]
    fn an_even_history_takes_the_mean_of_the_middle_two() {
        let history = [
            cents(100),
            cents(200),
            cents(300),
            cents(400),
            cents(500),
            cents(600),
        ];
        assert_eq!(
            Baseline::of(&history).expect("enough history").median,
            cents(350)
        );
    }

    #[test]
    fn an_absurd_amount_saturates_instead_of_overflowing() {
        let history = vec![cents(100); 5];
        assert!(score(Decimal::MAX, &history).expect("enough history") > cut_off());
    }

    fn history() -> impl Strategy<Value = Vec<Decimal>> {
        prop::collection::vec((1i64..=500).prop_map(cents), MIN_HISTORY..200)
    }

    proptest! {
        #[test]
        fn the_order_of_the_history_does_not_matter(
            (history, shuffled) in history().prop_flat_map(|h| (Just(h.clone()), Just(h).prop_shuffle())),
            amount in 1i64..1_000_000,
        ) {
            prop_assert_eq!(score(cents(amount), &history), score(cents(amount), &shuffled));
        }

        #[test]
        fn an_amount_within_the_history_range_stays_below_the_cut_off(
            history in history(),
            position in 0i64..=100,
        ) {
            let low = *history.iter().min().expect("non-empty");
            let high = *history.iter().max().expect("non-empty");
            let amount = low + (high - low) * Decimal::new(position, 2);
            let scored = score(amount, &history).expect("enough history");
            prop_assert!(scored <= Decimal::new(6_745, 3), "{} scored {}", amount, scored);
            prop_assert!(scored <= cut_off());
        }

        #[test]
        fn a_larger_amount_never_scores_lower(
            history in history(),
            first in 1i64..10_000_000,
            second in 1i64..10_000_000,
        ) {
            let (smaller, larger) = (first.min(second), first.max(second));
            prop_assert!(score(cents(smaller), &history) <= score(cents(larger), &history));
        }
    }
}
