//! Operator actions: retry re-sends now, abort compensates before the pivot only.

use super::*;

#[test]
fn an_operator_retry_re_sends_now_and_resets_the_attempts() {
    let mut run = Run::sequential(SagaType::Transfer);
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
    let mut run = Run::sequential(SagaType::Transfer);
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
    let mut run = Run::sequential(SagaType::Transfer);
    run.succeed();
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
