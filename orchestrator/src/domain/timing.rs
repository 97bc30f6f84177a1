//! Step timeouts and retry backoff: exponential with full jitter
//! (`random(0, min(cap, base · 2^(attempt-1)))`), so re-sends of many sagas
//! stuck on one participant spread out instead of arriving in waves.

use std::time::Duration;

/// The engine's timings; per-step overrides live in the step definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long a step waits for its reply before re-sending.
    pub step_timeout: Duration,
    /// The backoff ceiling after the first timeout; doubles per attempt.
    pub backoff_base: Duration,
    /// The largest backoff ceiling: post-pivot steps keep retrying at this interval.
    pub backoff_cap: Duration,
    /// Sends of a step before the saga gives up on it (pre-pivot) or asks
    /// for an operator (post-pivot and compensations).
    pub max_attempts: u32,
    /// How often the timer loop looks for due sagas.
    pub tick: Duration,
    /// Sagas claimed per timer round.
    pub timer_batch: i64,
    /// How long past a parked step's deadline the saga still waits for the
    /// final reply before giving up: the participant decides at its deadline
    /// and its answer needs time to arrive.
    pub wait_grace: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            max_attempts: 5,
            tick: Duration::from_millis(200),
            timer_batch: 100,
            wait_grace: Duration::from_secs(5 * 60),
        }
    }
}

impl EngineConfig {
    /// The delay added before the next check after `attempt` (1-based) sends
    /// timed out; `jitter` is a uniform sample in `[0, 1]`.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .backoff_base
            .checked_mul(1_u32 << exponent)
            .unwrap_or(self.backoff_cap)
            .min(self.backoff_cap);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn config() -> EngineConfig {
        EngineConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            ..EngineConfig::default()
        }
    }

    #[test]
    fn the_backoff_ceiling_doubles_per_attempt_until_the_cap() {
        let config = config();
        let ceilings: Vec<_> = (1..=6)
            .map(|attempt| config.backoff(attempt, 1.0).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_can_shrink_the_delay_to_nothing() {
        assert_eq!(config().backoff(4, 0.0), Duration::ZERO);
        assert_eq!(config().backoff(4, 0.5), Duration::from_millis(400));
    }

    proptest! {
        #[test]
        fn the_backoff_never_exceeds_the_cap(attempt in 0_u32..10_000, jitter in -1.0_f64..2.0) {
            prop_assert!(config().backoff(attempt, jitter) <= Duration::from_secs(1));
        }
    }
}
