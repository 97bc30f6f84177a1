//! The state machine: this module is the harness ([`Run`]); `steps` goes
//! event by event one step at a time; `properties` checks any sequence of
//! events; `parking` and `parking_properties` cover steps that answer
//! "wait"; `operators` covers retry and abort; `parallel` covers steps that
//! run together. Most cases run corebank's saga types as declared; those
//! about one step at a time run them with every step in sequence
//! ([`Run::sequential`]).

mod operators;
mod parallel;
mod parking;
mod parking_properties;
mod properties;
mod steps;

use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_proto::wire::Direction;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;

fn config() -> EngineConfig {
    EngineConfig {
        step_timeout: Duration::from_secs(1),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(2),
        max_attempts: 3,
        ..EngineConfig::default()
    }
}

fn data(kind: SagaType) -> SagaData {
    SagaData {
        source_account_id: (kind != SagaType::Deposit).then(Uuid::now_v7),
        destination_account_id: (kind != SagaType::Withdrawal).then(Uuid::now_v7),
        amount: Decimal::new(2500, 2),
        currency: "EUR".to_owned(),
        hold_id: None,
        journal_id: None,
    }
}

/// Any saga type, as declared or run one step at a time.
fn any_run() -> impl proptest::strategy::Strategy<Value = (SagaType, bool)> {
    use proptest::prelude::*;
    let kind = prop_oneof![
        Just(SagaType::Transfer),
        Just(SagaType::Deposit),
        Just(SagaType::Withdrawal)
    ];
    (kind, any::<bool>())
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("valid time")
}

/// A saga under test with its own clock.
struct Run {
    config: EngineConfig,
    definition: SagaDefinition,
    saga: Saga,
    now: DateTime<Utc>,
    log: Vec<LogEntry>,
    sent: Vec<OutgoingCommand>,
}

/// `kind`'s definition with no step running alongside another.
fn sequential(kind: SagaType) -> SagaDefinition {
    let declared = kind.definition().clone();
    let steps = declared
        .steps
        .into_iter()
        .map(|mut step| {
            step.alongside_previous = false;
            step
        })
        .collect();
    SagaDefinition::new(kind, steps, declared.on_success, declared.on_failure)
}

impl Run {
    /// A saga of `kind` as corebank declares it.
    fn start(kind: SagaType) -> Self {
        Self::with(kind.definition().clone())
    }

    /// A saga of `kind` run one step at a time.
    fn sequential(kind: SagaType) -> Self {
        Self::with(sequential(kind))
    }

    /// As declared (`parallel`) or one step at a time.
    fn of(kind: SagaType, parallel: bool) -> Self {
        if parallel {
            Self::start(kind)
        } else {
            Self::sequential(kind)
        }
    }

    fn with(definition: SagaDefinition) -> Self {
        let config = config();
        let now = epoch();
        let transition = Engine::new(&definition, &config).start(
            Uuid::now_v7(),
            Uuid::now_v7(),
            data(definition.saga_type),
            now,
        );
        Self {
            config,
            definition,
            saga: transition.saga,
            now,
            log: vec![transition.log],
            sent: transition.commands,
        }
    }

    fn engine(&self) -> Engine<'_> {
        Engine::new(&self.definition, &self.config)
    }

    /// The id of the first command the saga awaits.
    fn awaited(&self) -> String {
        self.awaited_at(0)
    }

    /// The id of one of the commands the saga awaits, picked by `choice`
    /// (once finished, of its last step).
    fn awaited_at(&self, choice: usize) -> String {
        let engine = self.engine();
        let awaited = engine.awaited(&self.saga);
        let position = awaited
            .get(choice % awaited.len().max(1))
            .copied()
            .unwrap_or(self.saga.position);
        engine.command_id(&self.saga, position)
    }

    fn apply(&mut self, event: Event) -> Result<Vec<OutgoingCommand>, Refusal> {
        self.now += chrono::Duration::milliseconds(1);
        let transition = self.engine().apply(&self.saga, event, self.now, 0.5)?;
        self.saga = transition.saga;
        self.log.push(transition.log);
        self.sent.extend(transition.commands.clone());
        Ok(transition.commands)
    }

    fn succeed(&mut self) -> Vec<OutgoingCommand> {
        let command_id = self.awaited();
        self.apply(Event::Reply {
            command_id,
            outcome: ReplyOutcome::Succeeded {
                hold_id: Some("hold-1".to_owned()),
                journal_id: Some("journal-1".to_owned()),
            },
        })
        .expect("a reply to the awaited command applies")
    }

    fn reject(&mut self, reason_code: &str) -> Vec<OutgoingCommand> {
        let command_id = self.awaited();
        self.apply(Event::Reply {
            command_id,
            outcome: ReplyOutcome::Rejected {
                reason_code: reason_code.to_owned(),
                detail: "refused".to_owned(),
            },
        })
        .expect("a reply to the awaited command applies")
    }

    fn time_out(&mut self) -> Vec<OutgoingCommand> {
        self.now = self
            .saga
            .next_attempt_at
            .expect("a running saga has a timer");
        let transition = self
            .engine()
            .apply(&self.saga, Event::TimedOut, self.now, 0.5)
            .expect("due");
        self.saga = transition.saga;
        self.log.push(transition.log);
        self.sent.extend(transition.commands.clone());
        transition.commands
    }

    fn events(&self) -> Vec<&'static str> {
        self.log.iter().map(|entry| entry.event.as_str()).collect()
    }

    fn steps_sent(&self) -> Vec<(&'static str, Direction)> {
        self.sent
            .iter()
            .map(|command| (command.step, command.direction))
            .collect()
    }
}

fn only(commands: Vec<OutgoingCommand>) -> OutgoingCommand {
    assert_eq!(commands.len(), 1, "expected one command, got {commands:?}");
    commands.into_iter().next().expect("one command")
}
