//! A saga instance and the vocabulary of its transitions: states, positions,
//! events, refusals, outgoing commands and log rows.

use chrono::{DateTime, Utc};
use corebank_proto::wire::Direction;
use uuid::Uuid;

use super::definition::{Command, Failure, SagaData, SagaDefinition, SagaType, StepDef};

/// Where a saga stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaState {
    Running,
    Compensating,
    Completed,
    Compensated,
    /// Refused before anything needed undoing.
    Failed,
}

impl SagaState {
    pub const ALL: [SagaState; 5] = [
        SagaState::Running,
        SagaState::Compensating,
        SagaState::Completed,
        SagaState::Compensated,
        SagaState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }
}

/// The step a saga awaits (or, once terminal, the last one it ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// Running forward step `index`; at a parallel group, its first step
    /// (the saga awaits every step of the group not yet [`Saga::answered`]).
    Forward(usize),
    /// Undoing step `index`.
    Compensate(usize),
    /// The success finish.
    Complete,
    /// The failure finish; `compensated` when some step was undone first.
    Fail { compensated: bool },
}

/// One saga instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub saga_id: Uuid,
    pub saga_type: SagaType,
    pub transaction_id: Uuid,
    pub state: SagaState,
    pub position: Position,
    /// Sends of the current step's command (1 after the first).
    pub attempt: u32,
    /// When the current step times out; none once terminal.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the current step was first sent; for latency.
    pub step_started_at: DateTime<Utc>,
    /// Past the pivot or compensating and still failing: an operator should look.
    pub requires_attention: bool,
    /// Parked: the current step answered WAITING with this deadline for its
    /// final reply. Nothing is re-sent meanwhile; the timer
    /// (`next_attempt_at`) is the guard at deadline plus the engine's grace.
    pub parked_until: Option<DateTime<Utc>>,
    /// At a parallel group: the indices of its steps that have succeeded,
    /// in order. Empty anywhere else.
    pub answered: Vec<usize>,
    pub data: SagaData,
    pub failure: Option<Failure>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A participant's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome {
    Succeeded {
        hold_id: Option<String>,
        journal_id: Option<String>,
    },
    Rejected {
        reason_code: String,
        detail: String,
    },
    /// Accepted, the final answer follows by `deadline` under the same
    /// command id: the saga parks, if the step may wait.
    Waiting {
        deadline: DateTime<Utc>,
    },
}

impl ReplyOutcome {
    /// Succeeded and Rejected end the step; Waiting does not.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Waiting { .. })
    }
}

/// What can happen to a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Reply {
        command_id: String,
        outcome: ReplyOutcome,
    },
    /// The timer found the saga due.
    TimedOut,
    AdminRetry {
        actor: String,
        reason: String,
    },
    AdminAbort {
        actor: String,
        reason: String,
    },
}

/// Why an event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the saga has finished")]
    Terminal,
    #[error("reply to {received}, but {awaited} is awaited")]
    StaleReply { received: String, awaited: String },
    #[error("the current step is not due yet")]
    NotDue,
    #[error("the saga has passed its pivot and can no longer be compensated")]
    PastPivot,
    #[error("the saga is already compensating")]
    AlreadyCompensating,
    /// A participant answered WAITING for a step (or a compensation, or a
    /// finish) that is not declared to wait: the answer is ignored and the
    /// saga keeps its timer, so the step is re-sent and asked again.
    #[error("step {step} answered waiting, but it may not wait")]
    MayNotWait { step: &'static str },
    /// A second WAITING while parked whose deadline is not later than the one
    /// the saga already waits for: a duplicate.
    #[error("the saga is already parked until {parked_until}")]
    AlreadyParked { parked_until: DateTime<Utc> },
}

/// A command to send, with its deterministic id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingCommand {
    pub step: &'static str,
    pub direction: Direction,
    pub participant: &'static str,
    pub command_id: String,
    pub command: Command,
    /// 1 for the first send; re-sends count up.
    pub attempt: u32,
}

/// The kinds of `saga_log` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    Started,
    Succeeded,
    Rejected,
    /// A re-send after a timeout.
    Retried,
    /// A timeout that made the saga give up and compensate.
    TimedOut,
    Completed,
    Compensated,
    Failed,
    AdminRetry,
    AdminAbort,
    /// The awaited step answered WAITING: the saga parks (or, on a later
    /// deadline, waits longer).
    Parked,
    /// A parked step's deadline plus grace passed without a final reply: the
    /// saga gives up and compensates.
    WaitExpired,
}

impl LogEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Rejected => "rejected",
            Self::Retried => "retried",
            Self::TimedOut => "timed_out",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::AdminRetry => "admin_retry",
            Self::AdminAbort => "admin_abort",
            Self::Parked => "parked",
            Self::WaitExpired => "wait_expired",
        }
    }
}

/// One row of the saga's step log: which step the event concerned, what
/// happened, and the state it led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub step: &'static str,
    pub direction: Direction,
    pub event: LogEvent,
    pub state: SagaState,
    pub command_id: String,
    pub attempt: u32,
    pub detail: String,
    pub actor: Option<String>,
}

/// The outcome of one accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub saga: Saga,
    pub commands: Vec<OutgoingCommand>,
    pub log: LogEntry,
}

/// The step definition and direction of `position` in `definition`.
pub fn step_at(definition: &SagaDefinition, position: Position) -> (&StepDef, Direction) {
    match position {
        Position::Forward(index) => (&definition.steps[index], Direction::Forward),
        Position::Compensate(index) => (&definition.steps[index], Direction::Compensate),
        Position::Complete => (&definition.on_success, Direction::Forward),
        Position::Fail { .. } => (&definition.on_failure, Direction::Compensate),
    }
}

/// The positions whose commands `saga` awaits an answer to: at a parallel
/// group, each of its steps that has not succeeded yet (a parked one
/// included); elsewhere, the current one; none once it has finished.
pub fn awaited(definition: &SagaDefinition, saga: &Saga) -> Vec<Position> {
    if saga.state.is_terminal() {
        return Vec::new();
    }
    match saga.position {
        Position::Forward(index) => definition
            .group(index)
            .filter(|at| !saga.answered.contains(at))
            .map(Position::Forward)
            .collect(),
        position => vec![position],
    }
}

/// The position named by a stored step and direction; `compensated` tells
/// the two failure finishes apart.
pub fn position_of(
    definition: &SagaDefinition,
    step: &str,
    direction: Direction,
    compensated: bool,
) -> Option<Position> {
    if step == definition.on_success.name {
        return Some(Position::Complete);
    }
    if step == definition.on_failure.name {
        return Some(Position::Fail { compensated });
    }
    let index = definition.step_index(step)?;
    Some(match direction {
        Direction::Forward => Position::Forward(index),
        Direction::Compensate => Position::Compensate(index),
    })
}
