//! Sagas under faults: duplicated and overtaking commands, services and the
//! broker going away mid-saga, malformed commands; the ledger's invariants
//! checked after each test. Faults under load are in `saga_load`.

use std::time::Duration;

use corebank_platform::messaging::OutgoingMessage;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};

use crate::helpers::{Service, TestApp, close_broker_connections, publish, usd};
use crate::saga::{completed, count};

#[tokio::test(flavor = "multi_thread")]
async fn a_reserve_command_delivered_twice_places_one_hold_and_answers_alike() {
    let app = TestApp::spawn().await;
    let account = app.funded_account("10.00").await;
    let saga_id = uuid::Uuid::now_v7();
    let command = pb::ReserveFundsCommand {
        command_id: wire::command_id(saga_id, "reserve", wire::Direction::Forward),
        saga_id: saga_id.to_string(),
        account_id: account.account_id.clone(),
        amount: Some(usd("4.00")),
        transaction_id: uuid::Uuid::now_v7().to_string(),
    };
    // Two sends of one command: same command id, each its own message id.
    for _ in 0..2 {
        let message = OutgoingMessage::command(
            wire::service::ACCOUNT,
            pb::ReserveFundsCommand::full_name(),
            command.encode_to_vec(),
        )
        .with_correlation_id(saga_id);
        publish(&app.namespace, &message).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let replies = loop {
        let replies: Vec<Vec<u8>> = sqlx::query_scalar(
            "select payload from account.outbox where message_type = $1 and correlation_id = $2 order by outbox_id",
        )
        .bind(pb::CommandReply::full_name())
        .bind(saga_id)
        .fetch_all(&app.owner)
        .await
        .unwrap();
        if replies.len() >= 2 {
            break replies;
        }
        assert!(tokio::time::Instant::now() < deadline, "replies never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(replies.len(), 2);
    assert_eq!(
        replies[0], replies[1],
        "the duplicate gets the stored reply"
    );
    let reply = pb::CommandReply::decode(replies[0].as_slice()).unwrap();
    assert_eq!(reply.outcome, pb::CommandOutcome::Succeeded as i32);
    assert_eq!(count(&app, "select count(*) from account.hold").await, 1);
    assert_eq!(
        app.balance(&account.account_id).await.held.unwrap().amount,
        "4.00"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_overtakes_its_reserve_leaves_no_late_hold() {
    let app = TestApp::spawn().await;
    let account = app.funded_account("10.00").await;
    let saga_id = uuid::Uuid::now_v7();
    let reserve_id = wire::command_id(saga_id, "reserve", wire::Direction::Forward);
    let release = pb::ReleaseFundsCommand {
        command_id: wire::command_id(saga_id, "reserve", wire::Direction::Compensate),
        saga_id: saga_id.to_string(),
        reserve_command_id: reserve_id.clone(),
        account_id: account.account_id.clone(),
    };
    let reserve = pb::ReserveFundsCommand {
        command_id: reserve_id,
        saga_id: saga_id.to_string(),
        account_id: account.account_id.clone(),
        amount: Some(usd("4.00")),
        transaction_id: uuid::Uuid::now_v7().to_string(),
    };
    let send = |type_name: String, payload: Vec<u8>| {
        OutgoingMessage::command(wire::service::ACCOUNT, type_name, payload)
            .with_correlation_id(saga_id)
    };
    publish(
        &app.namespace,
        &send(
            pb::ReleaseFundsCommand::full_name(),
            release.encode_to_vec(),
        ),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    app.wait_for_count(
        "select count(*) from account.command_tombstone",
        1,
        "the release",
    )
    .await;
    publish(
        &app.namespace,
        &send(
            pb::ReserveFundsCommand::full_name(),
            reserve.encode_to_vec(),
        ),
    )
    .await;
    let reply: Vec<u8> = loop {
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("select reply from account.command_log where command_id = $1")
                .bind(&reserve.command_id)
                .fetch_optional(&app.owner)
                .await
                .unwrap();
        if let Some(stored) = stored {
            break stored;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reserve never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reply = pb::CommandReply::decode(reply.as_slice()).unwrap();
    assert_eq!(reply.outcome, pb::CommandOutcome::Rejected as i32);
    assert_eq!(reply.reason_code, "RESERVE_CANCELLED");
    assert_eq!(count(&app, "select count(*) from account.hold").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saga_survives_the_orchestrator_stopping_mid_way() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("60.00").await;
    let destination = app.funded_account("1.00").await;
    // Hold the saga at its first step, then take the orchestrator away.
    app.stop(Service::Account).await;
    let transaction_id = app
        .submit_transfer(&source.account_id, &destination.account_id, "25.00")
        .await;
    app.wait_for_count(
        "select count(*) from orchestrator.saga",
        3,
        "the saga to start",
    )
    .await;
    app.stop(Service::Orchestrator).await;
    app.start(Service::Account).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.start(Service::Orchestrator).await;

    let transfer = app.terminal(&transaction_id).await;
    assert!(completed(&transfer), "{transfer:?}");
    assert_eq!(
        app.balance(&destination.account_id)
            .await
            .ledger
            .unwrap()
            .amount,
        "26.00"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_service_away_longer_than_a_step_timeout_is_retried_until_it_returns() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("60.00").await;
    let destination = app.funded_account("1.00").await;
    app.stop(Service::Account).await;
    let transaction_id = app
        .submit_transfer(&source.account_id, &destination.account_id, "10.00")
        .await;
    // Longer than the step timeout: the reserve is sent again (same command id).
    app.wait_for_count("select count(*) from orchestrator.outbox where message_type = 'corebank.v1.ReserveFundsCommand'", 2, "the reserve to be re-sent")
        .await;
    app.start(Service::Account).await;
    let transfer = app.terminal(&transaction_id).await;
    assert!(completed(&transfer), "{transfer:?}");
    // Every re-send carried one command id, so one hold and one posting.
    assert_eq!(count(&app, "select count(*) from account.hold").await, 1);
    assert_eq!(
        app.balance(&source.account_id).await.ledger.unwrap().amount,
        "50.00"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn services_reconnect_after_the_broker_closes_their_connections_and_nothing_is_lost() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("80.00").await;
    let destination = app.funded_account("1.00").await;
    let closed = close_broker_connections(&app.namespace).await;
    assert!(
        closed >= 4,
        "expected every service's connection, closed {closed}"
    );
    let mut transfers = Vec::new();
    for _ in 0..5 {
        transfers.push(
            app.transfer(&source.account_id, &destination.account_id, "3.00")
                .await,
        );
    }
    assert!(transfers.iter().all(completed), "{transfers:?}");
    assert_eq!(
        app.balance(&destination.account_id)
            .await
            .ledger
            .unwrap()
            .amount,
        "16.00"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_command_is_parked_and_the_consumer_keeps_going() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("20.00").await;
    let destination = app.funded_account("1.00").await;
    let garbage = OutgoingMessage::command(
        wire::service::ACCOUNT,
        pb::ReserveFundsCommand::full_name(),
        vec![0xff, 0xff, 0xff, 0x01],
    );
    publish(&app.namespace, &garbage).await;
    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "2.00")
        .await;
    assert!(completed(&transfer), "{transfer:?}");

    let broker = corebank_tests::harness::broker(&app.namespace, "inspector");
    let token = tokio_util::sync::CancellationToken::new();
    let connection = broker.connection(&token).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let parked = corebank_platform::messaging::dlq::list_parked(
            &connection,
            &app.namespace,
            wire::queue::ACCOUNT_COMMANDS,
            10,
        )
        .await
        .unwrap();
        if !parked.is_empty() || tokio::time::Instant::now() > deadline {
            break parked;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].message_id.as_deref(),
        Some(garbage.message_id.to_string().as_str())
    );
    assert_eq!(parked[0].reason.as_deref(), Some("malformed"));
    token.cancel();
    broker.close().await;
    app.assert_invariants().await;
}
