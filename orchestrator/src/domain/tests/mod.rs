//! The state machine, event by event; `properties` checks any sequence of
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

#[test]
fn a_sequential_transfer_starts_by_reserving_and_sends_nothing_else() {
    let run = Run::sequential(SagaType::Transfer);
    assert_eq!(run.steps_sent(), [("reserve", Direction::Forward)]);
    assert_eq!(run.sent[0].participant, "account");
    assert_eq!(
        run.sent[0].command_id,
        format!("{}:reserve:forward", run.saga.saga_id)
    );
    assert_eq!(run.saga.state, SagaState::Running);
    assert_eq!(run.saga.attempt, 1);
    assert_eq!(
        run.saga.next_attempt_at,
        Some(epoch() + chrono::Duration::seconds(1))
    );
    assert_eq!(run.events(), ["started"]);
}

#[test]
fn a_happy_transfer_reserves_screens_posts_and_completes_with_the_journal() {
    let mut run = Run::sequential(SagaType::Transfer);
    let screen = only(run.succeed());
    assert_eq!((screen.step, screen.participant), ("screen", "fraud"));
    assert!(matches!(
        screen.command,
        Command::ScreenTransaction {
            kind: SagaType::Transfer,
            requested_at,
            ..
        } if requested_at == epoch()
    ));
    let post = only(run.succeed());
    assert_eq!(post.step, "post");
    assert!(matches!(
        post.command,
        Command::PostTransfer {
            destination_account_id: Some(_),
            ..
        }
    ));
    assert_eq!(run.saga.data.hold_id.as_deref(), Some("hold-1"));
    let complete = only(run.succeed());
    assert_eq!(
        complete.command,
        Command::CompleteTransaction {
            journal_id: "journal-1".to_owned()
        }
    );
    assert!(run.succeed().is_empty());
    assert_eq!(run.saga.state, SagaState::Completed);
    assert_eq!(run.saga.next_attempt_at, None);
    assert_eq!(
        run.events(),
        [
            "started",
            "succeeded",
            "succeeded",
            "succeeded",
            "completed"
        ]
    );
    let steps: Vec<_> = run.log.iter().map(|entry| entry.step).collect();
    assert_eq!(steps, ["reserve", "reserve", "screen", "post", "complete"]);
}

#[test]
fn a_refused_reserve_fails_the_transaction_without_releasing_anything() {
    let mut run = Run::sequential(SagaType::Transfer);
    let fail = only(run.reject("INSUFFICIENT_FUNDS"));
    assert_eq!(
        fail.command,
        Command::FailTransaction {
            reason_code: "INSUFFICIENT_FUNDS".to_owned(),
            detail: "refused".to_owned()
        }
    );
    assert_eq!(run.saga.state, SagaState::Compensating);
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Failed);
    assert!(
        !run.steps_sent()
            .contains(&("reserve", Direction::Compensate))
    );
    assert_eq!(
        run.saga.failure.as_ref().map(|f| f.reason_code.as_str()),
        Some("INSUFFICIENT_FUNDS")
    );
    assert_eq!(run.events(), ["started", "rejected", "failed"]);
}

#[test]
fn a_refused_post_releases_the_hold_then_fails_the_transaction() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    run.succeed();
    let release = only(run.reject("ACCOUNT_FROZEN"));
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert!(matches!(release.command, Command::ReleaseFunds { .. }));
    let fail = only(run.succeed());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "ACCOUNT_FROZEN")
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Compensated);
    assert_eq!(
        run.events(),
        [
            "started",
            "succeeded",
            "succeeded",
            "rejected",
            "succeeded",
            "compensated"
        ]
    );
}

#[test]
fn a_reply_to_another_command_changes_nothing() {
    let mut run = Run::sequential(SagaType::Transfer);
    let stale = format!("{}:screen:forward", run.saga.saga_id);
    let refused = run.apply(Event::Reply {
        command_id: stale,
        outcome: ReplyOutcome::Succeeded {
            hold_id: None,
            journal_id: None,
        },
    });
    assert!(matches!(refused, Err(Refusal::StaleReply { .. })));
}

#[test]
fn a_duplicate_reply_applies_once() {
    let mut run = Run::sequential(SagaType::Transfer);
    let reserve = run.awaited();
    run.succeed();
    let duplicate = run.apply(Event::Reply {
        command_id: reserve,
        outcome: ReplyOutcome::Succeeded {
            hold_id: None,
            journal_id: None,
        },
    });
    assert!(matches!(duplicate, Err(Refusal::StaleReply { .. })));
    assert_eq!(run.saga.position, Position::Forward(1), "screening");
}

#[test]
fn a_silent_step_is_re_sent_with_the_same_command_id_and_growing_waits() {
    let mut run = Run::sequential(SagaType::Transfer);
    let first = run.sent[0].clone();
    let second = only(run.time_out());
    let waited_once = run.saga.next_attempt_at.expect("timer") - run.now;
    let third = only(run.time_out());
    let waited_twice = run.saga.next_attempt_at.expect("timer") - run.now;
    assert_eq!(first.command_id, second.command_id);
    assert_eq!(second.command_id, third.command_id);
    assert_eq!((second.attempt, third.attempt), (2, 3));
    assert_eq!(waited_once, chrono::Duration::milliseconds(1050));
    assert_eq!(waited_twice, chrono::Duration::milliseconds(1100));
    assert_eq!(run.events(), ["started", "retried", "retried"]);
}

#[test]
fn a_reserve_silent_past_its_attempts_is_released_anyway_and_times_out() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.time_out();
    run.time_out();
    let release = only(run.time_out());
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert_eq!(run.saga.state, SagaState::Compensating);
    let fail = only(run.succeed());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "TIMED_OUT")
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Compensated);
    assert_eq!(
        run.events(),
        [
            "started",
            "retried",
            "retried",
            "timed_out",
            "succeeded",
            "compensated"
        ]
    );
}

#[test]
fn a_silent_post_is_retried_forever_and_flagged_for_an_operator() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    run.succeed();
    for _ in 0..20 {
        let command = only(run.time_out());
        assert_eq!(
            (command.step, command.direction),
            ("post", Direction::Forward)
        );
    }
    assert_eq!(run.saga.state, SagaState::Running);
    assert!(run.saga.requires_attention);
    let capped = run.saga.next_attempt_at.expect("timer") - run.now;
    assert_eq!(capped, chrono::Duration::seconds(2));
    run.succeed();
    assert!(!run.saga.requires_attention, "progress clears the flag");
}

#[test]
fn a_saga_is_not_timed_out_before_its_deadline() {
    let run = Run::sequential(SagaType::Transfer);
    let early = run.engine().apply(&run.saga, Event::TimedOut, epoch(), 0.5);
    assert_eq!(early, Err(Refusal::NotDue));
}

#[test]
fn a_screened_deposit_that_is_refused_fails_and_a_silent_one_never_gives_up() {
    let mut refused = Run::start(SagaType::Deposit);
    assert!(matches!(
        refused.sent[0].command,
        Command::ScreenTransaction {
            kind: SagaType::Deposit,
            source_account_id: None,
            ..
        }
    ));
    let deposit = only(refused.succeed());
    assert!(matches!(deposit.command, Command::PostDeposit { .. }));
    only(refused.reject("ACCOUNT_CLOSED"));
    refused.succeed();
    assert_eq!(refused.saga.state, SagaState::Failed);

    let mut silent = Run::start(SagaType::Deposit);
    silent.succeed();
    for _ in 0..10 {
        only(silent.time_out());
    }
    assert_eq!(silent.saga.state, SagaState::Running);
    assert!(silent.saga.requires_attention);
}

#[test]
fn a_withdrawal_reserves_screens_then_posts_to_the_settlement_account() {
    let mut run = Run::sequential(SagaType::Withdrawal);
    run.succeed();
    let post = only(run.succeed());
    assert!(matches!(
        post.command,
        Command::PostTransfer {
            destination_account_id: None,
            ..
        }
    ));
    run.succeed();
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Completed);
}

#[test]
fn a_refused_compensation_stays_put_and_asks_for_an_operator() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    run.succeed();
    run.reject("ACCOUNT_FROZEN");
    assert!(run.reject("HOLD_NOT_FOUND").is_empty());
    assert_eq!(run.saga.position, Position::Compensate(0));
    assert!(run.saga.requires_attention);
}

#[test]
fn every_position_round_trips_through_its_stored_name() {
    let config = config();
    let engine = Engine::new(SagaType::Transfer.definition(), &config);
    for position in [
        Position::Forward(0),
        Position::Forward(1),
        Position::Forward(2),
        Position::Compensate(0),
        Position::Complete,
        Position::Fail { compensated: true },
        Position::Fail { compensated: false },
    ] {
        let (step, direction) = engine.step_at(position);
        let compensated = matches!(position, Position::Fail { compensated: true });
        assert_eq!(
            position_of(engine.definition, step.name, direction, compensated),
            Some(position)
        );
    }
    assert_eq!(
        position_of(engine.definition, "mark_review", Direction::Forward, false),
        None
    );
}
