//! The saga commands the service consumes: status changes, replies, duplicates, parking.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn mark_processing_then_complete_completes_the_transaction_replies_and_announces_it() {
    let app = TransactionApp::spawn().await;
    let created = app.create_transfer().await;
    let id = created.transaction_id.clone();
    let _: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let saga = Uuid::now_v7();

    app.send(&mark_processing(saga, &id), saga).await;
    app.wait_for_status(&id, pb::TransactionStatus::Processing)
        .await;

    let journal = Uuid::now_v7().to_string();
    let command = complete(saga, &id, &journal);
    let message_id = app.send(&command, saga).await;
    let reply = app.reply(saga, message_id).await;
    assert_eq!(reply.command_id, command.command_id);
    assert_eq!(reply.saga_id, saga.to_string());
    assert_eq!(reply.outcome, pb::CommandOutcome::Succeeded as i32);

    let event: pb::TransactionCompletedEvent = app.event(wire::event::TRANSFER_COMPLETED).await;
    assert_eq!(event.transaction_id, id);
    assert_eq!(event.journal_id, journal);
    assert_eq!(event.amount, Some(usd("125.50")));

    let completed = app.get(&id).await;
    assert_eq!(completed.status, pb::TransactionStatus::Completed as i32);
    assert_eq!(completed.journal_id, journal);
    assert_eq!(app.count("transaction.transaction_status_change").await, 3);
    app.nothing_more(&app.replies).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_review_shows_review_once_without_a_reply_and_the_transaction_still_completes() {
    let app = TransactionApp::spawn().await;
    let created = app.create_transfer().await;
    let id = created.transaction_id.clone();
    let _: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let mut stream = app
        .client
        .clone()
        .watch_transaction(pb::GetTransactionRequest {
            transaction_id: id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        next(&mut stream).await.map(|t| t.status),
        Some(pb::TransactionStatus::Pending as i32)
    );
    let saga = Uuid::now_v7();
    app.send(&mark_processing(saga, &id), saga).await;
    let review = mark_review(saga, &id);
    app.send(&review, saga).await;
    app.wait_for_status(&id, pb::TransactionStatus::Review)
        .await;
    // A re-sent notice (a saga parked again) changes nothing.
    app.send(&review, saga).await;
    let completion = app.send(&complete(saga, &id, "journal-7"), saga).await;
    let mut seen = Vec::new();
    while let Some(transaction) = next(&mut stream).await {
        seen.push(transaction.status);
    }
    assert_eq!(
        seen,
        [
            pb::TransactionStatus::Processing as i32,
            pb::TransactionStatus::Review as i32,
            pb::TransactionStatus::Completed as i32
        ]
    );
    let detail: String = sqlx::query_scalar(
        "select detail from transaction.transaction_status_change where to_status = 'review'",
    )
    .fetch_one(&app.db.owner)
    .await
    .expect("review history row");
    assert!(
        detail.starts_with("screen awaits a final answer until"),
        "{detail}"
    );
    assert_eq!(app.count("transaction.transaction_status_change").await, 4);
    // Only the completion is answered: the notices expect no reply.
    let reply = app.reply(saga, completion).await;
    assert_eq!(reply.outcome, pb::CommandOutcome::Succeeded as i32);
    app.nothing_more(&app.replies).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_transaction_keeps_its_reason_and_is_announced() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let saga = Uuid::now_v7();
    let command = fail(saga, &id, "INSUFFICIENT_FUNDS");
    let message_id = app.send(&command, saga).await;

    let reply = app.reply(saga, message_id).await;
    assert_eq!(reply.outcome, pb::CommandOutcome::Succeeded as i32);
    assert_eq!(reply.command_id, command.command_id);
    let _: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let event: pb::TransactionFailedEvent = app.event(wire::event::TRANSFER_FAILED).await;
    assert_eq!(event.reason_code, "INSUFFICIENT_FUNDS");
    assert_eq!(event.detail, command.detail);

    let failed = app.get(&id).await;
    assert_eq!(failed.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(failed.failure_reason, "INSUFFICIENT_FUNDS");
    assert_eq!(failed.failure_detail, command.detail);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resent_command_has_one_effect_and_gets_the_stored_reply_again() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let saga = Uuid::now_v7();
    let command = complete(saga, &id, &Uuid::now_v7().to_string());

    let first_message = app.send(&command, saga).await;
    let first = app.reply(saga, first_message).await;
    let second_message = app.send(&command, saga).await;
    let second = app.reply(saga, second_message).await;
    assert_ne!(first_message, second_message);
    assert_eq!(first, second);

    let _: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let _: pb::TransactionCompletedEvent = app.event(wire::event::TRANSFER_COMPLETED).await;
    app.nothing_more(&app.events).await;
    assert_eq!(app.count("transaction.transaction_status_change").await, 2);
    assert_eq!(app.count("transaction.command_log").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn completing_a_failed_transaction_is_rejected_and_failing_it_again_is_harmless() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let saga = Uuid::now_v7();
    let message_id = app.send(&fail(saga, &id, "ACCOUNT_FROZEN"), saga).await;
    assert_eq!(
        app.reply(saga, message_id).await.outcome,
        pb::CommandOutcome::Succeeded as i32
    );

    let other_saga = Uuid::now_v7();
    let message_id = app
        .send(&fail(other_saga, &id, "TIMED_OUT"), other_saga)
        .await;
    assert_eq!(
        app.reply(other_saga, message_id).await.outcome,
        pb::CommandOutcome::Succeeded as i32
    );

    let message_id = app.send(&complete(saga, &id, "journal-1"), saga).await;
    let refused = app.reply(saga, message_id).await;
    assert_eq!(refused.outcome, pb::CommandOutcome::Rejected as i32);
    assert_eq!(refused.reason_code, "TRANSACTION_ALREADY_TERMINAL");

    let failed = app.get(&id).await;
    assert_eq!(failed.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(failed.failure_reason, "ACCOUNT_FROZEN");
    assert_eq!(failed.journal_id, "");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_or_undecodable_command_is_parked_and_changes_nothing() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    for (message_type, payload) in [
        ("corebank.v1.NoSuchCommand".to_owned(), vec![1, 2, 3]),
        (
            wire::message_type::<pb::CompleteTransactionCommand>(),
            vec![0xff, 0xff, 0xff],
        ),
    ] {
        let message = OutgoingMessage::command(wire::service::TRANSACTION, message_type, payload);
        app.channel
            .basic_publish(
                app.namespace.exchange(Exchange::Commands).into(),
                wire::service::TRANSACTION.into(),
                BasicPublishOptions::default(),
                &message.payload,
                message.properties("orchestrator-test"),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
    let dlq = app.namespace.dlq(wire::queue::TRANSACTION_COMMANDS);
    app.next(&dlq).await;
    app.next(&dlq).await;
    assert_eq!(
        app.get(&id).await.status,
        pb::TransactionStatus::Pending as i32
    );
    assert_eq!(app.count("transaction.command_log").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_history_cannot_be_rewritten_even_by_the_service_role() {
    let app = TransactionApp::spawn().await;
    app.create_transfer().await;
    let service = app.db.service_pool(&corebank_transaction::SCHEMA, 1).await;
    for statement in [
        "update transaction_status_change set detail = 'edited'",
        "delete from transaction_status_change",
    ] {
        let denied = sqlx::query(statement).execute(&service).await.unwrap_err();
        assert_eq!(
            corebank_platform::error::sqlstate(&denied).as_deref(),
            Some("42501"),
            "{statement}: {denied}"
        );
    }
    let denied = sqlx::query("delete from transaction.transaction_status_change")
        .execute(&app.db.owner)
        .await
        .unwrap_err();
    assert_eq!(
        corebank_platform::error::sqlstate(&denied).as_deref(),
        Some("42501"),
        "{denied}"
    );
    assert_eq!(app.count("transaction.transaction_status_change").await, 1);
    app.stop().await;
}
