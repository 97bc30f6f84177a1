//! Runs the pure engine against the database: every accepted event writes
//! the saga's new state with its log row (one statement) and its outgoing
//! commands (outbox rows, one statement) in the caller's transaction, so they
//! commit or vanish together.
//! Consumers, the timer loop and the admin API all go through here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Engine, EngineConfig, Event, LogEntry, LogEvent, Refusal, Saga, Transition};
use crate::messages::{self, Requested};
use crate::store;

/// One requested movement, with the message that carried it.
#[derive(Debug)]
pub struct Starting<'a> {
    pub requested: Requested,
    pub causation_id: Option<Uuid>,
    /// The span the saga's first logs and commands belong to.
    pub span: &'a tracing::Span,
}

/// Creates the saga of every requested movement in `requests` and sends
/// their first commands, in one statement. Returns per request its new saga,
/// or `None` when its transaction already has one (a redelivered request).
pub async fn start_all(
    conn: &mut PgConnection,
    config: &EngineConfig,
    requests: Vec<Starting<'_>>,
    now: DateTime<Utc>,
) -> Result<Vec<Option<Saga>>, sqlx::Error> {
    let mut commands = Vec::new();
    let started: Vec<(Transition, Starting<'_>)> = requests
        .into_iter()
        .map(|starting| {
            let requested = &starting.requested;
            let engine = Engine::new(requested.saga_type.definition(), config);
            let transition = engine.start(
                Uuid::now_v7(),
                requested.transaction_id,
                requested.data.clone(),
                now,
            );
            // In the request's span, so the commands carry it as their parent.
            starting.span.in_scope(|| {
                commands.extend(transition.commands.iter().map(|command| {
                    messages::command_message(&transition.saga, command, now, starting.causation_id)
                }));
            });
            (transition, starting)
        })
        .collect();
    let rows: Vec<(&Saga, &LogEntry)> = started
        .iter()
        .map(|(transition, _)| (&transition.saga, &transition.log))
        .collect();
    let inserted = store::insert_all(conn, &rows, commands, now).await?;
    Ok(started
        .into_iter()
        .map(|(transition, starting)| {
            let saga = transition.saga;
            if !inserted.contains(&saga.saga_id) {
                return None;
            }
            starting.span.in_scope(|| {
                metrics::counter!("corebank_saga_started_total", "saga_type" => saga.saga_type.as_str()).increment(1);
                tracing::debug!(saga_id = %saga.saga_id, "saga started");
            });
            Some(saga)
        })
        .collect())
}

/// Applies `event` to a saga the caller has locked. A refusal changes nothing
/// and is returned for the caller to judge.
#[tracing::instrument(skip_all, fields(saga_id = %saga.saga_id), err)]
pub async fn apply(
    conn: &mut PgConnection,
    config: &EngineConfig,
    saga: &Saga,
    event: Event,
    now: DateTime<Utc>,
    causation_id: Option<Uuid>,
) -> Result<Result<Transition, Refusal>, sqlx::Error> {
    let engine = Engine::new(saga.saga_type.definition(), config);
    let is_reply = matches!(event, Event::Reply { .. });
    let transition = match engine.apply(saga, event, now, rand::random::<f64>()) {
        Ok(transition) => transition,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let commands = transition
        .commands
        .iter()
        .map(|command| messages::command_message(&transition.saga, command, now, causation_id))
        .collect();
    store::update(conn, &transition.saga, &transition.log, commands, now).await?;
    observe(saga, &transition, is_reply, now);
    Ok(Ok(transition))
}

/// One event for one saga, with the message that carried it.
#[derive(Debug)]
pub struct Applying<'a> {
    pub saga_id: Uuid,
    pub event: Event,
    pub causation_id: Option<Uuid>,
    /// The span the event's logs, metrics and commands belong to.
    pub span: &'a tracing::Span,
}

/// Applies `events` in order, each to its saga as the events before it left
/// it: locks every saga named, then writes every new state with its log rows
/// (one statement) and every command (one statement). Returns per event its
/// transition, its refusal, or `None` when the saga is unknown. What
/// [`apply`] does for one event, for a batch.
pub async fn apply_all(
    conn: &mut PgConnection,
    config: &EngineConfig,
    events: Vec<Applying<'_>>,
    now: DateTime<Utc>,
) -> Result<Vec<Option<Result<Transition, Refusal>>>, sqlx::Error> {
    let mut saga_ids: Vec<Uuid> = events.iter().map(|applying| applying.saga_id).collect();
    saga_ids.sort_unstable();
    saga_ids.dedup();
    let mut sagas: HashMap<Uuid, Saga> = store::lock_all(conn, &saga_ids)
        .await?
        .into_iter()
        .map(|saga| (saga.saga_id, saga))
        .collect();
    let mut changed: Vec<Uuid> = Vec::new();
    let mut results = Vec::with_capacity(events.len());
    let mut commands = Vec::new();
    for applying in events {
        let Some(saga) = sagas.get_mut(&applying.saga_id) else {
            results.push(None);
            continue;
        };
        let engine = Engine::new(saga.saga_type.definition(), config);
        let is_reply = matches!(applying.event, Event::Reply { .. });
        let transition = match engine.apply(saga, applying.event, now, rand::random::<f64>()) {
            Ok(transition) => transition,
            Err(refusal) => {
                results.push(Some(Err(refusal)));
                continue;
            }
        };
        // In the event's span, so the commands carry it as their parent.
        applying.span.in_scope(|| {
            commands.extend(transition.commands.iter().map(|command| {
                messages::command_message(&transition.saga, command, now, applying.causation_id)
            }));
            observe(saga, &transition, is_reply, now);
        });
        if !changed.contains(&saga.saga_id) {
            changed.push(saga.saga_id);
        }
        *saga = transition.saga.clone();
        results.push(Some(Ok(transition)));
    }
    if changed.is_empty() {
        return Ok(results);
    }
    let new_states: Vec<&Saga> = changed.iter().filter_map(|id| sagas.get(id)).collect();
    let entries: Vec<(Uuid, &LogEntry)> = results
        .iter()
        .filter_map(|result| match result {
            Some(Ok(transition)) => Some((transition.saga.saga_id, &transition.log)),
            _ => None,
        })
        .collect();
    store::update_all(conn, &new_states, &entries, commands, now).await?;
    Ok(results)
}

/// Metrics and logs of one transition: step latency on a reply, retries,
/// outcomes.
fn observe(before: &Saga, transition: &Transition, is_reply: bool, now: DateTime<Utc>) {
    let after = &transition.saga;
    let log = &transition.log;
    let saga_type = after.saga_type.as_str();
    if is_reply {
        let latency = (now - before.step_started_at).to_std().unwrap_or_default();
        metrics::histogram!(
            "corebank_saga_step_duration_seconds",
            "saga_type" => saga_type,
            "step" => log.step,
            "direction" => log.direction.as_str(),
            "event" => log.event.as_str(),
        )
        .record(latency.as_secs_f64());
    }
    match log.event {
        LogEvent::Retried => {
            metrics::counter!("corebank_saga_step_retries_total", "saga_type" => saga_type, "step" => log.step).increment(1);
            if after.requires_attention {
                tracing::warn!(saga_id = %after.saga_id, step = log.step, attempt = log.attempt, "saga step still unanswered, requires attention");
            } else {
                tracing::info!(saga_id = %after.saga_id, step = log.step, attempt = log.attempt, "saga step timed out, re-sent");
            }
        }
        LogEvent::Parked => {
            metrics::counter!("corebank_saga_parked_total", "saga_type" => saga_type, "step" => log.step).increment(1);
            tracing::info!(saga_id = %after.saga_id, step = log.step, detail = %log.detail, "saga parked");
        }
        LogEvent::WaitExpired => {
            metrics::counter!("corebank_saga_wait_expired_total", "saga_type" => saga_type, "step" => log.step).increment(1);
            tracing::warn!(saga_id = %after.saga_id, step = log.step, detail = %log.detail, "parked saga's wait expired, compensating");
        }
        LogEvent::Rejected if after.requires_attention => {
            tracing::warn!(saga_id = %after.saga_id, step = log.step, detail = %log.detail, "a step that cannot be refused was, requires attention");
        }
        _ => {
            tracing::debug!(saga_id = %after.saga_id, step = log.step, event = log.event.as_str(), "saga transition")
        }
    }
    if after.state.is_terminal() && !before.state.is_terminal() {
        metrics::counter!("corebank_saga_outcomes_total", "saga_type" => saga_type, "outcome" => after.state.as_str()).increment(1);
        let lifetime = (now - after.created_at).to_std().unwrap_or_default();
        metrics::histogram!("corebank_saga_duration_seconds", "saga_type" => saga_type, "outcome" => after.state.as_str())
            .record(lifetime.as_secs_f64());
        // The one line a money movement leaves at INFO.
        tracing::info!(
            saga_id = %after.saga_id,
            saga_type,
            outcome = after.state.as_str(),
            reason = after.failure.as_ref().map(|failure| failure.reason_code.as_str()).unwrap_or(""),
            "saga finished"
        );
    }
}
