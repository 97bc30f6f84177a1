//! Sagas under faults: duplicated and overtaking commands, services and the
//! broker going away mid-saga, malformed commands, and a thousand concurrent
//! transfers; the ledger's invariants checked after each test.

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

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_random_transfers_among_twenty_accounts_keep_every_invariant() {
    // Production step timeouts: under this load a reply can take longer than
    // the short test timeouts, and a timed-out reserve would (correctly) fail.
    let app = TestApp::spawn_with(
        Default::default(),
        corebank_orchestrator::EngineConfig::default(),
    )
    .await;
    let mut accounts = Vec::new();
    for _ in 0..20 {
        accounts.push(app.funded_account("100.00").await.account_id);
    }
    let ids = fire_transfers(&app, &accounts, 1000).await;
    let mut completed_count = 0;
    let mut failed_count = 0;
    for id in &ids {
        let transaction = app.terminal(id).await;
        if completed(&transaction) {
            completed_count += 1;
        } else {
            assert_eq!(
                transaction.failure_reason, "INSUFFICIENT_FUNDS",
                "{transaction:?}"
            );
            failed_count += 1;
        }
    }
    assert_eq!(completed_count + failed_count, 1000);
    assert!(completed_count > 0);
    app.assert_invariants().await;
    // Money is conserved: customers hold what was deposited.
    let total: rust_decimal::Decimal = sqlx::query_scalar(
        "select sum(ledger_balance) from account.account where product <> 'settlement'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(total, rust_decimal::Decimal::from(2000));
}

/// Sends `count` transfers at once among `accounts` (amounts large enough
/// that some find the money gone); returns their transaction ids.
async fn fire_transfers(app: &TestApp, accounts: &[String], count: usize) -> Vec<String> {
    let n = accounts.len();
    let mut tasks = Vec::new();
    for i in 0..count {
        let mut client = app.transaction.clone();
        let from = accounts[i % n].clone();
        let to = accounts[(i * 7 + 3) % n].clone();
        let to = if to == from {
            accounts[(i + 1) % n].clone()
        } else {
            to
        };
        let amount = format!("{}.{:02}", 1 + (i * 13) % 40, (i * 29) % 100);
        tasks.push(tokio::spawn(async move {
            let request = pb::CreateTransferRequest {
                idempotency_key: uuid::Uuid::now_v7().to_string(),
                source_account_id: from,
                destination_account_id: to,
                amount: Some(usd(&amount)),
                description: String::new(),
                wait: None,
            };
            // UNAVAILABLE says "retry later" (a pool busy past its wait on a
            // loaded machine): a client retries it with the same key, which
            // must still give one transfer.
            let mut attempts = 0;
            loop {
                attempts += 1;
                match client.create_transfer(request.clone()).await {
                    Err(status) if status.code() == tonic::Code::Unavailable && attempts < 5 => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    answer => return answer.map(|answer| answer.into_inner().transaction_id),
                }
            }
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().expect("every transfer is accepted"));
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_published_again_mid_load_is_absorbed_and_every_invariant_holds() {
    let app = TestApp::spawn_with(
        Default::default(),
        corebank_orchestrator::EngineConfig::default(),
    )
    .await;
    let mut accounts = Vec::new();
    for _ in 0..12 {
        accounts.push(app.funded_account("100.00").await.account_id);
    }
    let load = {
        let app = &app;
        let accounts = &accounts;
        async move { fire_transfers(app, accounts, 200).await }
    };
    // While the transfers run, every service's relay is made to publish
    // again everything it has sent: each command, reply and event reaches
    // its consumer a second (and third) time, in every state of its saga.
    let republish = async {
        let schemas: Vec<String> = sqlx::query_scalar(
            "select table_schema::text from information_schema.tables where table_name = 'outbox'",
        )
        .fetch_all(&app.owner)
        .await
        .unwrap();
        let (mut republished, mut in_flight) = (0, 0);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let unfinished: i64 = sqlx::query_scalar(
                "select count(*) from transaction.transaction where status not in ('completed', 'failed')",
            )
            .fetch_one(&app.owner)
            .await
            .unwrap();
            in_flight = in_flight.max(unfinished);
            for schema in &schemas {
                let sql =
                    format!("update {schema}.outbox set sent_at = null where sent_at is not null");
                republished += sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&app.owner)
                    .await
                    .unwrap()
                    .rows_affected();
            }
        }
        (republished, in_flight)
    };
    let (ids, (republished, in_flight)) = tokio::join!(load, republish);
    eprintln!(
        "{republished} outbox rows published again, with up to {in_flight} transfers in flight"
    );
    assert!(
        in_flight > 0,
        "the messages were published again while transfers ran"
    );
    assert!(republished > 200, "{republished} rows published again");

    let mut completed_count = 0;
    for id in &ids {
        let transaction = app.terminal(id).await;
        if completed(&transaction) {
            completed_count += 1;
        } else {
            assert_eq!(
                transaction.failure_reason, "INSUFFICIENT_FUNDS",
                "{transaction:?}"
            );
        }
    }
    assert!(completed_count > 0);
    app.assert_invariants().await;
    let total: rust_decimal::Decimal = sqlx::query_scalar(
        "select sum(ledger_balance) from account.account where product <> 'settlement'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(total, rust_decimal::Decimal::from(1200));
    // Every duplicate was absorbed: no saga logged a transition twice, no
    // transaction changed status twice to the same status, and reporting
    // mirrors each ledger entry once.
    let twice: i64 = sqlx::query_scalar(
        "select count(*) from (select 1 from orchestrator.saga_log
          where event <> 'retried'
          group by saga_id, step, direction, event having count(*) > 1) as repeated",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(twice, 0, "saga transitions logged twice");
    let changed_twice: i64 = sqlx::query_scalar(
        "select count(*) from (select 1 from transaction.transaction_status_change
          group by transaction_id, to_status having count(*) > 1) as repeated",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(changed_twice, 0, "transaction statuses changed twice");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ledger, mirrored): (i64, i64) = sqlx::query_as(
            "select (select count(*) from account.entry), (select count(*) from reporting.entry)",
        )
        .fetch_one(&app.owner)
        .await
        .unwrap();
        if ledger == mirrored {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline && mirrored < ledger,
            "reporting mirrors {mirrored} entries of the ledger's {ledger}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
