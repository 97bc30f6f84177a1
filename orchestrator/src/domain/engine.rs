//! The saga state machine, pure: given a saga, its definition and an event
//! (a reply, a timeout, an operator action), it answers the new saga, the
//! commands to send and the one log row that records the transition, or
//! refuses the event. The caller persists all three in one transaction.
//!
//! The rules that make it strict:
//! - a reply counts only if it answers a command currently awaited;
//! - steps declared to run alongside the step before them form a parallel
//!   group: their commands go out together, each reply is logged as it
//!   comes, and the saga moves on once all of them succeeded; a refusal of
//!   any of them compensates the others (whose outcome may be unknown) and
//!   every step before the group;
//! - before the pivot, a refusal or exhausted retries compensate (in reverse,
//!   the timed-out step included since its outcome is unknown);
//! - once the pivot's command is out, nothing compensates unless the pivot
//!   itself is refused; timeouts there, in compensations and in the finishes
//!   re-send forever at the capped interval and flag the saga for an operator;
//! - a step declared to wait may answer WAITING: the saga parks there, sends
//!   nothing, and resumes on the final reply (see [`super::parking`]).

use chrono::{DateTime, Utc};
use corebank_proto::wire::{self, Direction};
use uuid::Uuid;

use super::definition::{Failure, SagaData, SagaDefinition, StepDef, StepInput, reason};
use super::groups::steps_of;
use super::saga::{
    Event, LogEntry, LogEvent, OutgoingCommand, Position, Refusal, ReplyOutcome, Saga, SagaState,
    Transition, step_at,
};
use super::timing::EngineConfig;

/// Runs sagas of one definition with one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Engine<'a> {
    pub definition: &'a SagaDefinition,
    pub config: &'a EngineConfig,
}

impl<'a> Engine<'a> {
    pub fn new(definition: &'a SagaDefinition, config: &'a EngineConfig) -> Self {
        Self { definition, config }
    }

    /// A new saga and its first command.
    pub fn start(
        &self,
        saga_id: Uuid,
        transaction_id: Uuid,
        data: SagaData,
        now: DateTime<Utc>,
    ) -> Transition {
        let mut saga = Saga {
            saga_id,
            saga_type: self.definition.saga_type,
            transaction_id,
            state: SagaState::Running,
            position: Position::Forward(0),
            attempt: 0,
            next_attempt_at: None,
            step_started_at: now,
            requires_attention: false,
            parked_until: None,
            answered: Vec::new(),
            data,
            failure: None,
            created_at: now,
            updated_at: now,
        };
        let commands = self.enter(&mut saga, Position::Forward(0), now);
        let detail = format!(
            "{} of {} {}",
            saga.saga_type.as_str(),
            saga.data.amount,
            saga.data.currency
        );
        let log = self.log(
            &saga,
            (saga.position, saga.attempt),
            LogEvent::Started,
            detail,
            None,
        );
        Transition {
            saga,
            commands,
            log,
        }
    }

    /// Applies `event` at `now`; `jitter` is a uniform sample in `[0, 1]`
    /// for the backoff.
    pub fn apply(
        &self,
        saga: &Saga,
        event: Event,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Result<Transition, Refusal> {
        if saga.state.is_terminal() {
            return Err(Refusal::Terminal);
        }
        let mut next = saga.clone();
        next.updated_at = now;
        match event {
            Event::Reply {
                command_id,
                outcome,
            } => {
                let awaited = self.awaited(saga);
                let Some(replied) = awaited
                    .iter()
                    .copied()
                    .find(|&position| self.command_id(saga, position) == command_id)
                else {
                    let awaited = awaited
                        .iter()
                        .map(|&position| self.command_id(saga, position))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Refusal::StaleReply {
                        received: command_id,
                        awaited,
                    });
                };
                if let ReplyOutcome::Waiting { deadline } = outcome {
                    return self.waiting(next, replied, deadline);
                }
                // The parked step's final reply resumes the saga exactly as
                // it would an unparked one.
                if self.parked_step(saga) == Some(replied) {
                    next.parked_until = None;
                }
                Ok(match outcome {
                    ReplyOutcome::Succeeded {
                        hold_id,
                        journal_id,
                    } => self.succeeded(next, replied, hold_id, journal_id, now),
                    ReplyOutcome::Rejected {
                        reason_code,
                        detail,
                    } => self.rejected(next, replied, reason_code, detail, now),
                    ReplyOutcome::Waiting { .. } => unreachable!("handled above"),
                })
            }
            Event::TimedOut => {
                if saga.next_attempt_at.is_some_and(|due| due > now) {
                    return Err(Refusal::NotDue);
                }
                if saga.parked_until.is_some() && self.outstanding(saga).is_empty() {
                    return Ok(self.wait_expired(next, now, jitter));
                }
                Ok(self.timed_out(next, now, jitter))
            }
            Event::AdminRetry { actor, reason } => {
                // Re-asking a parked step unparks it: the participant answers
                // its stored reply, and a WAITING one parks the saga again.
                next.parked_until = None;
                let commands = self.resend(&mut next, 1, now, std::time::Duration::ZERO);
                next.requires_attention = false;
                let detail = format!("{reason} (re-sent {}, attempts reset)", steps_of(&commands));
                let subject = self
                    .awaited(&next)
                    .first()
                    .copied()
                    .unwrap_or(next.position);
                let log = self.log(
                    &next,
                    (subject, next.attempt),
                    LogEvent::AdminRetry,
                    detail,
                    Some(actor),
                );
                Ok(Transition {
                    saga: next,
                    commands,
                    log,
                })
            }
            Event::AdminAbort { actor, reason } => match saga.position {
                Position::Forward(index) if self.definition.before_pivot(index) => {
                    let failure = Failure {
                        reason_code: reason::ABORTED.to_owned(),
                        detail: reason.clone(),
                    };
                    Ok(self.give_up(
                        next,
                        index,
                        failure,
                        LogEvent::AdminAbort,
                        reason,
                        Some(actor),
                        now,
                    ))
                }
                Position::Forward(_) | Position::Complete => Err(Refusal::PastPivot),
                Position::Compensate(_) | Position::Fail { .. } => {
                    Err(Refusal::AlreadyCompensating)
                }
            },
        }
    }

    /// The id of the command the saga awaits at `position`.
    pub fn command_id(&self, saga: &Saga, position: Position) -> String {
        let (step, direction) = self.step_at(position);
        wire::command_id(saga.saga_id, step.name, direction)
    }

    /// The step definition and direction of `position`.
    pub fn step_at(&self, position: Position) -> (&'a StepDef, Direction) {
        step_at(self.definition, position)
    }

    /// Whether the saga's pivot command is out (or behind it): from here on
    /// it only moves forward.
    pub fn past_pivot(&self, saga: &Saga) -> bool {
        match saga.position {
            Position::Forward(index) => !self.definition.before_pivot(index),
            Position::Complete => true,
            Position::Compensate(_) | Position::Fail { .. } => false,
        }
    }

    fn succeeded(
        &self,
        mut saga: Saga,
        position: Position,
        hold_id: Option<String>,
        journal_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Transition {
        let replied = (position, saga.attempt);
        if let Some(hold_id) = hold_id.filter(|id| !id.is_empty()) {
            saga.data.hold_id = Some(hold_id);
        }
        if let Some(journal_id) = journal_id.filter(|id| !id.is_empty()) {
            saga.data.journal_id = Some(journal_id);
        }
        if let Position::Forward(index) = position {
            saga.answered.push(index);
            saga.answered.sort_unstable();
            if let Some(transition) = self.still_awaiting(&mut saga, replied) {
                return transition;
            }
        }
        let next = match replied.0 {
            Position::Forward(index) => {
                let end = self.definition.group(index).end;
                Some(if end < self.definition.steps.len() {
                    Position::Forward(end)
                } else {
                    Position::Complete
                })
            }
            Position::Compensate(index) => Some(self.next_compensation(index.checked_sub(1), true)),
            Position::Complete | Position::Fail { .. } => None,
        };
        let Some(next) = next else {
            let (state, event) = match replied.0 {
                Position::Fail { compensated: true } => {
                    (SagaState::Compensated, LogEvent::Compensated)
                }
                Position::Fail { compensated: false } => (SagaState::Failed, LogEvent::Failed),
                _ => (SagaState::Completed, LogEvent::Completed),
            };
            saga.state = state;
            saga.next_attempt_at = None;
            saga.requires_attention = false;
            let detail = saga
                .failure
                .as_ref()
                .map(|failure| failure.reason_code.clone())
                .unwrap_or_default();
            let log = self.log(&saga, replied, event, detail, None);
            return Transition {
                saga,
                commands: Vec::new(),
                log,
            };
        };
        let commands = self.enter(&mut saga, next, now);
        let detail = format!("next: {}", steps_of(&commands));
        let log = self.log(&saga, replied, LogEvent::Succeeded, detail, None);
        Transition {
            saga,
            commands,
            log,
        }
    }

    fn rejected(
        &self,
        mut saga: Saga,
        position: Position,
        reason_code: String,
        detail: String,
        now: DateTime<Utc>,
    ) -> Transition {
        let replied = (position, saga.attempt);
        let refusable = match replied.0 {
            Position::Forward(index) => {
                self.definition.before_pivot(index) || self.definition.pivot_index() == Some(index)
            }
            _ => false,
        };
        let reason_code = if reason_code.is_empty() {
            reason::REJECTED.to_owned()
        } else {
            reason_code
        };
        if !refusable {
            // A step that cannot be refused was: re-sending gets the same answer,
            // so keep the saga where it is, retrying on its timer, for an operator.
            saga.requires_attention = true;
            let text =
                format!("{reason_code}: {detail} (this step cannot be refused; needs an operator)");
            let log = self.log(&saga, replied, LogEvent::Rejected, text, None);
            return Transition {
                saga,
                commands: Vec::new(),
                log,
            };
        }
        let index = match replied.0 {
            Position::Forward(index) => index,
            _ => 0,
        };
        saga.failure = Some(Failure {
            reason_code: reason_code.clone(),
            detail: detail.clone(),
        });
        // The refused step did nothing to undo; the rest of its group may
        // have (a group has at most one compensable step, so it is either
        // the refused one or among the rest).
        let group = self.definition.group(index);
        let from = if self.definition.steps[index].compensation.is_some() {
            group.start.checked_sub(1)
        } else {
            Some(group.end - 1)
        };
        let next = self.next_compensation(from, false);
        let commands = self.enter(&mut saga, next, now);
        let text = format!("{reason_code}: {detail}; next: {}", steps_of(&commands));
        let log = self.log(&saga, replied, LogEvent::Rejected, text, None);
        Transition {
            saga,
            commands,
            log,
        }
    }

    /// The compensation of the highest step at or below `from` that has one,
    /// or the failure finish.
    pub(super) fn next_compensation(&self, from: Option<usize>, compensated: bool) -> Position {
        let Some(from) = from else {
            return Position::Fail { compensated };
        };
        (0..=from)
            .rev()
            .find(|index| self.definition.steps[*index].compensation.is_some())
            .map(Position::Compensate)
            .unwrap_or(Position::Fail { compensated })
    }

    /// Moves to `position` and sends its commands (a parallel group's, all
    /// of them) for the first time.
    pub(super) fn enter(
        &self,
        saga: &mut Saga,
        position: Position,
        now: DateTime<Utc>,
    ) -> Vec<OutgoingCommand> {
        saga.position = position;
        saga.state = match position {
            Position::Forward(_) | Position::Complete => SagaState::Running,
            Position::Compensate(_) | Position::Fail { .. } => SagaState::Compensating,
        };
        saga.step_started_at = now;
        saga.requires_attention = false;
        saga.parked_until = None;
        saga.answered.clear();
        self.resend(saga, 1, now, std::time::Duration::ZERO)
    }

    /// Sends the commands still [`outstanding`](Self::outstanding) again as
    /// attempt `attempt`, checking back after the longest of their step
    /// timeouts plus `delay`.
    pub(super) fn resend(
        &self,
        saga: &mut Saga,
        attempt: u32,
        now: DateTime<Utc>,
        delay: std::time::Duration,
    ) -> Vec<OutgoingCommand> {
        saga.attempt = attempt;
        let steps: Vec<_> = self
            .outstanding(saga)
            .into_iter()
            .map(|position| self.step_at(position))
            .collect();
        let timeout = steps
            .iter()
            .map(|(step, _)| self.timeout(step))
            .max()
            .unwrap_or(self.config.step_timeout);
        let wait = chrono::Duration::from_std(timeout + delay).unwrap_or(chrono::Duration::MAX);
        saga.next_attempt_at = Some(
            now.checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        steps
            .into_iter()
            .map(|(step, direction)| self.build(saga, step, direction, attempt))
            .collect()
    }

    pub(super) fn build(
        &self,
        saga: &Saga,
        step: &'a StepDef,
        direction: Direction,
        attempt: u32,
    ) -> OutgoingCommand {
        let input = self.input(saga);
        let build = match direction {
            Direction::Forward => step.forward,
            Direction::Compensate => step.compensation.unwrap_or(step.forward),
        };
        OutgoingCommand {
            step: step.name,
            direction,
            participant: step.participant,
            command_id: wire::command_id(saga.saga_id, step.name, direction),
            command: build(&input),
            attempt,
        }
    }

    /// What the saga's command builders see.
    pub(super) fn input<'s>(&self, saga: &'s Saga) -> StepInput<'s> {
        StepInput {
            kind: saga.saga_type,
            saga_id: saga.saga_id,
            transaction_id: saga.transaction_id,
            data: &saga.data,
            failure: saga.failure.as_ref(),
            requested_at: saga.created_at,
            parked_until: saga.parked_until,
        }
    }

    pub(super) fn timeout(&self, step: &StepDef) -> std::time::Duration {
        step.timeout.unwrap_or(self.config.step_timeout)
    }

    /// The log row of a transition about the step at `subject`, sent
    /// `attempt` times, that left the saga as `saga`.
    pub(super) fn log(
        &self,
        saga: &Saga,
        subject: (Position, u32),
        event: LogEvent,
        detail: String,
        actor: Option<String>,
    ) -> LogEntry {
        let (position, attempt) = subject;
        let (step, direction) = self.step_at(position);
        LogEntry {
            step: step.name,
            direction,
            event,
            state: saga.state,
            command_id: wire::command_id(saga.saga_id, step.name, direction),
            attempt,
            detail,
            actor,
        }
    }
}
