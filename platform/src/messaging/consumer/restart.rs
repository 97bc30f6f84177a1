//! When a consumer starts again after an interruption.

use std::time::Duration;

/// How long a consumer waits before it restarts after an interruption:
/// 100 ms after a run that handled a batch, doubling (up to 30 s) over
/// runs that handled nothing. Progress, not the run's length, marks a new
/// incident: under faults a few seconds apart, a consumer that works between
/// them must not climb to the cap and sit out 30 s after the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RestartBackoff {
    next: Duration,
}

impl RestartBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(30);

    /// The wait before the next run, after a run that did or did not make
    /// `progress`.
    pub(super) fn after_interruption(&mut self, progress: bool) -> Duration {
        if progress {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        delay
    }
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_double_while_nothing_is_handled_and_reset_once_a_batch_is() {
        let mut backoff = RestartBackoff::default();
        let waits: Vec<u64> = (0..11)
            .map(|_| backoff.after_interruption(false).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [
                100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000
            ]
        );
        // A run that handled a batch before it broke: the next fault is a new incident.
        assert_eq!(backoff.after_interruption(true), Duration::from_millis(100));
        assert_eq!(
            backoff.after_interruption(false),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn faults_seconds_apart_never_reach_the_cap_when_the_consumer_works_between_them() {
        let mut backoff = RestartBackoff::default();
        let longest = (0..50)
            .map(|_| backoff.after_interruption(true))
            .max()
            .expect("waits");
        assert_eq!(longest, Duration::from_millis(100));
    }
}
