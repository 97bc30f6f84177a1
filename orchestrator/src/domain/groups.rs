//! Parallel groups: steps declared to run alongside the step before them
//! ([`StepDef::alongside_previous`](super::StepDef)) send their commands
//! together. The saga stands at the group's first step and keeps which of
//! its steps have succeeded ([`Saga::answered`]); each reply is its own
//! transition, a timeout re-sends only what has not answered, and the saga
//! moves on once all have. What the engine awaits, re-sends and parks on is
//! answered here for every position, a step on its own being a group of one.

use super::engine::Engine;
use super::saga::{LogEvent, OutgoingCommand, Position, Saga, Transition, awaited};

impl Engine<'_> {
    /// The positions whose commands the saga awaits an answer to: at a
    /// parallel group, each of its steps that has not succeeded yet (a
    /// parked one included); elsewhere, the current one.
    pub fn awaited(&self, saga: &Saga) -> Vec<Position> {
        awaited(self.definition, saga)
    }

    /// The awaited positions whose command the timer re-sends: all but a
    /// parked step, which the participant answers in its own time.
    pub(super) fn outstanding(&self, saga: &Saga) -> Vec<Position> {
        let parked = self.parked_step(saga);
        self.awaited(saga)
            .into_iter()
            .filter(|&position| Some(position) != parked)
            .collect()
    }

    /// The step a parked saga waits for: its group's one step that may wait.
    pub(super) fn parked_step(&self, saga: &Saga) -> Option<Position> {
        saga.parked_until?;
        let Position::Forward(index) = saga.position else {
            return None;
        };
        self.definition
            .group(index)
            .find(|&at| self.definition.steps[at].may_wait)
            .map(Position::Forward)
    }

    /// After a step of a parallel group succeeded: the transition that
    /// records it while others of the group are still awaited, or `None`
    /// when the group is done. Once only a parked step is left, the timer
    /// becomes its guard.
    pub(super) fn still_awaiting(
        &self,
        saga: &mut Saga,
        replied: (Position, u32),
    ) -> Option<Transition> {
        let awaited = self.awaited(saga);
        if awaited.is_empty() {
            return None;
        }
        self.arm_guard(saga);
        let names: Vec<&str> = awaited
            .iter()
            .map(|&position| self.step_at(position).0.name)
            .collect();
        let detail = format!("awaiting: {}", names.join(", "));
        let log = self.log(saga, replied, LogEvent::Succeeded, detail, None);
        Some(Transition {
            saga: saga.clone(),
            commands: Vec::new(),
            log,
        })
    }
}

/// The steps and directions of `commands`, for a log row's detail:
/// `reserve forward, screen forward`.
pub(super) fn steps_of(commands: &[OutgoingCommand]) -> String {
    commands
        .iter()
        .map(|command| format!("{} {}", command.step, command.direction.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}
