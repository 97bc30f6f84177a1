//! A step that answers "wait": the saga parks, sends nothing, and resumes on
//! the final answer; the guard at deadline plus grace compensates; a screen
//! that never answers fails closed. Time is a manual clock moved by the test.

use corebank_platform::clock::Clock as _;

use super::*;

fn minutes(count: i64) -> chrono::Duration {
    chrono::Duration::minutes(count)
}

/// Requests a transfer and answers its reserve; returns the screen command.
async fn screened_transfer(test: &mut SagaTest) -> Received {
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.succeed(&reserve).await;
    test.expect_where(|c| c.is::<pb::ScreenTransactionCommand>() && c.saga_id == reserve.saga_id)
        .await
}

/// Answers WAITING to `screen` and waits for the saga to park and the
/// transaction service to be told.
async fn park(test: &mut SagaTest, screen: &Received, deadline: DateTime<Utc>) -> pb::Saga {
    test.wait(screen, deadline).await;
    let mark = test.expect::<pb::MarkReviewCommand>().await;
    let review = mark.decode::<pb::MarkReviewCommand>();
    assert_eq!(mark.participant, "transaction");
    assert_eq!(
        (review.step.as_str(), review.deadline),
        ("screen", Some(to_timestamp(deadline)))
    );
    assert_eq!(
        mark.command_id,
        format!("{}:mark_review:forward", screen.saga_id)
    );
    test.wait_for(&screen.saga_id, "parked", |saga| {
        saga.parked_until == Some(to_timestamp(deadline))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_answering_waiting_parks_the_saga_and_its_final_answer_completes_it() {
    let (mut test, clock) = SagaTest::start_manual(fast()).await;
    let screen = screened_transfer(&mut test).await;
    let deadline = clock.now() + minutes(10);
    let parked = park(&mut test, &screen, deadline).await;
    assert_eq!(parked.state, pb::SagaState::Running as i32);
    // The reserve ∥ screen group, with the reserve answered: only the screen is awaited.
    assert_eq!(parked.awaiting_steps, ["screen"]);
    let guard = deadline + chrono::Duration::from_std(fast().wait_grace).expect("small");
    assert_eq!(parked.next_attempt_time, Some(to_timestamp(guard)));
    let listed = test
        .admin()
        .list_sagas(pb::ListSagasRequest {
            parked_only: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.sagas.len(), 1);

    // Far past the step timeout, short of deadline plus grace: an ordinary
    // step would have been re-sent by now; a parked one stays quiet.
    clock.advance(minutes(12));
    let sent = test.drain(Duration::from_millis(700)).await;
    assert!(sent.is_empty(), "nothing is re-sent while parked: {sent:?}");
    let still = test.saga(&screen.saga_id).await;
    assert_eq!(
        (still.attempt, still.awaiting_steps.as_slice()),
        (1, &["screen".to_owned()][..])
    );
    assert!(still.history.iter().all(|entry| entry.event != "retried"));

    test.succeed(&screen).await;
    let post = test.expect::<pb::PostTransferCommand>().await;
    test.succeed(&post).await;
    let complete = test.expect::<pb::CompleteTransactionCommand>().await;
    test.succeed(&complete).await;
    let saga = test
        .wait_for_state(&screen.saga_id, pb::SagaState::Completed)
        .await;
    assert_eq!(saga.parked_until, None);
    assert_eq!(
        history_events(&saga),
        pairs(&[
            ("reserve", "started"),
            ("reserve", "succeeded"),
            ("screen", "parked"),
            ("screen", "succeeded"),
            ("post", "succeeded"),
            ("complete", "completed"),
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_saga_whose_deadline_and_grace_pass_releases_the_hold_and_fails_with_review_expired()
 {
    let config = EngineConfig {
        wait_grace: Duration::from_secs(60),
        ..fast()
    };
    let (mut test, clock) = SagaTest::start_manual(config).await;
    let screen = screened_transfer(&mut test).await;
    let deadline = clock.now() + minutes(10);
    park(&mut test, &screen, deadline).await;

    clock.advance(minutes(11) + chrono::Duration::seconds(1));
    let release = test.expect_release_of(&screen.saga_id).await;
    test.succeed(&release).await;
    let fail = test.expect::<pb::FailTransactionCommand>().await;
    assert_eq!(
        fail.decode::<pb::FailTransactionCommand>().reason_code,
        "REVIEW_EXPIRED"
    );
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&screen.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "REVIEW_EXPIRED");
    assert_eq!(saga.parked_until, None);
    assert!(history_events(&saga).contains(&("screen".to_owned(), "wait_expired".to_owned())));
    test.assert_none_sent(
        Duration::from_millis(300),
        "the screen was never re-sent",
        |command| command.is::<pb::ScreenTransactionCommand>(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_screen_that_never_answers_runs_out_of_attempts_and_fails_with_screening_unavailable() {
    let config = fast();
    let (mut test, clock) = SagaTest::start_manual(config.clone()).await;
    let first = screened_transfer(&mut test).await;
    // Each move of the clock past the timeout plus the largest backoff makes
    // exactly one more attempt due.
    let step = chrono::Duration::from_std(config.step_timeout + config.backoff_cap).expect("small")
        + chrono::Duration::milliseconds(1);
    for attempt in 2..=config.max_attempts {
        clock.advance(step);
        let resent = test.expect::<pb::ScreenTransactionCommand>().await;
        assert_eq!(resent.command_id, first.command_id, "attempt {attempt}");
    }
    clock.advance(step);
    let release = test.expect::<pb::ReleaseFundsCommand>().await;
    test.succeed(&release).await;
    let fail = test.expect::<pb::FailTransactionCommand>().await;
    let failing = fail.decode::<pb::FailTransactionCommand>();
    assert_eq!(failing.reason_code, "SCREENING_UNAVAILABLE");
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&first.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "SCREENING_UNAVAILABLE");
    assert!(history_events(&saga).contains(&("screen".to_owned(), "timed_out".to_owned())));
    let posts = test
        .drain(Duration::from_millis(300))
        .await
        .iter()
        .filter(|command| command.is::<pb::PostTransferCommand>())
        .count();
    assert_eq!(posts, 0, "no money moves unscreened");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fraud_decline_releases_the_hold_and_fails_with_fraud_declined() {
    let (mut test, clock) = SagaTest::start_manual(fast()).await;
    let screen = screened_transfer(&mut test).await;
    park(&mut test, &screen, clock.now() + minutes(10)).await;
    test.reject(&screen, "FRAUD_DECLINED").await;
    let release = test.expect::<pb::ReleaseFundsCommand>().await;
    test.succeed(&release).await;
    let fail = test.expect::<pb::FailTransactionCommand>().await;
    let failing = fail.decode::<pb::FailTransactionCommand>();
    assert_eq!(
        (failing.reason_code.as_str(), failing.detail.as_str()),
        ("FRAUD_DECLINED", "FRAUD_DECLINED (scripted)")
    );
    test.succeed(&fail).await;
    let saga = test
        .wait_for_state(&screen.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "FRAUD_DECLINED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_answer_from_a_step_that_may_not_wait_changes_nothing() {
    let (mut test, clock) = SagaTest::start_manual(fast()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.wait(&reserve, clock.now() + minutes(10)).await;
    // The refusal is silent; the next reply shows the saga still awaited the reserve.
    test.succeed(&reserve).await;
    let saga = test
        .wait_for(&reserve.saga_id, "the reserve answered", |saga| {
            saga.awaiting_steps == ["screen"]
        })
        .await;
    assert_eq!(saga.parked_until, None);
    assert!(
        history_events(&saga)
            .iter()
            .all(|(_, event)| event != "parked")
    );
}
