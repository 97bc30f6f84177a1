//! Saga commands that wait in the account service's queue are taken as
//! batches (one command-log read, one log write and one outbox write for
//! all of them): within a batch every command sees what the ones before it
//! did, exactly as when they arrive one at a time.

use corebank_proto::v1 as pb;
use prost::Message;

use crate::helpers::{SagaCommands, Service, TestApp, rejected, succeeded};

fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}

/// The replies the account service sent for `command_id` (its outbox rows).
async fn replies_sent(app: &TestApp, command_id: &str) -> Vec<pb::CommandReply> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "select payload from account.outbox where message_type = 'corebank.v1.CommandReply'
         order by outbox_id",
    )
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
    let again = replies_sent(&app, &posted.reserve_id()).await;
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
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct xmin::text) from account.command_log where command_id = any($1)",
    )
    .bind(
        [
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
        .collect::<Vec<_>>(),
    )
    .fetch_one(&app.owner)
    .await
    .expect("read the command log");
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
