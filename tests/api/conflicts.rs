//! A request that waits too long on a row another transaction holds is
//! answered as retryable, and writes nothing.

use corebank_proto::v1 as pb;
use sqlx::Connection;
use tonic::Code;

use crate::helpers::{TestApp, key, reason, usd};

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_blocked_by_a_locked_account_is_refused_as_retryable_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    app.deposit(&account.account_id, "50.00").await;

    // Someone else holds the account row for longer than a request may wait.
    let mut blocker = sqlx::PgConnection::connect_with(&app.db.owner_options)
        .await
        .unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("select 1 from account.account where account_id = $1::uuid for update")
        .bind(&account.account_id)
        .execute(&mut *tx)
        .await
        .unwrap();

    let status = app
        .account
        .clone()
        .place_hold(pb::PlaceHoldRequest {
            account_id: account.account_id.clone(),
            idempotency_key: key(),
            amount: Some(usd("5.00")),
            reference: "blocked".to_owned(),
            ttl: None,
        })
        .await
        .unwrap_err();
    tx.rollback().await.unwrap();

    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "CONCURRENT_UPDATE");
    assert_eq!(app.count("account.hold").await, 0);
    let balance = app.balance(&account.account_id).await;
    assert_eq!(balance.held.unwrap().amount, "0.00");
}
