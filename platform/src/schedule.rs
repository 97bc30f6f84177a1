//! Periodic background work: one loop for every "do this every N until
//! shutdown" task, so each service writes only what it does, not when.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `work` every `period` until `shutdown`, the first time `first` from
/// now. A run that overruns delays the next one rather than bunching them up.
pub async fn every<F, Fut>(
    first: Duration,
    period: Duration,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => work().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_runs_first_after_the_delay_then_every_period_until_shutdown() {
        let runs = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let counted = runs.clone();
        let task = tokio::spawn(every(
            Duration::from_secs(10),
            Duration::from_secs(5),
            shutdown.clone(),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {}
            },
        ));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "at 10, 15 and 20 s");
        shutdown.cancel();
        task.await.expect("the loop ends on shutdown");
    }
}
