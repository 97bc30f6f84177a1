//! The timer loop: every tick, claim the active sagas whose deadline passed
//! (`for update skip locked`, so replicas share the work and a saga being
//! advanced by a reply is left alone) and feed each a timeout. Timers are rows,
//! so a restarted orchestrator resumes whatever fell due while it was down.

use std::sync::Arc;
use std::time::Duration;

use corebank_platform::clock::SharedClock;
use corebank_platform::telemetry::Every;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::domain::{EngineConfig, Event};
use crate::runtime;
use crate::store::{self, SagaStore};

/// Runs until `shutdown` is cancelled.
pub async fn run(
    store: SagaStore,
    config: Arc<EngineConfig>,
    clock: SharedClock,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut gauges = Every::new(GAUGES_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // A full batch means more may be due: go again without waiting.
        while !shutdown.is_cancelled() {
            match round(&store, &config, &clock).await {
                Ok(claimed) if claimed as i64 >= config.timer_batch => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "saga timer round failed");
                    break;
                }
            }
        }
        if gauges.due() {
            sample(&store, &clock).await;
        }
    }
    tracing::info!("saga timers stopped");
}

/// How often the gauges of running sagas are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// Sets the gauges of the sagas still running: `corebank_saga_active`,
/// `corebank_saga_requires_attention`, `corebank_saga_parked` and
/// `corebank_saga_oldest_active_seconds`. Every replica reports the same
/// figures (they share the table): alert on one, or on `max`.
async fn sample(store: &SagaStore, clock: &SharedClock) {
    match store.active_summary(clock.now()).await {
        Ok(summary) => {
            metrics::gauge!("corebank_saga_active").set(summary.active as f64);
            metrics::gauge!("corebank_saga_requires_attention")
                .set(summary.requires_attention as f64);
            metrics::gauge!("corebank_saga_parked").set(summary.parked as f64);
            metrics::gauge!("corebank_saga_oldest_active_seconds").set(summary.oldest_seconds);
        }
        Err(error) => tracing::debug!(%error, "saga gauges not refreshed"),
    }
}

/// Times out the due sagas of one batch in one transaction; returns how many
/// were claimed.
pub async fn round(
    store: &SagaStore,
    config: &EngineConfig,
    clock: &SharedClock,
) -> Result<usize, sqlx::Error> {
    let now = clock.now();
    let mut tx = store.begin().await?;
    let due = store::claim_due(&mut tx, now, config.timer_batch).await?;
    for saga in &due {
        if let Err(refusal) =
            runtime::apply(&mut tx, config, saga, Event::TimedOut, now, None).await?
        {
            tracing::debug!(saga_id = %saga.saga_id, %refusal, "timer skipped saga");
        }
    }
    tx.commit().await?;
    Ok(due.len())
}
