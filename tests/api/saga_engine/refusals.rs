//! Refusals: a refused step before the pivot and at it, a compensation
//! refused again and again, and a late refusal of an earlier attempt.

use super::*;

/// Transfers in flight around the scripted saga.
const LOAD: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_reserve_fails_the_transaction_and_releases_nothing() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.reject(&reserve, "INSUFFICIENT_FUNDS").await;

    let fail = test.expect::<pb::FailTransactionCommand>().await;
    let failing = fail.decode::<pb::FailTransactionCommand>();
    assert_eq!(failing.reason_code, "INSUFFICIENT_FUNDS");
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Failed)
        .await;
    assert_eq!(saga.failure_reason, "INSUFFICIENT_FUNDS");
    test.assert_none_sent(Duration::from_millis(500), "no release", |command| {
        command.is::<pb::ReleaseFundsCommand>()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_post_releases_the_hold_then_fails_the_transaction() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.succeed(&reserve).await;
    test.approve_screen(&reserve.saga_id).await;
    let post = test.expect::<pb::PostTransferCommand>().await;
    test.reject(&post, "ACCOUNT_FROZEN").await;

    let release = test.expect_release_of(&reserve.saga_id).await;
    test.succeed(&release).await;

    let fail = test.expect::<pb::FailTransactionCommand>().await;
    assert_eq!(
        fail.decode::<pb::FailTransactionCommand>().reason_code,
        "ACCOUNT_FROZEN"
    );
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "ACCOUNT_FROZEN");
    assert_eq!(
        history_events(&saga),
        pairs(&[
            ("reserve", "started"),
            ("reserve", "succeeded"),
            ("screen", "succeeded"),
            ("post", "rejected"),
            ("reserve", "succeeded"),
            ("fail", "compensated"),
        ])
    );
}

/// A compensation refused again and again flags the saga for an operator
/// and is sent again on its timer, never given up; the first acceptance
/// finishes the failure and lifts the flag. Among 200 transfers in flight,
/// each of which ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_refused_again_and_again_flags_the_saga_and_the_first_acceptance_finishes_it() {
    let mut test = SagaTest::start(loaded()).await;
    test.load(LOAD).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.succeed(&reserve).await;
    let screen = test.expect::<pb::ScreenTransactionCommand>().await;
    test.reject(&screen, "FRAUD_DECLINED").await;
    for _ in 0..3 {
        let release = test.expect::<pb::ReleaseFundsCommand>().await;
        test.reject(&release, "HOLD_BUSY").await;
        let saga = test
            .wait_for(&reserve.saga_id, "flagged", |saga| saga.requires_attention)
            .await;
        assert_eq!(saga.state, pb::SagaState::Compensating as i32);
        assert_eq!(saga.current_step, "reserve");
    }
    let release = test.expect::<pb::ReleaseFundsCommand>().await;
    test.succeed(&release).await;
    let fail = test.expect::<pb::FailTransactionCommand>().await;
    test.succeed(&fail).await;
    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Compensated)
        .await;
    assert!(!saga.requires_attention);
    assert_eq!(saga.failure_reason, "FRAUD_DECLINED");
    let refusals = history_events(&saga)
        .iter()
        .filter(|(step, event)| step == "reserve" && event == "rejected")
        .count();
    assert_eq!(refusals, 3, "{:?}", saga.history);
    let completed = test.finish_load().await;
    eprintln!("{completed} of the {LOAD} transfers in flight around it completed");
}

/// The reply to an earlier attempt of a step, arriving after the current
/// attempt's reply moved the saga on, changes nothing and sends nothing, even
/// when it says the opposite (a refusal after the success). Among 200
/// transfers in flight, each of which ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_refusal_of_an_earlier_attempt_after_the_current_success_changes_nothing() {
    let mut test = SagaTest::start(loaded()).await;
    test.load(LOAD).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let first = test.expect::<pb::ReserveFundsCommand>().await;
    let again = test
        .expect_where(|c| c.is::<pb::ReserveFundsCommand>() && c.message_id != first.message_id)
        .await;
    test.succeed(&again).await;
    let screen = test.expect::<pb::ScreenTransactionCommand>().await;
    test.reject(&first, "INSUFFICIENT_FUNDS").await;
    test.succeed(&screen).await;
    let post = test.expect::<pb::PostTransferCommand>().await;
    test.succeed(&post).await;
    let complete = test.expect::<pb::CompleteTransactionCommand>().await;
    test.succeed(&complete).await;

    let saga = test
        .wait_for_state(&first.saga_id, pb::SagaState::Completed)
        .await;
    let reserve_answers: Vec<String> = history_events(&saga)
        .into_iter()
        .filter(|(step, event)| step == "reserve" && (event == "succeeded" || event == "rejected"))
        .map(|(_, event)| event)
        .collect();
    assert_eq!(reserve_answers, ["succeeded"], "{:?}", saga.history);
    test.assert_none_sent(
        Duration::from_millis(700),
        "no release and no failure",
        |command| {
            command.is::<pb::ReleaseFundsCommand>() || command.is::<pb::FailTransactionCommand>()
        },
    )
    .await;
    let completed = test.finish_load().await;
    eprintln!("{completed} of the {LOAD} transfers in flight around it completed");
}
