//! What the bench sends, decided up front from a seed so a run can be
//! replayed: the kind of each movement (`--mix`), which accounts it touches
//! (uniformly, or skewed by a Zipf law with `--zipf S`, so a few accounts
//! are hot), and its amount.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which saga a planned movement starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Transfer,
    Deposit,
    Withdrawal,
}

/// One planned movement: indexes into the funded accounts, amount in cents.
/// A deposit credits `destination`, a withdrawal debits `source`.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub kind: Kind,
    pub source: usize,
    pub destination: usize,
    pub cents: u32,
}

/// The share of each kind, as `transfer=2,deposit=1,withdrawal=1` (weights,
/// normalised; a kind left out gets none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    transfer: f64,
    deposit: f64,
    withdrawal: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            transfer: 1.0,
            deposit: 0.0,
            withdrawal: 0.0,
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut mix = Mix {
            transfer: 0.0,
            deposit: 0.0,
            withdrawal: 0.0,
        };
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected kind=weight"))?;
            let weight: f64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{part:?}: the weight is not a number"))?;
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!("{part:?}: a weight is a number >= 0"));
            }
            match name.trim() {
                "transfer" => mix.transfer = weight,
                "deposit" => mix.deposit = weight,
                "withdrawal" => mix.withdrawal = weight,
                other => {
                    return Err(format!(
                        "unknown kind {other:?}: transfer, deposit or withdrawal"
                    ));
                }
            }
        }
        if mix.total() <= 0.0 {
            return Err("the weights add up to nothing".to_owned());
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        write!(
            f,
            "transfer={:.2},deposit={:.2},withdrawal={:.2}",
            self.transfer / total,
            self.deposit / total,
            self.withdrawal / total
        )
    }
}

impl Mix {
    fn total(&self) -> f64 {
        self.transfer + self.deposit + self.withdrawal
    }

    fn pick(&self, rng: &mut StdRng) -> Kind {
        let draw = rng.random::<f64>() * self.total();
        if draw < self.transfer {
            Kind::Transfer
        } else if draw < self.transfer + self.deposit {
            Kind::Deposit
        } else {
            Kind::Withdrawal
        }
    }
}

/// Picks account indexes: uniformly, or with probability ∝ 1 / rank^s.
struct Accounts {
    /// Cumulative weights by rank, for a Zipf law; empty for uniform.
    cumulative: Vec<f64>,
    count: usize,
}

impl Accounts {
    fn new(count: usize, zipf: Option<f64>) -> Self {
        let cumulative = zipf
            .map(|s| {
                let mut sum = 0.0;
                (1..=count)
                    .map(|rank| {
                        sum += 1.0 / (rank as f64).powf(s);
                        sum
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { cumulative, count }
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        let Some(total) = self.cumulative.last() else {
            return rng.random_range(0..self.count);
        };
        let draw = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&sum| sum <= draw)
            .min(self.count - 1)
    }

    /// Another account than `other`, from the same law.
    fn pick_other(&self, rng: &mut StdRng, other: usize) -> usize {
        loop {
            let picked = self.pick(rng);
            if picked != other {
                return picked;
            }
        }
    }
}

/// `count` movements over `accounts` accounts (at least 2), from `seed`.
pub fn plan(count: u64, accounts: usize, seed: u64, mix: Mix, zipf: Option<f64>) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let law = Accounts::new(accounts, zipf);
    (0..count)
        .map(|_| {
            let kind = mix.pick(&mut rng);
            let source = law.pick(&mut rng);
            let destination = law.pick_other(&mut rng, source);
            Planned {
                kind,
                source,
                destination,
                cents: rng.random_range(1..=500),
            }
        })
        .collect()
}

/// The heaviest load `planned` puts on one account, in the terms of the
/// default fraud rules: the most movements one account sends (transfers and
/// withdrawals; a deposit has no source) and the most distinct accounts
/// that transfer into one account.
#[derive(Debug, PartialEq, Eq)]
pub struct Busiest {
    pub sends: u64,
    pub sources_into: usize,
}

pub fn busiest(planned: &[Planned]) -> Busiest {
    let mut sends: HashMap<usize, u64> = HashMap::new();
    let mut sources_into: HashMap<usize, HashSet<usize>> = HashMap::new();
    for movement in planned {
        if movement.kind != Kind::Deposit {
            *sends.entry(movement.source).or_default() += 1;
        }
        if movement.kind == Kind::Transfer {
            sources_into
                .entry(movement.destination)
                .or_default()
                .insert(movement.source);
        }
    }
    Busiest {
        sends: sends.into_values().max().unwrap_or(0),
        sources_into: sources_into
            .into_values()
            .map(|sources| sources.len())
            .max()
            .unwrap_or(0),
    }
}

/// `--zipf S`: a finite exponent above 0.
pub fn parse_zipf(text: &str) -> Result<f64, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if s.is_finite() && s > 0.0 {
        Ok(s)
    } else {
        Err("the Zipf exponent is a number above 0 (1.1 is typical)".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn share<T: Eq + std::hash::Hash>(items: impl Iterator<Item = T>, of: &T, n: usize) -> f64 {
        let mut counts: HashMap<T, usize> = HashMap::new();
        for item in items {
            *counts.entry(item).or_default() += 1;
        }
        counts.get(of).copied().unwrap_or_default() as f64 / n as f64
    }

    #[test]
    fn the_mix_gives_each_kind_its_share() {
        let mix: Mix = "transfer=1, deposit=1".parse().unwrap();
        let planned = plan(20_000, 20, 7, mix, None);
        let deposits = share(planned.iter().map(|p| p.kind), &Kind::Deposit, 20_000);
        assert!((0.47..0.53).contains(&deposits), "{deposits}");
        assert!(planned.iter().all(|p| p.kind != Kind::Withdrawal));
        assert_eq!(
            mix.to_string(),
            "transfer=0.50,deposit=0.50,withdrawal=0.00"
        );
    }

    #[test]
    fn a_bad_mix_is_refused_naming_what_is_wrong() {
        for (text, expected) in [
            ("transfer", "kind=weight"),
            ("transfer=x", "not a number"),
            ("refund=1", "unknown kind"),
            ("transfer=-1", ">= 0"),
            ("transfer=0", "nothing"),
        ] {
            let error = text.parse::<Mix>().unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn zipf_makes_the_first_accounts_hot_and_uniform_does_not() {
        let hot = |zipf| {
            let planned = plan(20_000, 100, 11, Mix::default(), zipf);
            share(planned.iter().map(|p| p.source), &0, 20_000)
        };
        // 1 / H(100, 1.1) ≈ 0.23 of the picks go to the first account.
        let skewed = hot(Some(1.1));
        assert!((0.19..0.27).contains(&skewed), "{skewed}");
        let uniform = hot(None);
        assert!(uniform < 0.02, "{uniform}");
    }

    #[test]
    fn a_movement_never_goes_from_an_account_to_itself_and_the_seed_replays() {
        let first = plan(5_000, 3, 5, Mix::default(), Some(2.0));
        assert!(first.iter().all(|p| p.source != p.destination));
        assert!(first.iter().all(|p| (1..=500).contains(&p.cents)));
        let again = plan(5_000, 3, 5, Mix::default(), Some(2.0));
        let pairs = |plan: &[Planned]| {
            plan.iter()
                .map(|p| (p.source, p.destination, p.cents))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&first), pairs(&again));
    }

    #[test]
    fn the_busiest_account_is_counted_from_the_plan() {
        let movement = |kind, source, destination| Planned {
            kind,
            source,
            destination,
            cents: 1,
        };
        let planned = [
            movement(Kind::Transfer, 0, 1),
            movement(Kind::Transfer, 0, 1),
            movement(Kind::Withdrawal, 0, 2),
            movement(Kind::Transfer, 2, 1),
            movement(Kind::Deposit, 3, 1),
            movement(Kind::Deposit, 3, 2),
        ];
        assert_eq!(
            busiest(&planned),
            Busiest {
                sends: 3,
                sources_into: 2
            }
        );
        // Zipf loads the first account far above the average.
        let skewed = busiest(&plan(4_000, 20, 7, Mix::default(), Some(1.1)));
        let uniform = busiest(&plan(4_000, 20, 7, Mix::default(), None));
        assert!(skewed.sends > 1_000, "{skewed:?}");
        assert!(uniform.sends < 300, "{uniform:?}");
    }

    #[test]
    fn the_zipf_exponent_must_be_positive() {
        assert_eq!(parse_zipf("1.1"), Ok(1.1));
        for bad in ["0", "-1", "inf", "x"] {
            assert!(parse_zipf(bad).is_err(), "{bad}");
        }
    }
}
