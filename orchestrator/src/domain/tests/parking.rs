//! Steps that answer "wait": parking, resuming, the guard, and refusals.

use super::*;

fn minutes(count: i64) -> chrono::Duration {
    chrono::Duration::minutes(count)
}

impl Run {
    fn wait_until(&mut self, deadline: DateTime<Utc>) -> Result<Vec<OutgoingCommand>, Refusal> {
        let command_id = self.awaited();
        self.apply(Event::Reply {
            command_id,
            outcome: ReplyOutcome::Waiting { deadline },
        })
    }

    /// A transfer whose reserve succeeded and whose screen answered WAITING
    /// until ten minutes after the start.
    fn parked_transfer() -> (Run, DateTime<Utc>) {
        let mut run = Run::sequential(SagaType::Transfer);
        run.succeed();
        let deadline = epoch() + minutes(10);
        run.wait_until(deadline).expect("the screen may wait");
        (run, deadline)
    }

    fn grace(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.wait_grace).expect("small")
    }
}

fn failure_reason(run: &Run) -> Option<&str> {
    run.saga.failure.as_ref().map(|f| f.reason_code.as_str())
}

#[test]
fn a_screen_that_answers_waiting_parks_the_saga_and_announces_the_review() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    let deadline = epoch() + minutes(10);
    let notice = only(run.wait_until(deadline).expect("the screen may wait"));
    assert_eq!(
        (notice.step, notice.participant, notice.direction),
        ("mark_review", "transaction", Direction::Forward)
    );
    assert_eq!(
        notice.command,
        Command::MarkReview {
            step: "screen",
            deadline
        }
    );
    assert_eq!(
        notice.command_id,
        format!("{}:mark_review:forward", run.saga.saga_id)
    );
    assert_eq!(run.saga.parked_until, Some(deadline));
    assert_eq!(run.saga.next_attempt_at, Some(deadline + minutes(5)));
    assert_eq!(
        (run.saga.state, run.saga.position),
        (SagaState::Running, Position::Forward(1))
    );
    let last = run.log.last().expect("logged");
    assert_eq!((last.step, last.event), ("screen", LogEvent::Parked));
}

#[test]
fn a_parked_saga_sends_nothing_until_its_deadline_plus_grace() {
    let (run, deadline) = Run::parked_transfer();
    let engine = run.engine();
    let just_before = deadline + run.grace() - chrono::Duration::milliseconds(1);
    assert_eq!(
        engine.apply(&run.saga, Event::TimedOut, deadline, 0.5),
        Err(Refusal::NotDue)
    );
    assert_eq!(
        engine.apply(&run.saga, Event::TimedOut, just_before, 0.5),
        Err(Refusal::NotDue)
    );
}

#[test]
fn an_approval_after_a_review_resumes_the_parked_saga_to_the_post() {
    let (mut run, _) = Run::parked_transfer();
    let post = only(run.succeed());
    assert_eq!((post.step, post.attempt), ("post", 1));
    assert_eq!(run.saga.parked_until, None);
    run.succeed();
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Completed);
    assert_eq!(
        run.events(),
        [
            "started",
            "succeeded",
            "parked",
            "succeeded",
            "succeeded",
            "completed"
        ]
    );
}

#[test]
fn a_decline_after_a_review_releases_the_hold_and_fails_with_fraud_declined() {
    let (mut run, _) = Run::parked_transfer();
    let release = only(run.reject("FRAUD_DECLINED"));
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert_eq!(run.saga.parked_until, None);
    let fail = only(run.succeed());
    assert_eq!(
        fail.command,
        Command::FailTransaction {
            reason_code: "FRAUD_DECLINED".to_owned(),
            detail: "refused".to_owned()
        }
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Compensated);
}

#[test]
fn a_parked_saga_whose_guard_fires_releases_the_hold_and_fails_with_review_expired() {
    let (mut run, deadline) = Run::parked_transfer();
    let release = only(run.time_out());
    assert_eq!(run.now, deadline + run.grace());
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert_eq!(run.saga.parked_until, None);
    assert_eq!(failure_reason(&run), Some("REVIEW_EXPIRED"));
    let fail = only(run.succeed());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "REVIEW_EXPIRED")
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Compensated);
    assert!(run.events().contains(&"wait_expired"));
}

#[test]
fn a_parked_deposit_that_expires_fails_with_nothing_to_undo() {
    let mut run = Run::start(SagaType::Deposit);
    run.wait_until(epoch() + minutes(1)).expect("may wait");
    let fail = only(run.time_out());
    assert!(
        matches!(fail.command, Command::FailTransaction { ref reason_code, .. } if reason_code == "REVIEW_EXPIRED")
    );
    run.succeed();
    assert_eq!(run.saga.state, SagaState::Failed);
}

#[test]
fn a_second_waiting_extends_the_wait_only_to_a_later_deadline() {
    let (mut run, deadline) = Run::parked_transfer();
    let before = run.saga.clone();
    assert_eq!(
        run.wait_until(deadline),
        Err(Refusal::AlreadyParked {
            parked_until: deadline
        })
    );
    assert_eq!(
        run.wait_until(deadline - minutes(1)),
        Err(Refusal::AlreadyParked {
            parked_until: deadline
        })
    );
    assert_eq!(run.saga, before, "a duplicate changes nothing");
    let later = deadline + minutes(30);
    let sent = run.wait_until(later).expect("a later deadline extends");
    assert!(sent.is_empty(), "extending announces nothing: {sent:?}");
    assert_eq!(run.saga.parked_until, Some(later));
    assert_eq!(run.saga.next_attempt_at, Some(later + minutes(5)));
}

#[test]
fn a_waiting_answer_from_a_step_that_may_not_wait_is_refused_and_the_timer_kept() {
    let mut run = Run::sequential(SagaType::Transfer);
    let before = run.saga.clone();
    assert_eq!(
        run.wait_until(epoch() + minutes(10)),
        Err(Refusal::MayNotWait { step: "reserve" })
    );
    assert_eq!(run.saga, before);
    let resent = only(run.time_out());
    assert_eq!((resent.step, resent.attempt), ("reserve", 2));
}

#[test]
fn a_waiting_answer_from_a_compensation_or_a_finish_is_refused() {
    let (mut run, _) = Run::parked_transfer();
    run.reject("FRAUD_DECLINED");
    assert_eq!(
        run.wait_until(epoch() + minutes(10)),
        Err(Refusal::MayNotWait { step: "reserve" })
    );
    run.succeed();
    assert_eq!(
        run.wait_until(epoch() + minutes(10)),
        Err(Refusal::MayNotWait { step: "fail" })
    );
}

#[test]
fn an_operator_retry_of_a_parked_saga_re_sends_the_screen_and_unparks_it() {
    let (mut run, deadline) = Run::parked_transfer();
    let screen = only(
        run.apply(Event::AdminRetry {
            actor: "ops-1".to_owned(),
            reason: "ask fraud again".to_owned(),
        })
        .expect("retry applies"),
    );
    assert_eq!((screen.step, screen.attempt), ("screen", 1));
    assert_eq!(run.saga.parked_until, None);
    // The participant answers its stored reply: still waiting, so it parks again.
    only(run.wait_until(deadline).expect("parks again"));
    assert_eq!(run.saga.parked_until, Some(deadline));
}

#[test]
fn an_operator_abort_of_a_parked_saga_releases_the_hold_with_reason_aborted() {
    let (mut run, _) = Run::parked_transfer();
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
    assert_eq!(run.saga.parked_until, None);
    assert_eq!(failure_reason(&run), Some("ABORTED"));
}

#[test]
fn a_screen_that_never_answers_fails_closed_with_screening_unavailable() {
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
    run.time_out();
    run.time_out();
    let release = only(run.time_out());
    assert_eq!(
        (release.step, release.direction),
        ("reserve", Direction::Compensate)
    );
    assert_eq!(failure_reason(&run), Some("SCREENING_UNAVAILABLE"));
    let last = run.log.last().expect("logged");
    assert_eq!((last.step, last.event), ("screen", LogEvent::TimedOut));
}
