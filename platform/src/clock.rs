//! An injected clock: wherever time decides behaviour (expiry, retention),
//! code asks a [`Clock`] so tests can move time by hand.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, SubsecRound, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// Shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// Microsecond precision, as PostgreSQL keeps it, so a value answered
    /// now equals the same value read back later.
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// The system clock as a [`SharedClock`]; in a test build, skewed by
/// [`crate::failpoint::clock_skew`] when one is set.
pub fn system() -> SharedClock {
    match crate::failpoint::clock_skew() {
        Some(skew) => {
            tracing::warn!(
                skew_ms = skew.num_milliseconds(),
                "this process's clock is skewed (COREBANK_CLOCK_SKEW_MS, a test build)"
            );
            Arc::new(SkewedClock(skew))
        }
        None => Arc::new(SystemClock),
    }
}

/// The wall clock moved by a fixed amount: a replica whose clock disagrees.
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock(pub Duration);

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + self.0
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(start),
        })
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let start = Utc::now();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::seconds(90));
        assert_eq!(clock.now(), start + Duration::seconds(90));
    }
}
