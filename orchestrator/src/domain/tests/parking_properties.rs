//! Properties of parking over any history: a parked saga stays quiet until a
//! final reply, its guard or an operator moves it; the guard always
//! compensates with the step's reason; and a final reply after a park lands
//! exactly where it would have without one.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Input {
    /// Success from one of the awaited steps, picked by the number.
    Succeed(usize),
    Reject(usize),
    /// WAITING from one of the awaited steps, deadline this many minutes
    /// from now (negative: already past).
    Wait(usize, i64),
    Stale,
    /// A timer firing before the saga is due.
    EarlyTimeOut,
    TimeOut,
    Retry,
    Abort,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => (0_usize..4).prop_map(Input::Succeed),
        1 => (0_usize..4).prop_map(Input::Reject),
        3 => (0_usize..4, -5_i64..60).prop_map(|(choice, minutes)| Input::Wait(choice, minutes)),
        1 => Just(Input::Stale),
        2 => Just(Input::EarlyTimeOut),
        2 => Just(Input::TimeOut),
        1 => Just(Input::Retry),
        1 => Just(Input::Abort),
    ]
}

fn reply(run: &Run, outcome: ReplyOutcome) -> Event {
    reply_at(run, 0, outcome)
}

fn reply_at(run: &Run, choice: usize, outcome: ReplyOutcome) -> Event {
    Event::Reply {
        command_id: run.awaited_at(choice),
        outcome,
    }
}

fn succeeded() -> ReplyOutcome {
    ReplyOutcome::Succeeded {
        hold_id: Some("h".to_owned()),
        journal_id: Some("j".to_owned()),
    }
}

fn rejected() -> ReplyOutcome {
    ReplyOutcome::Rejected {
        reason_code: "FRAUD_DECLINED".to_owned(),
        detail: "rule fired".to_owned(),
    }
}

/// Applies one input at the run's clock; returns the transition, if accepted.
fn feed(run: &mut Run, input: &Input) -> Option<Transition> {
    run.now += chrono::Duration::milliseconds(1);
    let event = match input {
        Input::Succeed(choice) => reply_at(run, *choice, succeeded()),
        Input::Reject(choice) => reply_at(run, *choice, rejected()),
        Input::Wait(choice, minutes) => reply_at(
            run,
            *choice,
            ReplyOutcome::Waiting {
                deadline: run.now + chrono::Duration::minutes(*minutes),
            },
        ),
        Input::Stale => Event::Reply {
            command_id: format!("{}:elsewhere:forward", run.saga.saga_id),
            outcome: succeeded(),
        },
        Input::EarlyTimeOut => Event::TimedOut,
        Input::TimeOut => {
            if let Some(due) = run.saga.next_attempt_at {
                run.now = run.now.max(due);
            }
            Event::TimedOut
        }
        Input::Retry => Event::AdminRetry {
            actor: "ops".to_owned(),
            reason: "retry".to_owned(),
        },
        Input::Abort => Event::AdminAbort {
            actor: "ops".to_owned(),
            reason: "abort".to_owned(),
        },
    };
    let transition = run.engine().apply(&run.saga, event, run.now, 0.5).ok()?;
    run.saga = transition.saga.clone();
    run.log.push(transition.log.clone());
    run.sent.extend(transition.commands.clone());
    Some(transition)
}

/// Answers until the saga awaits its screen step alone.
fn to_screen(kind: SagaType, parallel: bool) -> Run {
    let mut run = Run::of(kind, parallel);
    let screen = Position::Forward(
        kind.definition()
            .step_index(SCREEN_STEP)
            .expect("every saga type screens"),
    );
    loop {
        let awaited = run.engine().awaited(&run.saga);
        let Some(other) = awaited.iter().position(|&position| position != screen) else {
            break;
        };
        let command_id = run.awaited_at(other);
        run.apply(Event::Reply {
            command_id,
            outcome: succeeded(),
        })
        .expect("a reply to an awaited command applies");
    }
    run
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_parked_saga_never_sends_on_an_event_that_is_not_final_and_always_finishes(
        (kind, parallel) in any_run(),
        inputs in prop::collection::vec(input(), 0..60),
    ) {
        let mut run = Run::of(kind, parallel);
        let grace = chrono::Duration::from_std(run.config.wait_grace).expect("small");
        for input in &inputs {
            let before = run.saga.clone();
            // `feed` moves the clock by 1 ms before an early timer fires.
            let due = before
                .next_attempt_at
                .is_some_and(|due| due <= run.now + chrono::Duration::milliseconds(1));
            let quiet = matches!(input, Input::Wait(..) | Input::Stale)
                || (matches!(input, Input::EarlyTimeOut) && !due);
            let Some(transition) = feed(&mut run, input) else { continue };
            if before.parked_until.is_some() && quiet {
                prop_assert!(transition.commands.is_empty(), "sent while parked: {:?}", transition.commands);
                prop_assert!(run.saga.parked_until >= before.parked_until);
                prop_assert_eq!(run.saga.position, before.position);
            }
            if let Some(parked_until) = run.saga.parked_until {
                let engine = run.engine();
                let parked = engine.parked_step(&run.saga);
                prop_assert!(parked.is_some_and(|at| engine.step_at(at).0.may_wait), "parked at {:?}", run.saga.position);
                prop_assert_eq!(run.saga.state, SagaState::Running);
                // The guard is the timer once nothing else is awaited; until
                // then the rest of the group keeps its step timer.
                if engine.outstanding(&run.saga).is_empty() {
                    prop_assert_eq!(run.saga.next_attempt_at, Some(parked_until + grace));
                } else {
                    prop_assert!(run.saga.next_attempt_at.is_some_and(|due| due < parked_until + grace || parked_until + grace <= run.now));
                }
            }
        }
        // Participants that eventually answer finally finish any saga, parked or not.
        for _ in 0..10 {
            if run.saga.state.is_terminal() {
                break;
            }
            feed(&mut run, &Input::Succeed(0));
        }
        prop_assert!(run.saga.state.is_terminal(), "not terminal: {:?}", run.saga);
        prop_assert_eq!(run.saga.parked_until, None);
    }

    #[test]
    fn a_parked_saga_past_its_deadline_plus_grace_always_compensates_with_the_steps_reason(
        (kind, parallel) in any_run(),
        deadline_minutes in -10_i64..600,
        grace_seconds in 0_u64..3600,
        late_ms in 0_i64..100_000_000,
    ) {
        let mut run = to_screen(kind, parallel);
        run.config.wait_grace = Duration::from_secs(grace_seconds);
        let deadline = run.now + chrono::Duration::minutes(deadline_minutes);
        run.wait_until_deadline(deadline);
        let guard = deadline + chrono::Duration::seconds(grace_seconds as i64);
        let early = run.engine().apply(&run.saga, Event::TimedOut, guard - chrono::Duration::milliseconds(1), 0.5);
        prop_assert_eq!(early, Err(Refusal::NotDue));
        let at = guard + chrono::Duration::milliseconds(late_ms);
        let transition = run.engine().apply(&run.saga, Event::TimedOut, at, 0.5).expect("due");
        let (step, _) = run.engine().step_at(run.engine().parked_step(&run.saga).expect("parked"));
        prop_assert_eq!(transition.log.event, LogEvent::WaitExpired);
        prop_assert_eq!(transition.saga.state, SagaState::Compensating);
        prop_assert_eq!(transition.saga.parked_until, None);
        prop_assert_eq!(
            transition.saga.failure.as_ref().map(|f| f.reason_code.as_str()),
            Some(step.wait_expired_reason)
        );
        prop_assert!(transition.commands.iter().all(|c| c.direction == Direction::Compensate));
    }

    #[test]
    fn a_final_reply_after_a_park_lands_where_an_immediate_reply_would(
        (kind, parallel) in any_run(),
        approve in any::<bool>(),
        deadline_minutes in -10_i64..600,
        extended_minutes in prop::option::of(0_i64..600),
    ) {
        let base = to_screen(kind, parallel);
        let engine = base.engine();
        let waiting = |saga: &Saga, deadline| {
            engine
                .apply(saga, reply(&base, ReplyOutcome::Waiting { deadline }), base.now, 0.5)
                .map(|transition| transition.saga)
        };
        let deadline = base.now + chrono::Duration::minutes(deadline_minutes);
        let mut parked = waiting(&base.saga, deadline).expect("the screen may wait");
        if let Some(more) = extended_minutes
            && let Ok(extended) = waiting(&parked, deadline + chrono::Duration::minutes(more))
        {
            parked = extended;
        }
        let outcome = if approve { succeeded() } else { rejected() };
        let now = base.now + chrono::Duration::seconds(1);
        let direct = engine
            .apply(&base.saga, reply(&base, outcome.clone()), now, 0.5)
            .expect("applies");
        let resumed = engine
            .apply(&parked, reply(&base, outcome), now, 0.5)
            .expect("applies");
        prop_assert_eq!(resumed.saga.parked_until, None);
        prop_assert_eq!(resumed.saga.position, direct.saga.position);
        prop_assert_eq!(resumed.saga.state, direct.saga.state);
        prop_assert_eq!(&resumed.saga.failure, &direct.saga.failure);
        prop_assert_eq!(&resumed.saga.data, &direct.saga.data);
        prop_assert_eq!(resumed.saga.next_attempt_at, direct.saga.next_attempt_at);
        prop_assert_eq!(resumed.log.event, direct.log.event);
        prop_assert_eq!(&resumed.commands, &direct.commands);
    }
}

impl Run {
    /// Parks the saga at its awaited step until `deadline`.
    fn wait_until_deadline(&mut self, deadline: DateTime<Utc>) {
        let transition = self
            .engine()
            .apply(
                &self.saga,
                reply(self, ReplyOutcome::Waiting { deadline }),
                self.now,
                0.5,
            )
            .expect("the screen may wait");
        self.saga = transition.saga;
    }
}
