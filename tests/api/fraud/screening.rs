//! The screen step in transfers and deposits: approve, decline, fraud away,
//! duplicates.

use corebank_platform::messaging::OutgoingMessage;
use corebank_proto::wire;
use prost::{Message, Name};

use super::*;
use crate::helpers::{Service, publish, queued};

#[tokio::test(flavor = "multi_thread")]
async fn an_ordinary_transfer_is_approved_and_completes_with_its_decision_recorded() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await;
    let destination = app.funded_account("1.00").await;
    let done = app
        .transfer(&source.account_id, &destination.account_id, "12.50")
        .await;
    assert_eq!(
        done.status,
        pb::TransactionStatus::Completed as i32,
        "{done:?}"
    );
    let decision = decision(&app, &done.transaction_id).await;
    assert_eq!(decision.outcome, pb::FraudAction::Approve as i32);
    assert_eq!(decision.rule_set_version, 1);
    let features = decision.features.expect("a snapshot");
    assert_eq!(
        features.count_1h, 1,
        "the transfer counts in its own window"
    );
    assert!(features.first_time_payee);
    assert_eq!(features.amount.expect("amount").amount, "12.50");
    assert!(
        features.account_age.is_some(),
        "the account opening was seen"
    );
    let funding = app.balance(&source.account_id).await;
    assert_eq!(funding.ledger.expect("ledger").amount, "87.50");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_transfer_releases_the_hold_and_fails_with_fraud_declined_and_its_rules() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("500.00").await;
    let destination = app.funded_account("1.00").await;
    set_rules(
        &app,
        vec![pb::Rule {
            currency: "USD".to_owned(),
            threshold: "100.00".to_owned(),
            applies_to: kinds(&[pb::TransactionKind::Transfer]),
            ..rule(
                "too-big",
                pb::RuleKind::AmountAbove,
                pb::FraudAction::Decline,
            )
        }],
    )
    .await;
    let done = app
        .transfer(&source.account_id, &destination.account_id, "150.00")
        .await;
    assert!(failed_with(&done, "FRAUD_DECLINED"), "{done:?}");
    assert!(
        done.failure_detail.contains("too-big"),
        "{}",
        done.failure_detail
    );
    let balance = app.balance(&source.account_id).await;
    assert_eq!(balance.ledger.expect("ledger").amount, "500.00");
    assert_eq!(
        balance.available.expect("available").amount,
        "500.00",
        "the hold was released"
    );
    let decision = decision(&app, &done.transaction_id).await;
    assert_eq!(decision.outcome, pb::FraudAction::Decline as i32);
    assert_eq!(decision.rule_set_version, 2);
    assert_eq!(decision.fired.len(), 1);
    assert_eq!(decision.fired[0].rule_id, "too-big");
    assert_eq!(decision.fired[0].value, "150.00");
    assert_eq!(decision.fired[0].threshold, "100.00");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fraud_away_while_screening_is_retried_and_the_transfer_completes_when_it_returns() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await;
    let destination = app.funded_account("1.00").await;
    app.stop(Service::Fraud).await;
    let id = app
        .submit_transfer(&source.account_id, &destination.account_id, "5.00")
        .await;
    app.wait_for_count(
        "select count(*) from orchestrator.saga_log where step = 'screen' and event = 'retried'",
        1,
        "the screen command re-sent",
    )
    .await;
    app.start(Service::Fraud).await;
    let done = app.terminal(&id).await;
    assert_eq!(
        done.status,
        pb::TransactionStatus::Completed as i32,
        "{done:?}"
    );
    let decisions: i64 = sqlx::query_scalar("select count(*) from fraud.decision")
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(
        decisions, 3,
        "two funding deposits and the transfer, each screened once"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fraud_away_for_longer_than_every_attempt_fails_the_transfer_closed_as_screening_unavailable()
 {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await;
    let destination = app.funded_account("1.00").await;
    app.stop(Service::Fraud).await;
    let id = app
        .submit_transfer(&source.account_id, &destination.account_id, "5.00")
        .await;
    let done = app.terminal(&id).await;
    assert!(failed_with(&done, "SCREENING_UNAVAILABLE"), "{done:?}");
    let balance = app.balance(&source.account_id).await;
    assert_eq!(
        balance.available.expect("available").amount,
        "100.00",
        "no money left unscreened"
    );
    assert_eq!(
        app.balance(&destination.account_id)
            .await
            .ledger
            .expect("ledger")
            .amount,
        "1.00"
    );
    app.start(Service::Fraud).await;
    app.assert_invariants().await;
}

/// Fraud away under load, for longer than the screen step's attempts: each of
/// two hundred transfers in flight fails closed as SCREENING_UNAVAILABLE, every
/// hold is released and no money moves; once fraud is back and has worked
/// through the screens queued while it was away, a transfer completes again.
#[tokio::test(flavor = "multi_thread")]
async fn fraud_away_under_load_fails_every_transfer_closed_and_releases_every_hold() {
    let app = TestApp::spawn().await;
    let mut accounts = Vec::new();
    for _ in 0..4 {
        accounts.push(app.funded_account("500.00").await.account_id);
    }
    app.stop(Service::Fraud).await;
    let ids = futures::future::join_all(
        (0..200).map(|i| app.submit_transfer(&accounts[i % 4], &accounts[(i + 1) % 4], "1.00")),
    )
    .await;
    for id in &ids {
        let done = app.terminal(id).await;
        assert!(failed_with(&done, "SCREENING_UNAVAILABLE"), "{done:?}");
    }
    for account in &accounts {
        let balance = app.balance(account).await;
        assert_eq!(balance.ledger.expect("ledger").amount, "500.00");
        assert_eq!(
            balance.available.expect("available").amount,
            "500.00",
            "every hold released"
        );
    }
    app.start(Service::Fraud).await;
    // Every saga's five attempts wait in fraud's queue, and their late
    // replies in fraud's outbox and the orchestrator's queue: up to a
    // thousand of each ahead of a new screen, which on a loaded machine can
    // outlast the new saga's own attempts. Such a saga fails closed too;
    // once the backlog is through, a transfer completes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while queued(&app.namespace, wire::queue::FRAUD_COMMANDS).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fraud works through its queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let after = app.transfer(&accounts[0], &accounts[1], "2.00").await;
        if after.status == pb::TransactionStatus::Completed as i32 {
            break;
        }
        assert!(
            failed_with(&after, "SCREENING_UNAVAILABLE") && tokio::time::Instant::now() < deadline,
            "once fraud is back a transfer completes: {after:?}"
        );
    }
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_screen_command_makes_one_decision_and_gets_the_stored_reply_again() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await;
    let destination = app.funded_account("1.00").await;
    let done = app
        .transfer(&source.account_id, &destination.account_id, "5.00")
        .await;
    let decision = decision(&app, &done.transaction_id).await;
    let saga_id: uuid::Uuid = decision.saga_id.parse().expect("saga id");
    let command = pb::ScreenTransactionCommand {
        command_id: wire::command_id(saga_id, "screen", wire::Direction::Forward),
        saga_id: decision.saga_id.clone(),
        transaction_id: done.transaction_id.clone(),
        kind: pb::TransactionKind::Transfer as i32,
        source_account_id: source.account_id.clone(),
        destination_account_id: destination.account_id.clone(),
        amount: Some(crate::helpers::usd("5.00")),
        requested_at: None,
    };
    let message = OutgoingMessage::command(
        wire::service::FRAUD,
        pb::ScreenTransactionCommand::full_name(),
        command.encode_to_vec(),
    )
    .with_correlation_id(saga_id);
    publish(&app.namespace, &message).await;
    let replies = format!(
        "select count(*) from fraud.outbox where exchange = 'replies' and correlation_id = '{saga_id}'"
    );
    app.wait_for_count(&replies, 2, "the duplicate answered")
        .await;
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "select payload from fraud.outbox where exchange = 'replies' and correlation_id = $1",
    )
    .bind(saga_id)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(payloads.len(), 2);
    assert_eq!(payloads[0], payloads[1], "the stored reply, byte for byte");
    let count: i64 = sqlx::query_scalar("select count(*) from fraud.decision where saga_id = $1")
        .bind(saga_id)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(
        app.terminal(&done.transaction_id).await.status,
        pb::TransactionStatus::Completed as i32
    );
    app.assert_invariants().await;
}
