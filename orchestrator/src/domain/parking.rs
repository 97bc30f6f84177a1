//! Parking: a step declared to wait ([`super::StepDef::may_wait`]) may answer
//! WAITING with a deadline instead of a final reply (a fraud review). The
//! saga then parks at that step: it re-sends nothing, its timer becomes a
//! guard at deadline plus [`EngineConfig::wait_grace`](super::EngineConfig),
//! and the step's final reply (same command id) resumes it as any reply
//! would. Nothing here knows about fraud: the step's declaration says what to
//! announce when parking and which reason to fail with when the guard fires.
//!
//! Decisions worth knowing:
//! - WAITING from a step that may not wait is refused ([`Refusal::MayNotWait`]):
//!   the saga keeps its timer and re-sends as if nothing had arrived, so a
//!   confused participant can never stall a saga.
//! - A second WAITING while parked extends the wait only to a later deadline
//!   (the participant may legitimately need longer, and the guard must not
//!   fire before its own deadline); an equal or earlier one is a duplicate
//!   ([`Refusal::AlreadyParked`]) and changes nothing, so the guard never
//!   moves closer. Extending sends no second notice.
//! - The guard gives up like an exhausted step before the pivot: it
//!   compensates the parked step (its outcome is unknown) and every step
//!   before it, with the step's `wait_expired_reason`.

use chrono::{DateTime, Utc};
use corebank_proto::wire::{self, Direction};

use super::definition::{Failure, Notice};
use super::engine::Engine;
use super::saga::{LogEvent, OutgoingCommand, Position, Refusal, Saga, Transition};

impl Engine<'_> {
    /// The awaited step at `position` answered WAITING until `deadline`.
    /// At a parallel group whose other steps are still out, their timer
    /// keeps running; the guard takes over once they have all succeeded.
    pub(super) fn waiting(
        &self,
        mut saga: Saga,
        position: Position,
        deadline: DateTime<Utc>,
    ) -> Result<Transition, Refusal> {
        let (step, _) = self.step_at(position);
        if !step.may_wait || !matches!(position, Position::Forward(_)) {
            return Err(Refusal::MayNotWait { step: step.name });
        }
        let guard = self.guard(deadline);
        let subject = (position, saga.attempt);
        if let Some(parked_until) = saga.parked_until {
            if deadline <= parked_until {
                return Err(Refusal::AlreadyParked { parked_until });
            }
            saga.parked_until = Some(deadline);
            self.arm_guard(&mut saga);
            let detail = format!(
                "deadline extended from {} to {}; gives up at {}",
                parked_until.to_rfc3339(),
                deadline.to_rfc3339(),
                guard.to_rfc3339()
            );
            let log = self.log(&saga, subject, LogEvent::Parked, detail, None);
            return Ok(Transition {
                saga,
                commands: Vec::new(),
                log,
            });
        }
        saga.parked_until = Some(deadline);
        self.arm_guard(&mut saga);
        let commands: Vec<_> = step
            .on_wait
            .iter()
            .map(|notice| self.notice(&saga, notice))
            .collect();
        let detail = format!(
            "waits for a final answer until {}; gives up at {}",
            deadline.to_rfc3339(),
            guard.to_rfc3339()
        );
        let log = self.log(&saga, subject, LogEvent::Parked, detail, None);
        Ok(Transition {
            saga,
            commands,
            log,
        })
    }

    /// The guard of a parked saga fired: no final reply by deadline plus grace.
    pub(super) fn wait_expired(&self, saga: Saga, now: DateTime<Utc>, jitter: f64) -> Transition {
        let Some(Position::Forward(index)) = self.parked_step(&saga) else {
            // Only forward steps that may wait park; a stored saga that says
            // otherwise is treated as an ordinary timeout rather than stalled.
            let mut unparked = saga;
            unparked.parked_until = None;
            return self.timed_out(unparked, now, jitter);
        };
        let (step, _) = self.step_at(Position::Forward(index));
        let deadline = saga.parked_until.unwrap_or(now);
        let detail = format!(
            "{} parked until {}, no final answer by {}",
            step.name,
            deadline.to_rfc3339(),
            now.to_rfc3339()
        );
        let failure = Failure {
            reason_code: step.wait_expired_reason.to_owned(),
            detail: detail.clone(),
        };
        self.give_up(
            saga,
            index,
            failure,
            LogEvent::WaitExpired,
            detail,
            None,
            now,
        )
    }

    /// Makes the guard the timer of a parked saga once its parked step is
    /// all it awaits; while others of its group are out, their timer runs.
    pub(super) fn arm_guard(&self, saga: &mut Saga) {
        if let Some(parked_until) = saga.parked_until
            && self.outstanding(saga).is_empty()
        {
            saga.next_attempt_at = Some(self.guard(parked_until));
        }
    }

    /// When a saga parked until `deadline` gives up.
    fn guard(&self, deadline: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.config.wait_grace)
            .ok()
            .and_then(|grace| deadline.checked_add_signed(grace))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// A fire-and-forget notice: its own name in the command id, no reply awaited.
    fn notice(&self, saga: &Saga, notice: &Notice) -> OutgoingCommand {
        OutgoingCommand {
            step: notice.name,
            direction: Direction::Forward,
            participant: notice.participant,
            command_id: wire::command_id(saga.saga_id, notice.name, Direction::Forward),
            command: (notice.build)(&self.input(saga)),
            attempt: 1,
        }
    }
}
