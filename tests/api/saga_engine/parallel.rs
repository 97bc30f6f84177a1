//! Parallel groups on the real store and broker: a transfer's reserve and
//! screen go out together, what has answered survives a restart, a decline
//! that overtakes the reserve releases it, and a saga the sequential release
//! left at its screen step resumes in the group.

use super::*;

/// Reserve and screen go out together; the saga remembers, across a restart
/// of the orchestrator, which of the two has answered, and posts only once
/// both have, in whichever order they came.
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_reserves_and_screens_at_once_and_posts_after_both_in_either_order() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    test.request(pb::TransactionKind::Transfer, "20.00").await;
    let mut sagas = Vec::new();
    for _ in 0..2 {
        let reserve = test.expect::<pb::ReserveFundsCommand>().await;
        let screen = test
            .expect_where(|c| {
                c.is::<pb::ScreenTransactionCommand>() && c.saga_id == reserve.saga_id
            })
            .await;
        let saga = test.saga(&reserve.saga_id).await;
        assert_eq!(saga.awaiting_steps, ["reserve", "screen"]);
        sagas.push((reserve, screen));
    }
    // One answers its screen first, the other its reserve.
    let (first, second) = (&sagas[0], &sagas[1]);
    test.succeed(&first.1).await;
    test.succeed(&second.0).await;
    test.wait_for(&first.0.saga_id, "screen answered", |saga| {
        saga.awaiting_steps == ["reserve"]
    })
    .await;
    test.wait_for(&second.0.saga_id, "reserve answered", |saga| {
        saga.awaiting_steps == ["screen"]
    })
    .await;
    test.assert_none_sent(
        Duration::from_millis(500),
        "no post before both answered",
        |c| c.is::<pb::PostTransferCommand>(),
    )
    .await;

    // What has answered is stored, not held in memory.
    test.stop_orchestrator().await;
    test.start_orchestrator().await;
    test.succeed(&first.0).await;
    test.succeed(&second.1).await;
    for (reserve, _) in &sagas {
        let post = test
            .expect_where(|c| c.is::<pb::PostTransferCommand>() && c.saga_id == reserve.saga_id)
            .await;
        test.succeed(&post).await;
        let complete = test
            .expect_where(|c| {
                c.is::<pb::CompleteTransactionCommand>() && c.saga_id == reserve.saga_id
            })
            .await;
        test.succeed(&complete).await;
        let saga = test
            .wait_for_state(&reserve.saga_id, pb::SagaState::Completed)
            .await;
        assert!(saga.awaiting_steps.is_empty());
        let answered: Vec<_> = history_events(&saga)
            .into_iter()
            .filter(|(step, event)| event == "succeeded" && (step == "reserve" || step == "screen"))
            .collect();
        assert_eq!(answered.len(), 2, "one transition per reply: {answered:?}");
    }
}

/// A decline that overtakes the reserve's reply releases the hold anyway
/// (the reserve's outcome is unknown) and ignores the late reserve reply.
#[tokio::test(flavor = "multi_thread")]
async fn a_decline_before_the_reserve_answers_releases_it_and_ignores_the_late_reply() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    let screen = test.expect::<pb::ScreenTransactionCommand>().await;
    test.reject(&screen, "FRAUD_DECLINED").await;
    let release = test.expect_release_of(&reserve.saga_id).await;
    test.succeed(&reserve).await;
    test.succeed(&release).await;
    let fail = test.expect::<pb::FailTransactionCommand>().await;
    test.succeed(&fail).await;
    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "FRAUD_DECLINED");
    assert!(
        saga.history.iter().all(|entry| !(entry.step == "reserve"
            && entry.direction == "forward"
            && entry.event == "succeeded")),
        "the late reserve reply moved nothing"
    );
    test.assert_none_sent(Duration::from_millis(500), "nothing posts", |c| {
        c.is::<pb::PostTransferCommand>()
    })
    .await;
}

/// A transfer saga the previous release stored at its screen step (its
/// steps then ran one after another, so its reserve had succeeded) resumes
/// at the reserve ∥ screen group with the reserve answered: the screen's
/// approval posts, and the reserve is not asked again.
#[tokio::test(flavor = "multi_thread")]
async fn a_saga_stored_at_the_screen_by_the_sequential_release_resumes_with_its_reserve_answered() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    let screen = test.expect::<pb::ScreenTransactionCommand>().await;
    test.stop_orchestrator().await;
    // As the previous release left it after the reserve's reply.
    let saga_id: Uuid = reserve.saga_id.parse().expect("saga id");
    let updated = sqlx::query(
        "update orchestrator.saga set current_step = 'screen', answered_steps = '{}',
                data = jsonb_set(data, '{hold_id}', '\"hold-1\"')
          where saga_id = $1",
    )
    .bind(saga_id)
    .execute(&test.db.owner)
    .await
    .expect("rewrite the saga row");
    assert_eq!(updated.rows_affected(), 1);
    test.start_orchestrator().await;

    let saga = test.saga(&reserve.saga_id).await;
    assert_eq!(saga.current_step, "reserve", "the group's first step");
    assert_eq!(saga.awaiting_steps, ["screen"]);
    test.succeed(&screen).await;
    let post = test
        .expect_where(|c| c.is::<pb::PostTransferCommand>() && c.saga_id == reserve.saga_id)
        .await;
    assert_eq!(
        post.decode::<pb::PostTransferCommand>().reserve_command_id,
        reserve.command_id
    );
    assert!(
        test.buffered
            .iter()
            .all(|c| !(c.is::<pb::ReserveFundsCommand>() && c.saga_id == reserve.saga_id)),
        "the reserve is not asked again"
    );
}
