//! Transfer posts that wait in the account service's queue together are
//! captured as a set, in one statement: each gets the outcome it would have
//! had on its own, and the ledger reads as if they had come one at a time
//! in their order (per account, consecutive sequence numbers and a running
//! balance; journals in the same order in the ledger).

use std::collections::HashMap;

use rust_decimal::Decimal;

use super::*;
use crate::helpers::Service;

/// Every entry of `account_id`, in account sequence: (sequence, signed
/// amount, balance after, the journal's ledger sequence).
async fn history(app: &TestApp, account_id: &str) -> Vec<(i64, Decimal, Decimal, i64)> {
    sqlx::query_as(
        "select e.account_seq,
                case e.direction when 'credit' then e.amount else -e.amount end,
                e.balance_after, j.ledger_seq
           from account.entry e join account.journal j using (journal_id)
          where e.account_id = $1::uuid order by e.account_seq",
    )
    .bind(account_id)
    .fetch_all(&app.owner)
    .await
    .expect("read the entries")
}

#[tokio::test(flavor = "multi_thread")]
async fn transfer_posts_queued_together_post_as_they_would_one_at_a_time() {
    let app = TestApp::spawn().await;
    let [a, b, c] = [
        funded(&app, "100").await,
        funded(&app, "100").await,
        funded(&app, "100").await,
    ];
    let frozen = funded(&app, "1").await;
    let (a_to_b, _) = reserve(&app, &a, "10.00").await;
    let (b_to_c, _) = reserve(&app, &b, "20.00").await;
    let (a_to_c, _) = reserve(&app, &a, "5.00").await;
    let (c_to_a, _) = reserve(&app, &c, "7.00").await;
    let (a_to_frozen, refused_hold) = reserve(&app, &a, "1.00").await;
    let (b_to_a, _) = reserve(&app, &b, "3.00").await;
    app.account
        .clone()
        .freeze_account(action(&frozen))
        .await
        .unwrap();
    let journals_before = app.count("account.journal").await;

    app.stop(Service::Account).await;
    app.send_command(&a_to_b.post(&a, &b)).await;
    app.send_command(&b_to_c.post(&b, &c)).await;
    // The first post again, re-sent under a new message id.
    app.send_command(&a_to_b.post(&a, &b)).await;
    app.send_command(&a_to_c.post(&a, &c)).await;
    app.send_command(&a_to_frozen.post(&a, &frozen)).await;
    app.send_command(&c_to_a.post(&c, &a)).await;
    app.send_command(&b_to_a.post(&b, &a)).await;
    app.start(Service::Account).await;

    let mut journal_ids = Vec::new();
    for saga in [&a_to_b, &b_to_c, &a_to_c, &c_to_a, &b_to_a] {
        let reply = app.command_reply(&saga.post(&a, "").command_id).await;
        assert!(succeeded(&reply), "{reply:?}");
        journal_ids.push(reply.journal_id);
    }
    let refused = app
        .command_reply(&a_to_frozen.post(&a, "").command_id)
        .await;
    assert_eq!(rejected(&refused), "ACCOUNT_FROZEN");
    assert_eq!(
        get_hold(&app, &refused_hold.hold_id).await.status,
        pb::HoldStatus::Active as i32,
        "the refused post captured nothing"
    );
    assert_eq!(
        app.count("account.journal").await,
        journals_before + 5,
        "one journal per post, none for the refusal or the re-sent post"
    );

    // The posts were taken together (a batch is one transaction).
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct xmin::text) from account.journal where journal_id = any($1::uuid[])",
    )
    .bind(&journal_ids)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert!(
        transactions < 5,
        "five queued posts took {transactions} transactions"
    );
    // Their journals took the ledger's sequence in the order the posts came.
    let order: Vec<String> = sqlx::query_scalar(
        "select journal_id::text from account.journal where journal_id = any($1::uuid[])
          order by ledger_seq",
    )
    .bind(&journal_ids)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(order, journal_ids);

    // Each account's entries: consecutive sequence numbers, each balance
    // the one before plus the entry, and the ledger in the same order.
    let mut ledger = HashMap::new();
    for account in [&a, &b, &c, &frozen] {
        let entries = history(&app, account).await;
        let mut running = Decimal::ZERO;
        for (index, (seq, amount, after, _)) in entries.iter().enumerate() {
            assert_eq!(*seq, index as i64 + 1, "{account}: {entries:?}");
            running += amount;
            assert_eq!(*after, running, "{account}: {entries:?}");
        }
        assert!(
            entries.windows(2).all(|pair| pair[0].3 < pair[1].3),
            "{account}: ledger order differs from the account's: {entries:?}"
        );
        ledger.insert(account.clone(), balance(&app, account).await);
    }
    assert_eq!(
        ledger[&a],
        ("95.00".into(), "94.00".into(), "1.00".into()),
        "100 - 10 - 5 + 7 + 3, the refused 1.00 still held"
    );
    assert_eq!(ledger[&b], ("87.00".into(), "87.00".into(), "0.00".into()));
    assert_eq!(
        ledger[&c],
        ("118.00".into(), "118.00".into(), "0.00".into())
    );
    assert_eq!(ledger[&frozen].0, "1.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn reserves_queued_together_on_distinct_accounts_hold_as_they_would_one_at_a_time() {
    let app = TestApp::spawn().await;
    let [a, b, c, d] = [
        funded(&app, "100").await,
        funded(&app, "100").await,
        funded(&app, "100").await,
        funded(&app, "100").await,
    ];
    let frozen = funded(&app, "100").await;
    app.account
        .clone()
        .freeze_account(action(&frozen))
        .await
        .unwrap();
    let sagas: Vec<SagaCommands> = (0..5).map(|_| SagaCommands::new()).collect();
    let reserves = [
        sagas[0].reserve(&a, money("USD", "30.00")),
        sagas[1].reserve(&b, money("USD", "100.01")),
        sagas[2].reserve(&c, money("USD", "10.00")),
        sagas[3].reserve(&frozen, money("USD", "5.00")),
        sagas[4].reserve(&d, money("USD", "100.00")),
    ];

    app.stop(Service::Account).await;
    for reserve in &reserves {
        app.send_command(reserve).await;
    }
    app.start(Service::Account).await;

    let mut replies = Vec::new();
    for reserve in &reserves {
        replies.push(app.command_reply(&reserve.command_id).await);
    }
    for placed in [&replies[0], &replies[2], &replies[4]] {
        assert!(succeeded(placed), "{placed:?}");
    }
    assert_eq!(rejected(&replies[1]), "INSUFFICIENT_FUNDS");
    assert_eq!(rejected(&replies[3]), "ACCOUNT_FROZEN");
    let hold = get_hold(&app, &replies[0].hold_id).await;
    assert_eq!(hold.status, pb::HoldStatus::Active as i32);
    assert_eq!(hold.amount.expect("amount").amount, "30.00");
    assert_eq!(hold.reference, sagas[0].transaction_id);
    for (account, expected) in [
        (&a, ("100.00", "70.00", "30.00")),
        (&b, ("100.00", "100.00", "0.00")),
        (&c, ("100.00", "90.00", "10.00")),
        (&d, ("100.00", "0.00", "100.00")),
        (&frozen, ("100.00", "100.00", "0.00")),
    ] {
        let (ledger, available, held) = expected;
        assert_eq!(
            balance(&app, account).await,
            (ledger.into(), available.into(), held.into()),
            "{account}"
        );
    }
    let holds: i64 =
        sqlx::query_scalar("select count(*) from account.hold where reference = any($1)")
            .bind(
                sagas
                    .iter()
                    .map(|s| s.transaction_id.clone())
                    .collect::<Vec<_>>(),
            )
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(holds, 3, "a hold for each reserve that succeeded, no other");
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct xmin::text) from account.command_log where command_id = any($1)",
    )
    .bind(
        reserves
            .iter()
            .map(|r| r.command_id.clone())
            .collect::<Vec<_>>(),
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert!(
        transactions < 5,
        "five queued reserves took {transactions} transactions"
    );
}
