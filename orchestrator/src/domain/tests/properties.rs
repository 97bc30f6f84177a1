//! Properties over any history, for saga types as declared (reserve ∥
//! screen) and run one step at a time: the pivot rule holds, a saga never
//! gives up after its pivot, no step starts before every step ahead of it
//! succeeded, what is sent is exactly what is still awaited, and
//! cooperative participants always finish it.

use proptest::prelude::*;

use super::*;

/// What a random history may throw at a saga.
#[derive(Debug, Clone)]
enum Input {
    /// Success from one of the awaited steps, picked by the number.
    Succeed(usize),
    Reject(usize),
    Stale,
    TimeOut,
    Retry,
    Abort,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => (0_usize..4).prop_map(Input::Succeed),
        1 => (0_usize..4).prop_map(Input::Reject),
        1 => Just(Input::Stale),
        4 => Just(Input::TimeOut),
        1 => Just(Input::Retry),
        1 => Just(Input::Abort),
    ]
}

fn event(run: &Run, input: &Input) -> Event {
    match input {
        Input::Succeed(choice) => Event::Reply {
            command_id: run.awaited_at(*choice),
            outcome: ReplyOutcome::Succeeded {
                hold_id: Some("h".to_owned()),
                journal_id: Some("j".to_owned()),
            },
        },
        Input::Reject(choice) => Event::Reply {
            command_id: run.awaited_at(*choice),
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
    let engine = Engine::new(&run.definition, &config);
    let was_past_pivot = engine.past_pivot(&before);
    let pivot_replied = matches!(input, Input::Succeed(_))
        && matches!(before.position, Position::Forward(index) if Some(index) == run.definition.pivot_index());
    let Ok(transition) = engine.apply(&before, event, run.now, jitter) else {
        return Ok(pivot_done);
    };
    let after = &transition.saga;
    let pivot_done = pivot_done || pivot_replied;

    // Only the pivot's own refusal may still compensate once its command is out.
    if pivot_done || (was_past_pivot && !matches!(input, Input::Reject(_))) {
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
        // What goes out is everything still awaited; nothing goes out only
        // when the saga stays where it was (a parallel group still awaits a
        // step, or a step that cannot be refused was).
        let mut sent: Vec<&str> = transition
            .commands
            .iter()
            .map(|command| command.command_id.as_str())
            .collect();
        let outstanding: Vec<String> = engine
            .outstanding(after)
            .into_iter()
            .map(|position| engine.command_id(after, position))
            .collect();
        let mut expected: Vec<&str> = outstanding.iter().map(String::as_str).collect();
        sent.sort_unstable();
        expected.sort_unstable();
        if sent.is_empty() {
            prop_assert_eq!(after.position, before.position);
        } else {
            prop_assert_eq!(sent, expected);
        }
    }
    // No forward step is asked for before every step of the groups ahead of it succeeded.
    let mut succeeded: Vec<&str> = run
        .log
        .iter()
        .chain([&transition.log])
        .filter(|entry| entry.event == LogEvent::Succeeded && entry.direction == Direction::Forward)
        .map(|entry| entry.step)
        .collect();
    succeeded.sort_unstable();
    for command in transition
        .commands
        .iter()
        .filter(|command| command.direction == Direction::Forward)
    {
        if let Some(index) = run.definition.step_index(command.step) {
            let start = run.definition.group(index).start;
            for ahead in &run.definition.steps[..start] {
                prop_assert!(
                    succeeded.binary_search(&ahead.name).is_ok(),
                    "{} sent before {} succeeded",
                    command.step,
                    ahead.name
                );
            }
        }
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
        (kind, parallel) in any_run(),
        inputs in prop::collection::vec(input(), 0..60),
        jitter in 0.0_f64..=1.0,
    ) {
        let mut run = Run::of(kind, parallel);
        let mut pivot_done = false;
        for input in &inputs {
            pivot_done = step(&mut run, input, pivot_done, jitter)?;
        }
        // From wherever it stands, cooperative participants finish it.
        for _ in 0..10 {
            if run.saga.state.is_terminal() {
                break;
            }
            pivot_done = step(&mut run, &Input::Succeed(0), pivot_done, jitter)?;
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
        (kind, parallel) in any_run(),
        answered in 0_usize..3,
        timeouts in 1_usize..40,
    ) {
        let mut run = Run::of(kind, parallel);
        for _ in 0..answered {
            if matches!(run.saga.position, Position::Forward(_)) {
                run.succeed();
            }
        }
        let silent_past_pivot = run.engine().past_pivot(&run.saga);
        let position = run.saga.position;
        // The first step still unanswered speaks for a parallel group.
        let silent = run.engine().outstanding(&run.saga)[0];
        for _ in 0..timeouts {
            run.time_out();
        }
        if silent_past_pivot {
            prop_assert_eq!(run.saga.position, position);
            prop_assert_eq!(run.saga.requires_attention, timeouts >= run.config.max_attempts as usize);
        } else if timeouts >= run.config.max_attempts as usize {
            let (step, _) = run.engine().step_at(silent);
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
