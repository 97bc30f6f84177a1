//! Operators' view: list, inspect, retry and abort; the step log is append-only.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn operators_list_inspect_retry_and_abort_sagas_but_not_past_the_pivot() {
    let mut test = SagaTest::start(patient()).await;
    let mut admin = test.admin();
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let early = test.next_command().await;
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
        idempotency_key: key(),
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
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
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

/// An operator action on `saga_id` under `key`.
fn keyed(saga_id: &str, reason: &str, key: &str) -> pb::SagaActionRequest {
    pb::SagaActionRequest {
        saga_id: saga_id.to_owned(),
        actor: String::new(),
        reason: reason.to_owned(),
        idempotency_key: key.to_owned(),
    }
}

/// The events of the operator actions in a saga's log.
fn admin_events(saga: &pb::Saga) -> Vec<&str> {
    saga.history
        .iter()
        .filter(|entry| entry.event.starts_with("admin_"))
        .map(|entry| entry.event.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_sent_twice_with_one_key_replays_its_answer_and_resends_once() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let awaited = test.next_command().await;
    let request = keyed(&awaited.saga_id, "ticket OPS-7", &key());

    let first = test
        .admin()
        .retry_saga(request.clone())
        .await
        .expect("retry");
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let again = test
        .admin()
        .retry_saga(request.clone())
        .await
        .expect("the same retry again");
    assert_eq!(
        again
            .metadata()
            .get("idempotent-replayed")
            .and_then(|value| value.to_str().ok()),
        Some("true")
    );
    assert_eq!(again.into_inner(), first.into_inner(), "the first answer");

    let resent = test
        .drain(Duration::from_secs(1))
        .await
        .into_iter()
        .filter(|command| command.command_id == awaited.command_id)
        .count();
    assert_eq!(resent, 1, "one retry, one resend");
    let saga = test.saga(&awaited.saga_id).await;
    assert_eq!(admin_events(&saga), ["admin_retry"]);
    assert_eq!(saga.state, pb::SagaState::Running as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_used_for_one_saga_action_is_refused_for_any_other() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let awaited = test.next_command().await;
    let used = key();
    let request = keyed(&awaited.saga_id, "ticket OPS-7", &used);
    test.admin()
        .retry_saga(request.clone())
        .await
        .expect("retry");

    let other_reason = test
        .admin()
        .retry_saga(keyed(&awaited.saga_id, "ticket OPS-8", &used))
        .await
        .expect_err("another reason under the key");
    let abort = test
        .admin()
        .abort_saga(request.clone())
        .await
        .expect_err("an abort under the retry's key");
    // The actor is the token's subject and part of the request a key stands
    // for: another operator cannot replay (or reuse) this one's key.
    let other_operator = test
        .admin_as("ops-bob")
        .retry_saga(request)
        .await
        .expect_err("another operator under the key");
    for status in [other_reason, abort, other_operator] {
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    }
    let saga = test.saga(&awaited.saga_id).await;
    assert_eq!(
        admin_events(&saga),
        ["admin_retry"],
        "nothing else was done"
    );
    assert_eq!(saga.state, pb::SagaState::Running as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_aborts_with_one_key_compensate_once_and_answer_alike() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Withdrawal, "20.00").await;
    let awaited = test.next_command().await;
    let request = keyed(&awaited.saga_id, "ticket OPS-9", &key());
    let aborts = (0..6).map(|_| {
        let mut admin = test.admin();
        let request = request.clone();
        tokio::spawn(async move { admin.abort_saga(request).await })
    });
    let answers: Vec<pb::Saga> = futures::future::join_all(aborts)
        .await
        .into_iter()
        .map(|joined| joined.expect("task").expect("abort").into_inner())
        .collect();
    assert_eq!(answers[0].state, pb::SagaState::Compensating as i32);
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "every caller gets the one abort's answer"
    );

    let releases = test
        .drain(Duration::from_secs(1))
        .await
        .into_iter()
        .filter(|command| {
            command.is::<pb::ReleaseFundsCommand>() && command.saga_id == awaited.saga_id
        })
        .count();
    assert_eq!(releases, 1, "one abort, one compensation");
    let saga = test.saga(&awaited.saga_id).await;
    assert_eq!(admin_events(&saga), ["admin_abort"]);
}
