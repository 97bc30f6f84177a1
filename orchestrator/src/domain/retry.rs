//! What happens when a step stays quiet: before the pivot it is re-sent with
//! backoff until its attempts run out, then the saga gives up and
//! compensates (with the step's `exhausted_reason`, else `TIMED_OUT`); after
//! the pivot and while compensating it is re-sent forever at the capped
//! interval and the saga is flagged for an operator. Giving up is shared with
//! operator aborts and expired waits.

use chrono::{DateTime, Utc};

use super::definition::{Failure, reason};
use super::engine::Engine;
use super::groups::steps_of;
use super::saga::{LogEvent, Position, Saga, Transition};

impl Engine<'_> {
    pub(super) fn timed_out(&self, mut saga: Saga, now: DateTime<Utc>, jitter: f64) -> Transition {
        // At a parallel group the first step still unanswered speaks for it:
        // its limit, its reason when the saga gives up.
        let position = self
            .outstanding(&saga)
            .first()
            .copied()
            .unwrap_or(saga.position);
        let (step, _) = self.step_at(position);
        let limit = step.max_attempts.unwrap_or(self.config.max_attempts).max(1);
        let exhausted = saga.attempt >= limit;
        if let Position::Forward(index) = position
            && exhausted
            && self.definition.before_pivot(index)
        {
            let detail = format!("{} timed out after {} attempts", step.name, saga.attempt);
            let failure = Failure {
                reason_code: step
                    .exhausted_reason
                    .unwrap_or(reason::TIMED_OUT)
                    .to_owned(),
                detail: detail.clone(),
            };
            return self.give_up(saga, index, failure, LogEvent::TimedOut, detail, None, now);
        }
        let delay = self.config.backoff(saga.attempt, jitter);
        let attempt = saga.attempt.saturating_add(1);
        let commands = self.resend(&mut saga, attempt, now, delay);
        if exhausted {
            saga.requires_attention = true;
        }
        let detail = format!(
            "no reply, re-sent {}; next check in {} ms{}",
            steps_of(&commands),
            (self.timeout(step) + delay).as_millis(),
            if saga.requires_attention {
                "; requires attention"
            } else {
                ""
            }
        );
        let log = self.log(
            &saga,
            (position, saga.attempt),
            LogEvent::Retried,
            detail,
            None,
        );
        Transition {
            saga,
            commands,
            log,
        }
    }

    /// Stops going forward at step `index` (the log row's subject), whose
    /// outcome is unknown, and compensates it, the rest of its parallel group
    /// and every step before.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn give_up(
        &self,
        mut saga: Saga,
        index: usize,
        failure: Failure,
        event: LogEvent,
        detail: String,
        actor: Option<String>,
        now: DateTime<Utc>,
    ) -> Transition {
        let subject = (Position::Forward(index), saga.attempt);
        saga.failure = Some(failure);
        let last = self.definition.group(index).end - 1;
        let next = self.next_compensation(Some(last), false);
        let commands = self.enter(&mut saga, next, now);
        let text = format!("{detail}; next: {}", steps_of(&commands));
        let log = self.log(&saga, subject, event, text, actor);
        Transition {
            saga,
            commands,
            log,
        }
    }
}
