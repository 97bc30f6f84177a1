//! The state machine, event by event, and properties over any sequence of events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_proto::wire::Direction;
use proptest::prelude::*;
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

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("valid time")
}

/// A saga under test with its own clock.
struct Run {
    config: EngineConfig,
    kind: SagaType,
    saga: Saga,
    now: DateTime<Utc>,
    log: Vec<LogEntry>,
    sent: Vec<OutgoingCommand>,
}

impl Run {
    fn start(kind: SagaType) -> Self {
        let config = config();
        let now = epoch();
        let transition = Engine::new(kind.definition(), &config).start(
            Uuid::now_v7(),
            Uuid::now_v7(),
            data(kind),
            now,
        );
        Self {
            config,
            kind,
            saga: transition.saga,
            now,
            log: vec![transition.log],
            sent: transition.commands,
        }
    }

    fn engine(&self) -> Engine<'_> {
        Engine::new(self.kind.definition(), &self.config)
    }

    fn awaited(&self) -> String {
        self.engine().command_id(&self.saga, self.saga.position)
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
fn a_transfer_announces_itself_then_reserves() {
    let run = Run::start(SagaType::Transfer);
    assert_eq!(
        run.steps_sent(),
        [
            ("mark_processing", Direction::Forward),
            ("reserve", Direction::Forward)
        ]
    );
    assert_eq!(run.sent[0].participant, "transaction");
    assert_eq!(run.sent[1].participant, "account");
    assert_eq!(
        run.sent[1].command_id,
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
fn a_happy_transfer_reserves_posts_and_completes_with_the_journal() {
    let mut run = Run::start(SagaType::Transfer);
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
        ["started", "succeeded", "succeeded", "completed"]
    );
    let steps: Vec<_> = run.log.iter().map(|entry| entry.step).collect();
    assert_eq!(steps, ["reserve", "reserve", "post", "complete"]);
}

#[test]
fn a_refused_reserve_fails_the_transaction_without_releasing_anything() {
    let mut run = Run::start(SagaType::Transfer);
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
    let mut run = Run::start(SagaType::Transfer);
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
            "rejected",
            "succeeded",
            "compensated"
        ]
    );
}

#[test]
fn a_reply_to_another_command_changes_nothing() {
    let mut run = Run::start(SagaType::Transfer);
    let stale = format!("{}:post:forward", run.saga.saga_id);
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
    let mut run = Run::start(SagaType::Transfer);
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
    assert_eq!(run.saga.position, Position::Forward(1));
}

#[test]
fn a_silent_step_is_re_sent_with_the_same_command_id_and_growing_waits() {
    let mut run = Run::start(SagaType::Transfer);
    let first = run.sent[1].clone();
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
    let mut run = Run::start(SagaType::Transfer);
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
    let mut run = Run::start(SagaType::Transfer);
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
    let run = Run::start(SagaType::Transfer);
    let early = run.engine().apply(&run.saga, Event::TimedOut, epoch(), 0.5);
    assert_eq!(early, Err(Refusal::NotDue));
}

#[test]
fn an_operator_retry_re_sends_now_and_resets_the_attempts() {
    let mut run = Run::start(SagaType::Transfer);
    run.time_out();
    let command = only(
        run.apply(Event::AdminRetry {
            actor: "ops-1".to_owned(),
            reason: "account service back".to_owned(),
        })
        .expect("retry applies"),
    );
    assert_eq!(command.step, "reserve");
    assert_eq!(run.saga.attempt, 1);
    let last = run.log.last().expect("logged");
    assert_eq!(
        (last.event, last.actor.as_deref()),
        (LogEvent::AdminRetry, Some("ops-1"))
    );
}

#[test]
fn an_operator_abort_before_the_pivot_compensates_with_reason_aborted() {
    let mut run = Run::start(SagaType::Transfer);
    let release = only(
        run.apply(Event::AdminAbort {
            actor: "ops-1".to_owned(),
            reason: "customer called".to_owned(),
        })
        .expect("abort applies"),
    );
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    let fail = only(run.succeed());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "ABORTED")
    );
    assert_eq!(
        run.apply(Event::AdminAbort {
            actor: "ops-1".to_owned(),
            reason: "again".to_owned()
        }),
        Err(Refusal::AlreadyCompensating)
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Compensated);
}

#[test]
fn an_operator_abort_after_the_pivot_or_at_the_end_is_refused() {
    let mut run = Run::start(SagaType::Transfer);
    run.succeed();
    let abort = || Event::AdminAbort {
        actor: "ops-1".to_owned(),
        reason: "too late".to_owned(),
    };
    assert_eq!(run.apply(abort()), Err(Refusal::PastPivot));
    run.succeed();
    assert_eq!(run.apply(abort()), Err(Refusal::PastPivot));
    run.succeed();
    assert_eq!(run.apply(abort()), Err(Refusal::Terminal));
    assert_eq!(run.apply(Event::TimedOut), Err(Refusal::Terminal));
}

#[test]
fn a_refused_deposit_fails_and_a_silent_one_never_gives_up() {
    let mut refused = Run::start(SagaType::Deposit);
    assert!(matches!(
        refused.sent[1].command,
        Command::PostDeposit { .. }
    ));
    only(refused.reject("ACCOUNT_CLOSED"));
    refused.succeed();
    assert_eq!(refused.saga.state, SagaState::Failed);

    let mut silent = Run::start(SagaType::Deposit);
    for _ in 0..10 {
        only(silent.time_out());
    }
    assert_eq!(silent.saga.state, SagaState::Running);
    assert!(silent.saga.requires_attention);
}

#[test]
fn a_withdrawal_reserves_then_posts_to_the_settlement_account() {
    let mut run = Run::start(SagaType::Withdrawal);
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
    let mut run = Run::start(SagaType::Transfer);
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
        Position::Compensate(0),
        Position::Complete,
        Position::Fail { compensated: true },
        Position::Fail { compensated: false },
    ] {
        let (step, direction) = engine.step_at(position);
        let compensated = matches!(position, Position::Fail { compensated: true });
        assert_eq!(
            engine::position_of(engine.definition, step.name, direction, compensated),
            Some(position)
        );
    }
    assert_eq!(
        engine::position_of(engine.definition, "screen", Direction::Forward, false),
        None
    );
}

/// What a random history may throw at a saga.
#[derive(Debug, Clone)]
enum Input {
    Succeed,
    Reject,
    Stale,
    TimeOut,
    Retry,
    Abort,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => Just(Input::Succeed),
        1 => Just(Input::Reject),
        1 => Just(Input::Stale),
        4 => Just(Input::TimeOut),
        1 => Just(Input::Retry),
        1 => Just(Input::Abort),
    ]
}

fn kind() -> impl Strategy<Value = SagaType> {
    prop_oneof![
        Just(SagaType::Transfer),
        Just(SagaType::Deposit),
        Just(SagaType::Withdrawal)
    ]
}

fn event(run: &Run, input: &Input) -> Event {
    match input {
        Input::Succeed => Event::Reply {
            command_id: run.awaited(),
            outcome: ReplyOutcome::Succeeded {
                hold_id: Some("h".to_owned()),
                journal_id: Some("j".to_owned()),
            },
        },
        Input::Reject => Event::Reply {
            command_id: run.awaited(),
            outcome: ReplyOutcome::Rejected {
                reason_code: "NOPE".to_owned(),
                detail: String::new(),
            },
        },
        Input::Stale => Event::Reply {
            command_id: format!("{}:elsewhere:forward", run.saga.saga_id),
            outcome: ReplyOutcome::Succeeded {
                hold_id: None,
                journal_id: None,
            },
        },
        Input::TimeOut => Event::TimedOut,
        Input::Retry => Event::AdminRetry {
            actor: "ops".to_owned(),
            reason: "retry".to_owned(),
        },
        Input::Abort => Event::AdminAbort {
            actor: "ops".to_owned(),
            reason: "abort".to_owned(),
        },
    }
}

/// Applies one input, checking the invariants of the transition; returns
/// whether the pivot has succeeded so far.
fn step(
    run: &mut Run,
    input: &Input,
    pivot_done: bool,
    jitter: f64,
) -> Result<bool, TestCaseError> {
    let before = run.saga.clone();
    let event = event(run, input);
    if matches!(input, Input::TimeOut)
        && let Some(due) = before.next_attempt_at
    {
        run.now = due;
    }
    run.now += chrono::Duration::milliseconds(1);
    let config = run.config.clone();
    let engine = Engine::new(run.kind.definition(), &config);
    let was_past_pivot = engine.past_pivot(&before);
    let pivot_replied = matches!(input, Input::Succeed)
        && matches!(before.position, Position::Forward(index) if Some(index) == run.kind.definition().pivot_index());
    let Ok(transition) = engine.apply(&before, event, run.now, jitter) else {
        return Ok(pivot_done);
    };
    let after = &transition.saga;
    let pivot_done = pivot_done || pivot_replied;

    // Only the pivot's own refusal may still compensate once its command is out.
    if pivot_done || (was_past_pivot && !matches!(input, Input::Reject)) {
        prop_assert!(
            matches!(after.state, SagaState::Running | SagaState::Completed),
            "compensated after the pivot: {:?}",
            after
        );
        prop_assert!(
            transition
                .commands
                .iter()
                .all(|command| command.direction == Direction::Forward)
        );
    }
    if was_past_pivot && matches!(input, Input::TimeOut) {
        prop_assert_eq!(after.position, before.position, "gave up after the pivot");
    }
    if after.state.is_terminal() {
        prop_assert!(transition.commands.is_empty());
        prop_assert_eq!(after.next_attempt_at, None);
    } else {
        prop_assert!(after.next_attempt_at.is_some());
        // One command, except for a refused step that cannot be refused: it waits for its timer.
        prop_assert!(transition.commands.len() == 1 || transition.log.event == LogEvent::Rejected);
        prop_assert!(transition.commands.len() <= 1);
    }
    match after.state {
        SagaState::Completed => prop_assert!(pivot_done && after.failure.is_none()),
        SagaState::Compensated | SagaState::Failed => {
            prop_assert!(after.failure.is_some() && !pivot_done)
        }
        _ => {}
    }
    prop_assert_eq!(transition.log.state, after.state);
    run.saga = transition.saga;
    run.sent.extend(transition.commands);
    run.log.push(transition.log);
    Ok(pivot_done)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_history_keeps_the_pivot_rule_and_ends_terminal_once_participants_answer(
        kind in kind(),
        inputs in prop::collection::vec(input(), 0..60),
        jitter in 0.0_f64..=1.0,
    ) {
        let mut run = Run::start(kind);
        let mut pivot_done = false;
        for input in &inputs {
            pivot_done = step(&mut run, input, pivot_done, jitter)?;
        }
        // From wherever it stands, cooperative participants finish it.
        for _ in 0..10 {
            if run.saga.state.is_terminal() {
                break;
            }
            pivot_done = step(&mut run, &Input::Succeed, pivot_done, jitter)?;
        }
        prop_assert!(run.saga.state.is_terminal(), "not terminal: {:?}", run.saga);
        let compensations = run.sent.iter().filter(|command| command.direction == Direction::Compensate && command.step != FAIL_STEP).count();
        match run.saga.state {
            SagaState::Failed => prop_assert_eq!(compensations, 0),
            SagaState::Compensated => prop_assert!(compensations > 0),
            _ => {}
        }
    }

    #[test]
    fn silence_before_the_pivot_always_ends_in_compensation_and_never_after_it(
        kind in kind(),
        answered in 0_usize..3,
        timeouts in 1_usize..40,
    ) {
        let mut run = Run::start(kind);
        for _ in 0..answered {
            if matches!(run.saga.position, Position::Forward(_)) {
                run.succeed();
            }
        }
        let silent_past_pivot = run.engine().past_pivot(&run.saga);
        let position = run.saga.position;
        for _ in 0..timeouts {
            run.time_out();
        }
        if silent_past_pivot {
            prop_assert_eq!(run.saga.position, position);
            prop_assert_eq!(run.saga.requires_attention, timeouts >= run.config.max_attempts as usize);
        } else if timeouts >= run.config.max_attempts as usize {
            prop_assert_eq!(run.saga.state, SagaState::Compensating);
            prop_assert_eq!(run.saga.failure.as_ref().map(|f| f.reason_code.as_str()), Some("TIMED_OUT"));
        }
        for _ in 0..10 {
            if run.saga.state.is_terminal() {
                break;
            }
            run.succeed();
        }
        prop_assert!(run.saga.state.is_terminal());
    }
}
