//! Operators' view: list, inspect, retry and abort; the step log is append-only.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn operators_list_inspect_retry_and_abort_sagas_but_not_past_the_pivot() {
    let mut test = SagaTest::start(patient()).await;
    let mut admin = test.admin();
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let early = test.next_awaited().await;
    test.request(pb::TransactionKind::Withdrawal, "20.00").await;
    let late = test
        .expect_where(|c| c.is::<pb::ReserveFundsCommand>() && c.saga_id != early.saga_id)
        .await;
    test.succeed(&late).await;
    test.approve_screen(&late.saga_id).await;
    test.expect_where(|c| c.is::<pb::PostTransferCommand>() && c.saga_id == late.saga_id)
        .await;

    let running = admin
        .list_sagas(pb::ListSagasRequest {
            state: pb::SagaState::Running as i32,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(running.sagas.len(), 1);
    assert!(!running.next_page_token.is_empty());
    let withdrawals = admin
        .list_sagas(pb::ListSagasRequest {
            saga_type: "withdrawal".to_owned(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        withdrawals
            .sagas
            .iter()
            .map(|s| s.saga_id.as_str())
            .collect::<Vec<_>>(),
        [late.saga_id.as_str()]
    );
    let mut an_hour_old = pb::ListSagasRequest {
        min_age: Some(Default::default()),
        ..Default::default()
    };
    if let Some(age) = an_hour_old.min_age.as_mut() {
        age.seconds = 3600;
    }
    let old = admin
        .list_sagas(an_hour_old)
        .await
        .expect("list")
        .into_inner();
    assert!(old.sagas.is_empty());

    let action = |saga_id: &str, actor: &str| pb::SagaActionRequest {
        saga_id: saga_id.to_owned(),
        actor: actor.to_owned(),
        reason: "ticket OPS-42".to_owned(),
    };
    // The actor recorded is the token's subject; the request's field is ignored.
    let retried = test
        .admin_as("ops-ann")
        .retry_saga(action(&early.saga_id, "mallory"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried.attempt, 1);
    let resent = test
        .expect_where(|c| c.is::<pb::ReserveFundsCommand>() && c.saga_id == early.saga_id)
        .await;
    assert_eq!(resent.command_id, early.command_id);

    let past_pivot = admin
        .abort_saga(action(&late.saga_id, "ops-ann"))
        .await
        .expect_err("past the pivot");
    assert_eq!(past_pivot.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&past_pivot), "SAGA_PAST_PIVOT");

    let aborted = test
        .admin_as("ops-bob")
        .abort_saga(action(&early.saga_id, ""))
        .await
        .expect("abort")
        .into_inner();
    assert_eq!(aborted.state, pb::SagaState::Compensating as i32);
    let release = test
        .expect_where(|c| c.is::<pb::ReleaseFundsCommand>() && c.saga_id == early.saga_id)
        .await;
    test.succeed(&release).await;
    let fail = test
        .expect_where(|c| c.is::<pb::FailTransactionCommand>() && c.saga_id == early.saga_id)
        .await;
    assert_eq!(
        fail.decode::<pb::FailTransactionCommand>().reason_code,
        "ABORTED"
    );
    test.succeed(&fail).await;
    let saga = test
        .wait_for_state(&early.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "ABORTED");
    let actions: Vec<_> = saga
        .history
        .iter()
        .filter(|entry| !entry.actor.is_empty())
        .map(|entry| {
            (
                entry.event.as_str(),
                entry.actor.as_str(),
                entry.detail.contains("OPS-42"),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin_retry", "ops-ann", true),
            ("admin_abort", "ops-bob", true)
        ]
    );

    let terminal = admin
        .retry_saga(action(&early.saga_id, "ops-ann"))
        .await
        .expect_err("terminal");
    assert_eq!(reason(&terminal), "SAGA_TERMINAL");
    let missing = admin
        .get_saga(pb::GetSagaRequest {
            saga_id: Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown saga");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_step_log_cannot_be_edited() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.next_awaited().await;
    test.wait_for(&reserve.saga_id, "logged", |saga| !saga.history.is_empty())
        .await;
    let pool = test
        .db
        .service_pool(&corebank_orchestrator::SCHEMA, 1)
        .await;
    let as_service = sqlx::query("update saga_log set detail = 'edited'")
        .execute(&pool)
        .await;
    assert!(
        as_service.is_err(),
        "the service role cannot update the log"
    );
    let as_owner = sqlx::query("delete from orchestrator.saga_log")
        .execute(&test.db.owner)
        .await;
    assert!(
        as_owner.is_err(),
        "not even the owner can delete from the log"
    );
}
