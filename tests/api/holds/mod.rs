//! Holds, driven as the saga drives them (reserve, release and post commands
//! on the bus, never an RPC): reserving against the available balance and
//! overdraft, releasing, capturing, expiring, and the refusals of frozen and
//! closed accounts. Every command applies once per command id. What a post
//! does with a hold (a transfer, a withdrawal) is in `capture`.

use std::time::Duration;

use corebank_proto::v1 as pb;

use crate::helpers::{SagaCommands, TestApp, key, rejected, succeeded};

mod batch;
mod capture;

fn money(currency: &str, amount: &str) -> pb::Money {
    pb::Money {
        currency: currency.to_owned(),
        amount: amount.to_owned(),
    }
}

fn action(account_id: &str) -> pb::AccountActionRequest {
    pb::AccountActionRequest {
        account_id: account_id.to_owned(),
        idempotency_key: key(),
        actor: "ops-3".to_owned(),
        reason: "investigation".to_owned(),
    }
}

/// An account funded with `funds` USD.
async fn funded(app: &TestApp, funds: &str) -> String {
    app.funded_account(funds).await.account_id
}

/// An account with an overdraft limit, funded with `funds` USD.
async fn with_overdraft(app: &TestApp, limit: &str, funds: &str) -> String {
    let customer_id = app.verified_customer().await;
    let account = app
        .account
        .clone()
        .open_account(pb::OpenAccountRequest {
            idempotency_key: key(),
            customer_id,
            currency: "USD".to_owned(),
            product: pb::AccountProduct::Checking as i32,
            overdraft_limit: limit.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    app.deposit(&account.account_id, funds).await;
    account.account_id
}

/// A reserve of `amount` USD in a saga of its own, which must succeed.
async fn reserve(app: &TestApp, account_id: &str, amount: &str) -> (SagaCommands, pb::Hold) {
    let saga = SagaCommands::new();
    let reply = app
        .command(&saga.reserve(account_id, money("USD", amount)))
        .await;
    assert!(succeeded(&reply), "reserve: {reply:?}");
    let hold = get_hold(app, &reply.hold_id).await;
    (saga, hold)
}

async fn balance(app: &TestApp, account_id: &str) -> (String, String, String) {
    let balance = app.balance(account_id).await;
    let text = |money: Option<pb::Money>| money.expect("money").amount;
    (
        text(balance.ledger),
        text(balance.available),
        text(balance.held),
    )
}

async fn get_hold(app: &TestApp, hold_id: &str) -> pb::Hold {
    app.account
        .clone()
        .get_hold(pb::GetHoldRequest {
            hold_id: hold_id.to_owned(),
        })
        .await
        .expect("get hold")
        .into_inner()
}

async fn journal(app: &TestApp, journal_id: &str) -> pb::Journal {
    app.account
        .clone()
        .get_journal(pb::GetJournalRequest {
            journal_id: journal_id.to_owned(),
        })
        .await
        .expect("get journal")
        .into_inner()
}
#[tokio::test(flavor = "multi_thread")]
async fn a_reserve_holds_funds_from_the_available_balance_but_not_the_ledger() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let (saga, hold) = reserve(&app, &account_id, "30.25").await;
    assert_eq!(hold.status, pb::HoldStatus::Active as i32);
    assert_eq!(hold.amount.as_ref().unwrap().amount, "30.25");
    assert_eq!(hold.reference, saga.transaction_id);
    assert_eq!(
        balance(&app, &account_id).await,
        ("100.00".into(), "69.75".into(), "30.25".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reserve_beyond_the_available_balance_is_rejected_for_insufficient_funds() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    reserve(&app, &account_id, "60").await;
    let saga = SagaCommands::new();
    let reply = app
        .command(&saga.reserve(&account_id, money("USD", "40.01")))
        .await;
    assert_eq!(rejected(&reply), "INSUFFICIENT_FUNDS");
    assert_eq!(app.count("account.hold").await, 1);
    assert_eq!(balance(&app, &account_id).await.1, "40.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reserve_may_use_the_overdraft_limit_and_no_more() {
    let app = TestApp::spawn().await;
    let account_id = with_overdraft(&app, "50", "20").await;
    reserve(&app, &account_id, "70").await;
    assert_eq!(balance(&app, &account_id).await.1, "-50.00");
    let saga = SagaCommands::new();
    let reply = app
        .command(&saga.reserve(&account_id, money("USD", "0.01")))
        .await;
    assert_eq!(rejected(&reply), "INSUFFICIENT_FUNDS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reserve_in_another_currency_or_with_a_bad_amount_is_rejected_and_holds_nothing() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let euros = app
        .command(&SagaCommands::new().reserve(&account_id, money("EUR", "10")))
        .await;
    assert_eq!(rejected(&euros), "CURRENCY_MISMATCH");
    let finer = app
        .command(&SagaCommands::new().reserve(&account_id, money("USD", "1.001")))
        .await;
    assert_eq!(rejected(&finer), "INVALID_COMMAND");
    assert!(finer.detail.contains("amount.amount"), "{finer:?}");
    let nowhere = app
        .command(&SagaCommands::new().reserve("nope", money("USD", "1")))
        .await;
    assert_eq!(rejected(&nowhere), "INVALID_COMMAND");
    assert_eq!(app.count("account.hold").await, 0);
    assert_eq!(balance(&app, &account_id).await.2, "0.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_hold_returns_its_funds_and_cannot_then_be_captured() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let (saga, hold) = reserve(&app, &account_id, "40").await;
    let released = app.command(&saga.release(&account_id)).await;
    assert!(succeeded(&released), "{released:?}");
    assert_eq!(
        get_hold(&app, &hold.hold_id).await.status,
        pb::HoldStatus::Released as i32
    );
    assert_eq!(
        balance(&app, &account_id).await,
        ("100.00".into(), "100.00".into(), "0.00".into())
    );

    // The release re-sent is answered alike and changes nothing.
    app.send_command(&saga.release(&account_id)).await;
    app.wait_for_count(
        &format!(
            "select count(*) from account.outbox where message_type = 'corebank.v1.CommandReply' \
             and correlation_id = '{}'",
            saga.saga_id
        ),
        3,
        "the duplicate's reply",
    )
    .await;
    let captured = app.command(&saga.post(&account_id, "")).await;
    assert_eq!(rejected(&captured), "HOLD_NOT_ACTIVE");
    // Only the funding deposit's journal.
    assert_eq!(app.count("account.journal").await, 1);
    assert_eq!(balance(&app, &account_id).await.1, "100.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_account_takes_no_reserve_and_no_post_but_its_holds_can_be_released() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let destination = app.open_account(&customer_id, "USD").await.account_id;
    let (first, _) = reserve(&app, &source, "10").await;
    let (second, second_hold) = reserve(&app, &source, "10").await;
    app.account
        .clone()
        .freeze_account(action(&source))
        .await
        .unwrap();

    let reply = app
        .command(&SagaCommands::new().reserve(&source, money("USD", "1")))
        .await;
    assert_eq!(rejected(&reply), "ACCOUNT_FROZEN");
    let reply = app.command(&first.post(&source, &destination)).await;
    assert_eq!(rejected(&reply), "ACCOUNT_FROZEN");
    let reply = app.command(&first.release(&source)).await;
    assert!(succeeded(&reply), "{reply:?}");

    app.account
        .clone()
        .unfreeze_account(action(&source))
        .await
        .unwrap();
    app.account
        .clone()
        .freeze_account(action(&destination))
        .await
        .unwrap();
    let reply = app.command(&second.post(&source, &destination)).await;
    assert_eq!(rejected(&reply), "ACCOUNT_FROZEN");
    assert_eq!(
        get_hold(&app, &second_hold.hold_id).await.status,
        pb::HoldStatus::Active as i32
    );
    assert_eq!(
        balance(&app, &source).await,
        ("100.00".into(), "90.00".into(), "10.00".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_hold_cannot_be_captured_and_the_sweeper_returns_its_funds() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let (saga, hold) = reserve(&app, &account_id, "30").await;
    // Holds live 30 days; the account service runs on the test's clock.
    app.clock.advance(chrono::Duration::days(31));
    let (_, lasting) = reserve(&app, &account_id, "5").await;

    // Refused as expired, whether or not the sweeper got to it first.
    let reply = app.command(&saga.post(&account_id, "")).await;
    assert!(
        ["HOLD_EXPIRED", "HOLD_NOT_ACTIVE"].contains(&rejected(&reply)),
        "{reply:?}"
    );
    assert_eq!(app.count("account.journal").await, 1);
    assert_eq!(
        get_hold(&app, &hold.hold_id).await.status,
        pb::HoldStatus::Expired as i32
    );

    let mut swept = false;
    for _ in 0..50 {
        let status: String =
            sqlx::query_scalar("select status from account.hold where hold_id = $1::uuid")
                .bind(&hold.hold_id)
                .fetch_one(&app.owner)
                .await
                .unwrap();
        if status == "expired" {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(swept, "the sweeper marks the hold expired");
    assert_eq!(
        balance(&app, &account_id).await,
        ("100.00".into(), "95.00".into(), "5.00".into())
    );
    assert_eq!(
        get_hold(&app, &lasting.hold_id).await.status,
        pb::HoldStatus::Active as i32
    );
    // Its release finds nothing left to return.
    let reply = app.command(&saga.release(&account_id)).await;
    assert!(succeeded(&reply), "{reply:?}");
    assert_eq!(balance(&app, &account_id).await.1, "95.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_holds_are_not_found_and_posts_without_a_reserve_are_rejected() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "10").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = app
        .account
        .clone()
        .get_hold(pb::GetHoldRequest { hold_id: unknown })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(crate::helpers::reason(&status), "HOLD_NOT_FOUND");
    let reply = app
        .command(&SagaCommands::new().post(&account_id, ""))
        .await;
    assert_eq!(rejected(&reply), "NOTHING_RESERVED");
    assert_eq!(balance(&app, &account_id).await.0, "10.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_reserves_never_take_the_available_balance_below_the_overdraft_limit() {
    let app = TestApp::spawn().await;
    let account_id = with_overdraft(&app, "35", "100").await;
    let sagas: Vec<SagaCommands> = (0..50).map(|_| SagaCommands::new()).collect();
    for saga in &sagas {
        app.send_command(&saga.reserve(&account_id, money("USD", "10")))
            .await;
    }
    let mut placed = 0;
    for saga in &sagas {
        let reply = app.command_reply(&saga.reserve_id()).await;
        if succeeded(&reply) {
            placed += 1;
        } else {
            assert_eq!(rejected(&reply), "INSUFFICIENT_FUNDS");
        }
    }
    // 100 funds + 35 overdraft: 13 holds of 10 fit, a 14th would pass -35.
    assert_eq!(placed, 13);
    assert_eq!(app.count("account.hold").await, 13);
    assert_eq!(
        balance(&app, &account_id).await,
        ("100.00".into(), "-30.00".into(), "130.00".into())
    );
}
