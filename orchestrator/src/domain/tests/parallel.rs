//! Steps that run together: a transfer reserves and screens at once, moves
//! on only when both succeeded, and undoes the reserve whichever of the two
//! fails, however their replies interleave.

use super::*;

impl Run {
    /// Answers the command of `step` (forward) with `outcome`.
    fn answer(
        &mut self,
        step: &str,
        outcome: ReplyOutcome,
    ) -> Result<Vec<OutgoingCommand>, Refusal> {
        let command_id = format!("{}:{step}:forward", self.saga.saga_id);
        self.apply(Event::Reply {
            command_id,
            outcome,
        })
    }

    fn approve(&mut self, step: &str) -> Vec<OutgoingCommand> {
        self.answer(
            step,
            ReplyOutcome::Succeeded {
                hold_id: (step == "reserve").then(|| "hold-1".to_owned()),
                journal_id: None,
            },
        )
        .expect("an awaited step's reply applies")
    }

    fn refuse(&mut self, step: &str, reason_code: &str) -> Vec<OutgoingCommand> {
        self.answer(
            step,
            ReplyOutcome::Rejected {
                reason_code: reason_code.to_owned(),
                detail: "refused".to_owned(),
            },
        )
        .expect("an awaited step's reply applies")
    }

    fn logged(&self) -> Vec<(&'static str, &'static str)> {
        self.log
            .iter()
            .map(|entry| (entry.step, entry.event.as_str()))
            .collect()
    }
}

/// The one command sent is the reserve's release, and the saga fails with `reason_code`.
fn released_with(run: &Run, commands: Vec<OutgoingCommand>, reason_code: &str) {
    let release = only(commands);
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert_eq!(
        run.saga.failure.as_ref().map(|f| f.reason_code.as_str()),
        Some(reason_code)
    );
}

fn steps(commands: &[OutgoingCommand]) -> Vec<(&'static str, Direction)> {
    commands
        .iter()
        .map(|command| (command.step, command.direction))
        .collect()
}

#[test]
fn a_transfer_sends_its_reserve_and_its_screen_at_once_under_one_timer() {
    let run = Run::start(SagaType::Transfer);
    assert_eq!(
        run.steps_sent(),
        [
            ("reserve", Direction::Forward),
            ("screen", Direction::Forward)
        ]
    );
    assert_eq!(
        (run.sent[0].participant, run.sent[1].participant),
        ("account", "fraud")
    );
    assert_eq!(run.saga.position, Position::Forward(0));
    assert_eq!(
        run.saga.next_attempt_at,
        Some(epoch() + chrono::Duration::seconds(1))
    );
    assert_eq!(run.logged(), [("reserve", "started")]);
}

#[test]
fn the_post_goes_out_only_once_both_succeeded_in_either_order() {
    for order in [["reserve", "screen"], ["screen", "reserve"]] {
        let mut run = Run::start(SagaType::Transfer);
        assert!(run.approve(order[0]).is_empty(), "{order:?}: one still out");
        assert_eq!(run.saga.position, Position::Forward(0));
        assert_eq!(run.saga.answered.len(), 1);
        let post = only(run.approve(order[1]));
        assert_eq!((post.step, post.direction), ("post", Direction::Forward));
        assert_eq!(run.saga.position, Position::Forward(2));
        assert!(run.saga.answered.is_empty());
        assert_eq!(run.saga.data.hold_id.as_deref(), Some("hold-1"));
        // Each reply is its own logged transition.
        assert_eq!(
            run.logged(),
            [
                ("reserve", "started"),
                (order[0], "succeeded"),
                (order[1], "succeeded")
            ]
        );
        assert_eq!(
            run.log[1].detail,
            format!("awaiting: {}", order[1]),
            "{order:?}"
        );
        run.succeed();
        run.succeed();
        assert_eq!(run.saga.state, SagaState::Completed);
    }
}

#[test]
fn a_duplicate_reply_in_a_group_applies_once() {
    let mut run = Run::start(SagaType::Transfer);
    run.approve("reserve");
    let again = run.answer(
        "reserve",
        ReplyOutcome::Succeeded {
            hold_id: None,
            journal_id: None,
        },
    );
    let Err(Refusal::StaleReply { awaited, .. }) = again else {
        panic!("a second reserve reply is stale: {again:?}");
    };
    assert_eq!(awaited, format!("{}:screen:forward", run.saga.saga_id));
    assert_eq!(run.saga.answered, [0]);
}

#[test]
fn a_decline_releases_the_reserve_whether_or_not_it_has_answered() {
    // Answered: the hold is released.
    let mut held = Run::start(SagaType::Transfer);
    held.approve("reserve");
    let release = only(held.refuse("screen", "FRAUD_DECLINED"));
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    // Not answered yet: released anyway (its outcome is unknown; the
    // account leaves a tombstone that refuses the late reserve).
    let mut racing = Run::start(SagaType::Transfer);
    let release = only(racing.refuse("screen", "FRAUD_DECLINED"));
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    // The late reserve reply is stale now.
    assert!(matches!(
        racing.answer(
            "reserve",
            ReplyOutcome::Succeeded {
                hold_id: Some("late".to_owned()),
                journal_id: None
            }
        ),
        Err(Refusal::StaleReply { .. })
    ));
    racing.succeed();
    let fail = only(racing.sent[racing.sent.len() - 1..].to_vec());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "FRAUD_DECLINED")
    );
    racing.succeed();
    assert_eq!(racing.saga.state, SagaState::Compensated);
}

#[test]
fn a_refused_reserve_undoes_nothing_whether_or_not_the_screen_has_answered() {
    for screened_first in [false, true] {
        let mut run = Run::start(SagaType::Transfer);
        if screened_first {
            run.approve("screen");
        }
        let fail = only(run.refuse("reserve", "INSUFFICIENT_FUNDS"));
        assert_eq!((fail.step, fail.direction), ("fail", Direction::Compensate));
        run.succeed();
        assert_eq!(run.saga.state, SagaState::Failed);
        assert!(
            !run.steps_sent()
                .contains(&("reserve", Direction::Compensate))
        );
    }
}

#[test]
fn a_timeout_re_sends_only_what_has_not_answered() {
    let mut run = Run::start(SagaType::Transfer);
    assert_eq!(
        steps(&run.time_out()),
        [
            ("reserve", Direction::Forward),
            ("screen", Direction::Forward)
        ]
    );
    run.approve("reserve");
    let resent = only(run.time_out());
    assert_eq!((resent.step, resent.attempt), ("screen", 3));
    // Out of attempts with the screen silent: fail closed, release the hold.
    let commands = run.time_out();
    released_with(&run, commands, "SCREENING_UNAVAILABLE");
    assert_eq!(run.logged().last(), Some(&("screen", "timed_out")));
}

#[test]
fn a_silent_reserve_beside_an_approval_times_out_and_is_released() {
    let mut run = Run::start(SagaType::Transfer);
    run.approve("screen");
    run.time_out();
    run.time_out();
    let commands = run.time_out();
    released_with(&run, commands, "TIMED_OUT");
}

#[test]
fn a_screen_parked_beside_a_silent_reserve_keeps_re_sending_the_reserve_until_it_answers() {
    let mut run = Run::start(SagaType::Transfer);
    let deadline = epoch() + chrono::Duration::minutes(10);
    let notice = only(
        run.answer("screen", ReplyOutcome::Waiting { deadline })
            .expect("the screen may wait"),
    );
    assert_eq!(notice.step, "mark_review");
    assert_eq!(run.saga.parked_until, Some(deadline));
    // The reserve's timer still runs, not the review's guard.
    assert!(run.saga.next_attempt_at.is_some_and(|due| due < deadline));
    let resent = only(run.time_out());
    assert_eq!((resent.step, resent.attempt), ("reserve", 2));
    assert_eq!(run.saga.parked_until, Some(deadline), "still parked");
    // Once the reserve answers, only the review is left: its guard is the timer.
    assert!(run.approve("reserve").is_empty());
    let grace = chrono::Duration::from_std(run.config.wait_grace).expect("small");
    assert_eq!(run.saga.next_attempt_at, Some(deadline + grace));
    // The analyst approves: on to the post.
    let post = only(run.approve("screen"));
    assert_eq!(post.step, "post");
    assert_eq!(run.saga.parked_until, None);
}

#[test]
fn a_reserve_answering_while_the_screen_is_parked_does_not_unpark_it() {
    let mut run = Run::start(SagaType::Transfer);
    let deadline = epoch() + chrono::Duration::minutes(10);
    run.answer("screen", ReplyOutcome::Waiting { deadline })
        .expect("the screen may wait");
    run.approve("reserve");
    assert_eq!(run.saga.parked_until, Some(deadline));
    // The guard fires: the hold is released with the review's reason.
    let grace = chrono::Duration::from_std(run.config.wait_grace).expect("small");
    run.now = deadline + grace;
    let commands = run.time_out();
    released_with(&run, commands, "REVIEW_EXPIRED");
    assert_eq!(run.logged().last(), Some(&("screen", "wait_expired")));
}

#[test]
fn an_operator_retry_of_a_group_re_sends_what_is_still_out_and_an_abort_releases_the_hold() {
    let mut run = Run::start(SagaType::Transfer);
    run.approve("reserve");
    let resent = only(
        run.apply(Event::AdminRetry {
            actor: "ops-1".to_owned(),
            reason: "fraud was down".to_owned(),
        })
        .expect("retry applies"),
    );
    assert_eq!((resent.step, resent.attempt), ("screen", 1));
    let commands = run
        .apply(Event::AdminAbort {
            actor: "ops-1".to_owned(),
            reason: "customer called".to_owned(),
        })
        .expect("abort applies");
    released_with(&run, commands, "ABORTED");
}

#[test]
fn a_saga_type_with_no_group_runs_as_before() {
    let run = Run::start(SagaType::Deposit);
    assert_eq!(run.steps_sent(), [("screen", Direction::Forward)]);
    let sequential = Run::sequential(SagaType::Transfer);
    assert_eq!(sequential.steps_sent(), [("reserve", Direction::Forward)]);
}
