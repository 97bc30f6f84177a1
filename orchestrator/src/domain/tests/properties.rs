//! Properties over any history: the pivot rule holds, a saga never gives up
//! after its pivot, and cooperative participants always finish it.

use proptest::prelude::*;

use super::*;

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
            let (step, _) = run.engine().step_at(position);
            let expected = step.exhausted_reason.unwrap_or(reason::TIMED_OUT);
            prop_assert_eq!(run.saga.state, SagaState::Compensating);
            prop_assert_eq!(run.saga.failure.as_ref().map(|f| f.reason_code.as_str()), Some(expected));
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
