//! Completed transfers counted over time, and what the counts say: sagas/s
//! in a window, and how long after the losses throughput came back.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

/// How often the completed transfers are counted.
const EVERY: Duration = Duration::from_millis(500);
/// The window a recovered rate is measured over.
pub const RECOVERY_WINDOW: f64 = 5.0;
/// The share of the rate before the losses that counts as recovered.
pub const RECOVERED_SHARE: f64 = 0.8;

/// One count: seconds since the load started, completed transfers in all,
/// and those of them sent through the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: f64,
    pub completed: i64,
    pub rest: i64,
}

/// Counts completed transfers in the background until [`Sampler::finish`].
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Counts from `start` on; transfers out of `rest_accounts` are the
    /// gateway's.
    pub fn start(owner: PgPool, start: Instant, rest_accounts: Vec<String>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let rest_ids: Vec<uuid::Uuid> = rest_accounts
            .iter()
            .map(|id| id.parse().expect("an account id"))
            .collect();
        let task = tokio::spawn({
            let samples = Arc::clone(&samples);
            let stop = stop.clone();
            async move {
                while !stop.is_cancelled() {
                    let counted: Result<(i64, i64), _> = sqlx::query_as(
                        "select count(*),
                                count(*) filter (where source_account_id = any($1))
                           from transaction.transaction
                          where kind = 'transfer' and status = 'completed'",
                    )
                    .bind(&rest_ids)
                    .fetch_one(&owner)
                    .await;
                    if let Ok((completed, rest)) = counted {
                        let at = start.elapsed().as_secs_f64();
                        // A line every ten seconds, to watch a long run.
                        if at % 10.0 < EVERY.as_secs_f64() {
                            eprintln!("cluster: {at:.0} s: {completed} transfers completed");
                        }
                        samples
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(Sample {
                                at,
                                completed,
                                rest,
                            });
                    }
                    sleep(EVERY).await;
                }
            }
        });
        Sampler {
            samples,
            stop,
            task,
        }
    }

    /// Stops counting; every count taken.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        self.task.await.expect("the sampler ran");
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.clone()
    }
}

/// The last count taken at or before `at` (the first count if none was).
fn count_at(samples: &[Sample], at: f64) -> Sample {
    samples
        .iter()
        .rev()
        .find(|sample| sample.at <= at)
        .or_else(|| samples.first())
        .copied()
        .expect("at least one sample")
}

/// Completed transfers a second between `from` and `to`: all, and the
/// gateway's.
pub fn rate(samples: &[Sample], from: f64, to: f64) -> (f64, f64) {
    let first = count_at(samples, from);
    let last = count_at(samples, to);
    let seconds = (last.at - first.at).max(f64::EPSILON);
    (
        (last.completed - first.completed) as f64 / seconds,
        (last.rest - first.rest) as f64 / seconds,
    )
}

/// Seconds from `loss` until the first transfer completed after it.
pub fn first_completion_after(samples: &[Sample], loss: f64) -> Option<f64> {
    let at_loss = count_at(samples, loss).completed;
    samples
        .iter()
        .find(|sample| sample.at > loss && sample.completed > at_loss)
        .map(|sample| sample.at - loss)
}

/// Seconds from `loss` until throughput was back: the start of the first
/// [`RECOVERY_WINDOW`] after the loss (starting at a count) in which
/// transfers completed at [`RECOVERED_SHARE`] of `before` or more. `None`
/// when no such window fits before `end`.
pub fn recovery(samples: &[Sample], loss: f64, end: f64, before: f64) -> Option<f64> {
    samples
        .iter()
        .filter(|sample| sample.at >= loss && sample.at + RECOVERY_WINDOW <= end)
        .find(|sample| {
            let (rate, _) = rate(samples, sample.at, sample.at + RECOVERY_WINDOW);
            rate >= RECOVERED_SHARE * before
        })
        .map(|sample| sample.at - loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count every half second: 10 a second until 10 s, nothing until
    /// 14 s, then 10 a second again.
    fn stalled() -> Vec<Sample> {
        (0..=60)
            .map(|half| {
                let at = f64::from(half) / 2.0;
                let busy = at.min(10.0) + (at - 14.0).max(0.0);
                let completed = (busy * 10.0) as i64;
                Sample {
                    at,
                    completed,
                    rest: completed / 2,
                }
            })
            .collect()
    }

    #[test]
    fn a_window_rate_is_the_completions_over_its_seconds() {
        let (all, rest) = rate(&stalled(), 2.0, 8.0);
        assert!((all - 10.0).abs() < 1e-9);
        assert!((rest - 5.0).abs() < 0.2);
    }

    #[test]
    fn the_first_completion_after_a_stall_is_where_counting_resumes() {
        assert_eq!(first_completion_after(&stalled(), 10.0), Some(4.5));
    }

    #[test]
    fn recovery_is_the_start_of_the_first_window_back_at_the_share() {
        // Before at 9 a second, 80 % is 7.2: the window from 12.5 s holds
        // 35 completions (7 a second), the one from 13 s holds 40.
        assert_eq!(recovery(&stalled(), 10.0, 30.0, 9.0), Some(3.0));
    }

    #[test]
    fn no_recovery_when_no_window_reaches_the_share() {
        assert_eq!(recovery(&stalled(), 10.0, 30.0, 100.0), None);
    }
}
