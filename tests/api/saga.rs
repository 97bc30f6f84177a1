//! Money moves end to end: every service running, sagas over RabbitMQ, and
//! the ledger's invariants checked after each test.

use std::time::Duration;

use corebank_platform::messaging::OutgoingMessage;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use tonic::Code;

use crate::helpers::{
    Service, TestApp, close_broker_connections, key, publish, reason, usd, violated_fields,
};

fn completed(transaction: &pb::Transaction) -> bool {
    transaction.status == pb::TransactionStatus::Completed as i32
}

fn wait(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.owner)
        .await
        .unwrap()
}

async fn saga_of(app: &TestApp, transaction_id: &str) -> pb::Saga {
    let saga_id: uuid::Uuid =
        sqlx::query_scalar("select saga_id from orchestrator.saga where transaction_id = $1::uuid")
            .bind(transaction_id)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    // The transaction ends when the transaction service applies the last
    // command; the saga ends when the orchestrator has its reply, a moment
    // later. Wait (at most 20 s) for that last transition.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let saga = app
            .sagas
            .clone()
            .get_saga(pb::GetSagaRequest {
                saga_id: saga_id.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let running = [
            pb::SagaState::Running as i32,
            pb::SagaState::Compensating as i32,
        ];
        if !running.contains(&saga.state) || tokio::time::Instant::now() >= deadline {
            return saga;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_a_transfer_and_a_withdrawal_complete_with_balanced_journals() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await;
    let destination = app.funded_account("5.00").await;

    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "30.25")
        .await;
    assert!(completed(&transfer), "{transfer:?}");
    assert!(!transfer.journal_id.is_empty());

    let withdrawal = app
        .transaction
        .clone()
        .create_withdrawal(pb::CreateWithdrawalRequest {
            idempotency_key: key(),
            account_id: destination.account_id.clone(),
            amount: Some(usd("10.00")),
            description: "cash".to_owned(),
            wait: wait(20),
        })
        .await
        .unwrap()
        .into_inner();
    let withdrawal = app.terminal(&withdrawal.transaction_id).await;
    assert!(completed(&withdrawal), "{withdrawal:?}");

    let source_balance = app.balance(&source.account_id).await;
    assert_eq!(source_balance.ledger.unwrap().amount, "69.75");
    assert_eq!(source_balance.available.unwrap().amount, "69.75");
    let destination_balance = app.balance(&destination.account_id).await;
    assert_eq!(destination_balance.ledger.unwrap().amount, "25.25");

    let journal = app
        .account
        .clone()
        .get_journal(pb::GetJournalRequest {
            journal_id: transfer.journal_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(journal.entries.len(), 2);

    let saga = saga_of(&app, &transfer.transaction_id).await;
    assert_eq!(saga.state, pb::SagaState::Completed as i32);
    assert!(!saga.history.is_empty());
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_answers_with_its_terminal_status_when_asked_to_wait() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("50.00").await;
    let destination = app.funded_account("1.00").await;
    let answer = app
        .transaction
        .clone()
        .create_transfer(pb::CreateTransferRequest {
            idempotency_key: key(),
            source_account_id: source.account_id,
            destination_account_id: destination.account_id,
            amount: Some(usd("12.00")),
            description: String::new(),
            wait: wait(20),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(completed(&answer), "{answer:?}");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_larger_than_the_available_balance_fails_with_nothing_to_compensate() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("10.00").await;
    let destination = app.funded_account("1.00").await;
    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "10.01")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(transfer.failure_reason, "INSUFFICIENT_FUNDS");
    assert_eq!(
        app.balance(&source.account_id)
            .await
            .available
            .unwrap()
            .amount,
        "10.00"
    );
    assert_eq!(
        count(&app, "select count(*) from account.hold").await,
        0,
        "no hold was placed"
    );
    let saga = saga_of(&app, &transfer.transaction_id).await;
    assert_eq!(saga.state, pb::SagaState::Failed as i32);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_destination_compensates_the_transfer_and_releases_the_hold() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("40.00").await;
    let destination = app.funded_account("1.00").await;
    app.account
        .clone()
        .freeze_account(pb::AccountActionRequest {
            account_id: destination.account_id.clone(),
            idempotency_key: key(),
            actor: "ops".to_owned(),
            reason: "court order".to_owned(),
        })
        .await
        .unwrap();

    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "15.00")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(transfer.failure_reason, "ACCOUNT_FROZEN");
    // The reserve happened, then was undone.
    assert_eq!(
        count(
            &app,
            "select count(*) from account.hold where status = 'released'"
        )
        .await,
        1
    );
    let balance = app.balance(&source.account_id).await;
    assert_eq!(balance.available.unwrap().amount, "40.00");
    assert_eq!(balance.held.unwrap().amount, "0.00");
    let saga = saga_of(&app, &transfer.transaction_id).await;
    assert_eq!(saga.state, pb::SagaState::Compensated as i32);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_who_is_not_verified_cannot_be_debited() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("20.00").await;
    let destination = app.funded_account("1.00").await;
    let owner: String = sqlx::query_scalar(
        "select customer_id::text from account.account where account_id = $1::uuid",
    )
    .bind(&source.account_id)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    app.customer
        .clone()
        .suspend_customer(pb::KycTransitionRequest {
            customer_id: owner,
            idempotency_key: key(),
            actor: "compliance".to_owned(),
            reason: "sanctions hit".to_owned(),
        })
        .await
        .unwrap();
    // The account service learns it from the customer service's event.
    app.wait_for_count(
        "select count(*) from account.customer_kyc where kyc_status = 'suspended'",
        1,
        "the kyc event",
    )
    .await;
    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "5.00")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(transfer.failure_reason, "KYC_NOT_VERIFIED");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_makes_one_transfer_and_another_body_changes_nothing() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("30.00").await;
    let destination = app.funded_account("1.00").await;
    let request = pb::CreateTransferRequest {
        idempotency_key: key(),
        source_account_id: source.account_id.clone(),
        destination_account_id: destination.account_id.clone(),
        amount: Some(usd("7.00")),
        description: "rent".to_owned(),
        wait: wait(20),
    };
    let first = app
        .transaction
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .transaction
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.transaction_id, again.transaction_id);

    let different = pb::CreateTransferRequest {
        amount: Some(usd("8.00")),
        ..request
    };
    let status = app
        .transaction
        .clone()
        .create_transfer(different)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");

    app.terminal(&first.transaction_id).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from transaction.transaction where kind = 'transfer'"
        )
        .await,
        1
    );
    assert_eq!(
        app.balance(&source.account_id).await.ledger.unwrap().amount,
        "23.00"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_transfer_request_names_the_field_and_starts_nothing() {
    let app = TestApp::spawn().await;
    let status = app
        .transaction
        .clone()
        .create_transfer(pb::CreateTransferRequest {
            idempotency_key: key(),
            source_account_id: "nope".to_owned(),
            destination_account_id: uuid::Uuid::now_v7().to_string(),
            amount: Some(usd("1.001")),
            description: String::new(),
            wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(
        fields.contains(&"source_account_id".to_owned()),
        "{fields:?}"
    );
    assert!(fields.contains(&"amount.amount".to_owned()), "{fields:?}");
    assert_eq!(
        count(&app, "select count(*) from orchestrator.saga").await,
        0
    );
    assert_eq!(
        count(&app, "select count(*) from transaction.transaction").await,
        0
    );
}

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
    let mut tasks = Vec::new();
    for i in 0..1000_usize {
        let mut client = app.transaction.clone();
        let from = accounts[i % 20].clone();
        let to = accounts[(i * 7 + 3) % 20].clone();
        let to = if to == from {
            accounts[(i + 1) % 20].clone()
        } else {
            to
        };
        // Amounts large enough that some transfers find the money gone.
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
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
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
