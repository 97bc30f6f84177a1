//! Row locks held by someone else: a request that waits too long on one is
//! answered as retryable and writes nothing; a saga command waits its turn
//! and then applies once.

use std::time::Duration;

use corebank_proto::v1 as pb;
use sqlx::Connection;
use tonic::Code;

use crate::helpers::{SagaCommands, TestApp, key, reason, succeeded, usd};

/// A connection holding the account's row lock until it rolls back.
async fn lock_account(app: &TestApp, account_id: &str) -> sqlx::PgConnection {
    let mut blocker = sqlx::PgConnection::connect_with(&app.db.owner_options)
        .await
        .unwrap();
    sqlx::query("begin").execute(&mut blocker).await.unwrap();
    sqlx::query("select 1 from account.account where account_id = $1::uuid for update")
        .bind(account_id)
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

async fn unlock(mut blocker: sqlx::PgConnection) {
    sqlx::query("rollback").execute(&mut blocker).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_freeze_blocked_by_a_locked_account_is_refused_as_retryable_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    let blocker = lock_account(&app, &account.account_id).await;

    let status = app
        .account
        .clone()
        .freeze_account(pb::AccountActionRequest {
            account_id: account.account_id.clone(),
            idempotency_key: key(),
            actor: "ops-3".to_owned(),
            reason: "blocked".to_owned(),
        })
        .await
        .unwrap_err();
    unlock(blocker).await;

    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "CONCURRENT_UPDATE");
    assert_eq!(app.count("account.account_event").await, 1);
    let read = app
        .account
        .clone()
        .get_account(pb::GetAccountRequest {
            account_id: account.account_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.status, pb::AccountStatus::Active as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reserve_blocked_by_a_locked_account_waits_its_turn_and_applies_once() {
    let app = TestApp::spawn().await;
    let account = app.funded_account("50.00").await;
    let blocker = lock_account(&app, &account.account_id).await;

    let saga = SagaCommands::new();
    app.send_command(&saga.reserve(&account.account_id, usd("5.00")))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answered: i64 =
        sqlx::query_scalar("select count(*) from account.command_log where command_id = $1")
            .bind(saga.reserve_id())
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(answered, 0, "no reply while the row is locked");
    unlock(blocker).await;

    let reply = app.command_reply(&saga.reserve_id()).await;
    assert!(succeeded(&reply), "{reply:?}");
    assert_eq!(app.count("account.hold").await, 1);
    let balance = app.balance(&account.account_id).await;
    assert_eq!(balance.held.unwrap().amount, "5.00");
}
