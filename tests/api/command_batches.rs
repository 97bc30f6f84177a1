//! Saga commands that wait in a participant's queue are taken as batches
//! (one command-log read, one log write and one outbox write for all of
//! them): within a batch every command sees what the ones before it did,
//! exactly as when they arrive one at a time.

use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use uuid::Uuid;

use crate::helpers::{SagaCommands, Service, TestApp, rejected, succeeded};

fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

/// The replies `schema`'s service sent for `command_id` (its outbox rows).
async fn replies_sent(app: &TestApp, schema: &str, command_id: &str) -> Vec<pb::CommandReply> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select payload from {schema}.outbox where message_type = 'corebank.v1.CommandReply'
         order by outbox_id"
    )))
    .fetch_all(&app.owner)
    .await
    .expect("read the outbox");
    payloads
        .iter()
        .map(|payload| pb::CommandReply::decode(payload.as_slice()).expect("a reply"))
        .filter(|reply| reply.command_id == command_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_queued_together_apply_as_they_would_one_at_a_time() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100").await.account_id;
    let destination = app.funded_account("0.01").await.account_id;
    let (posted, cancelled, released, refused, after_refusal, deposited) = (
        SagaCommands::new(),
        SagaCommands::new(),
        SagaCommands::new(),
        SagaCommands::new(),
        SagaCommands::new(),
        SagaCommands::new(),
    );

    app.stop(Service::Account).await;
    // A reserve, the same reserve re-sent (a new message id, so only the
    // command log can tell), and the post that captures it.
    app.send_command(&posted.reserve(&source, usd("10.00")))
        .await;
    app.send_command(&posted.reserve(&source, usd("10.00")))
        .await;
    app.send_command(&posted.post(&source, &destination)).await;
    // A compensation that overtakes its reserve: the reserve is refused.
    app.send_command(&cancelled.release(&source)).await;
    app.send_command(&cancelled.reserve(&source, usd("5.00")))
        .await;
    // A reserve and its release.
    app.send_command(&released.reserve(&source, usd("20.00")))
        .await;
    app.send_command(&released.release(&source)).await;
    // A refusal, and a reserve after it that still applies.
    app.send_command(&refused.reserve(&source, usd("1000.00")))
        .await;
    app.send_command(&after_refusal.reserve(&source, usd("1.00")))
        .await;
    app.send_command(&deposited.deposit(&destination, usd("2.50")))
        .await;
    app.start(Service::Account).await;

    let reserve = app.command_reply(&posted.reserve_id()).await;
    assert!(succeeded(&reserve), "{reserve:?}");
    let post = app
        .command_reply(&posted.post(&source, "").command_id)
        .await;
    assert!(succeeded(&post), "{post:?}");
    let again = replies_sent(&app, "account", &posted.reserve_id()).await;
    assert_eq!(again.len(), 2, "the re-sent reserve is answered too");
    assert!(
        again.iter().all(|reply| *reply == reserve),
        "with the first reply: {again:?}"
    );

    let tombstone = app
        .command_reply(&cancelled.release(&source).command_id)
        .await;
    assert!(succeeded(&tombstone), "{tombstone:?}");
    let late = app.command_reply(&cancelled.reserve_id()).await;
    assert_eq!(rejected(&late), "RESERVE_CANCELLED");

    let hold = app.command_reply(&released.reserve_id()).await;
    assert!(succeeded(&hold), "{hold:?}");
    let release = app
        .command_reply(&released.release(&source).command_id)
        .await;
    assert!(succeeded(&release), "{release:?}");
    assert_eq!(release.hold_id, hold.hold_id);

    let too_much = app.command_reply(&refused.reserve_id()).await;
    assert_eq!(rejected(&too_much), "INSUFFICIENT_FUNDS");
    let small = app.command_reply(&after_refusal.reserve_id()).await;
    assert!(succeeded(&small), "{small:?}");
    let deposit = app
        .command_reply(&deposited.deposit(&destination, usd("2.50")).command_id)
        .await;
    assert!(succeeded(&deposit), "{deposit:?}");

    // The nine commands (the re-sent reserve has no row of its own) were
    // taken together: their log rows share transactions.
    let commands: Vec<String> = [
        &posted,
        &cancelled,
        &released,
        &refused,
        &after_refusal,
        &deposited,
    ]
    .iter()
    .flat_map(|saga| {
        [
            saga.reserve_id(),
            saga.release(&source).command_id,
            saga.post(&source, "").command_id,
        ]
    })
    .collect();
    let transactions = log_transactions(&app, "account", &commands).await;
    assert!(
        transactions < 9,
        "nine queued commands took {transactions} transactions"
    );
    // One hold per reserve that succeeded; only the 1.00 one still active.
    let holds: Vec<(String, String)> = sqlx::query_as(
        "select reference, status from account.hold where account_id = $1::uuid order by reference",
    )
    .bind(&source)
    .fetch_all(&app.owner)
    .await
    .expect("read the holds");
    let mut expected = vec![
        (posted.transaction_id.clone(), "captured".to_owned()),
        (released.transaction_id.clone(), "released".to_owned()),
        (after_refusal.transaction_id.clone(), "active".to_owned()),
    ];
    expected.sort();
    assert_eq!(holds, expected);
    let balance = |account: pb::Balance| {
        let text = |money: Option<pb::Money>| money.expect("money").amount;
        (text(account.ledger), text(account.held))
    };
    assert_eq!(
        balance(app.balance(&source).await),
        ("90.00".to_owned(), "1.00".to_owned())
    );
    assert_eq!(
        balance(app.balance(&destination).await),
        ("12.51".to_owned(), "0.00".to_owned())
    );
}

/// How many transactions wrote the `schema.command_log` rows of `command_ids`.
async fn log_transactions(app: &TestApp, schema: &str, command_ids: &[String]) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(distinct xmin::text) from {schema}.command_log where command_id = any($1)"
    )))
    .bind(command_ids)
    .fetch_one(&app.owner)
    .await
    .expect("read the command log")
}

/// Publishes a saga command to the transaction service.
async fn send_transaction_command<C: Message + Name>(app: &TestApp, saga_id: Uuid, command: &C) {
    app.send_command_to(wire::service::TRANSACTION, saga_id, command)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_commands_queued_together_apply_as_they_would_one_at_a_time() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100").await.account_id;
    let destination = app.funded_account("0.01").await.account_id;
    // No saga runs these transfers: the test sends their commands itself.
    app.stop(Service::Orchestrator).await;
    let mut transfers = Vec::new();
    for _ in 0..3 {
        transfers.push(app.submit_transfer(&source, &destination, "1.00").await);
    }
    let (reviewed, resent, failed) = (&transfers[0], &transfers[1], &transfers[2]);
    // One saga id for the three: command ids differ by transaction anyway.
    let saga = Uuid::now_v7();
    let command_id = |step: &str, transaction_id: &str, direction| {
        format!(
            "{}:{transaction_id}",
            wire::command_id(saga, step, direction)
        )
    };
    let complete = |transaction_id: &str| pb::CompleteTransactionCommand {
        command_id: command_id("complete", transaction_id, wire::Direction::Forward),
        saga_id: saga.to_string(),
        transaction_id: transaction_id.to_owned(),
        journal_id: Uuid::now_v7().to_string(),
    };
    let review = pb::MarkReviewCommand {
        command_id: command_id("mark_review", reviewed, wire::Direction::Forward),
        saga_id: saga.to_string(),
        transaction_id: reviewed.clone(),
        step: "screen".to_owned(),
        deadline: None,
    };
    let fail = pb::FailTransactionCommand {
        command_id: command_id("fail", failed, wire::Direction::Compensate),
        saga_id: saga.to_string(),
        transaction_id: failed.clone(),
        reason_code: "INSUFFICIENT_FUNDS".to_owned(),
        detail: "available 0.00, asked 1.00".to_owned(),
    };

    app.stop(Service::Transaction).await;
    // A review notice, then the completion of the same transaction.
    send_transaction_command(&app, saga, &review).await;
    send_transaction_command(&app, saga, &complete(reviewed)).await;
    // A completion and the same completion re-sent under a new message id.
    let completion = complete(resent);
    send_transaction_command(&app, saga, &completion).await;
    send_transaction_command(&app, saga, &completion).await;
    // A failure, then a completion the failure has made illegal.
    send_transaction_command(&app, saga, &fail).await;
    send_transaction_command(&app, saga, &complete(failed)).await;
    app.start(Service::Transaction).await;

    for (transaction_id, status) in [
        (reviewed, pb::TransactionStatus::Completed),
        (resent, pb::TransactionStatus::Completed),
        (failed, pb::TransactionStatus::Failed),
    ] {
        assert_eq!(
            app.terminal(transaction_id).await.status,
            status as i32,
            "{transaction_id}"
        );
    }
    let too_late = complete(failed).command_id;
    app.wait_for_count(
        &format!("select count(*) from transaction.command_log where command_id = '{too_late}'"),
        1,
        "the refused completion",
    )
    .await;

    let history: Vec<(String, String)> = sqlx::query_as(
        "select transaction_id::text, to_status from transaction.transaction_status_change
         where transaction_id = any($1::uuid[]) and from_status is not null
         order by transaction_status_change_id",
    )
    .bind(&transfers)
    .fetch_all(&app.owner)
    .await
    .expect("read the status history");
    let of = |transaction_id: &String| -> Vec<&str> {
        history
            .iter()
            .filter(|(id, _)| id == transaction_id)
            .map(|(_, status)| status.as_str())
            .collect()
    };
    assert_eq!(of(reviewed), ["review", "completed"]);
    assert_eq!(
        of(resent),
        ["completed"],
        "the re-sent completion changed nothing"
    );
    assert_eq!(of(failed), ["failed"]);

    let answered = replies_sent(&app, "transaction", &completion.command_id).await;
    assert_eq!(answered.len(), 2, "the re-sent completion is answered too");
    assert_eq!(answered[0], answered[1]);
    assert_eq!(answered[0].outcome, pb::CommandOutcome::Succeeded as i32);
    let refused = replies_sent(&app, "transaction", &too_late).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(rejected(&refused[0]), "TRANSACTION_ALREADY_TERMINAL");
    // The notice expects no reply.
    assert!(
        replies_sent(&app, "transaction", &review.command_id)
            .await
            .is_empty()
    );

    let commands = [
        review.command_id.clone(),
        complete(reviewed).command_id,
        completion.command_id.clone(),
        fail.command_id.clone(),
        too_late.clone(),
    ];
    let transactions = log_transactions(&app, "transaction", &commands).await;
    assert!(
        transactions < 5,
        "five queued commands took {transactions} transactions"
    );
}
