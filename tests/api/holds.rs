//! Holds: reserving funds against the available balance and overdraft,
//! releasing, capturing, expiring, and the refusals of frozen and closed accounts.

use std::time::Duration;

use corebank_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, key, reason, violated_fields};

fn money(currency: &str, amount: &str) -> Option<pb::Money> {
    Some(pb::Money {
        currency: currency.to_owned(),
        amount: amount.to_owned(),
    })
}

fn hold_request(account_id: &str, amount: &str) -> pb::PlaceHoldRequest {
    pb::PlaceHoldRequest {
        account_id: account_id.to_owned(),
        idempotency_key: key(),
        amount: money("USD", amount),
        reference: "transfer 7".to_owned(),
        ttl: None,
    }
}

fn release(hold_id: &str) -> pb::ReleaseHoldRequest {
    pb::ReleaseHoldRequest {
        hold_id: hold_id.to_owned(),
        idempotency_key: key(),
        reason: "transfer cancelled".to_owned(),
    }
}

fn capture(hold_id: &str, destination: &str) -> pb::CaptureHoldRequest {
    pb::CaptureHoldRequest {
        hold_id: hold_id.to_owned(),
        idempotency_key: key(),
        destination_account_id: destination.to_owned(),
        reference: "transfer 7".to_owned(),
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
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    app.deposit(&account.account_id, funds).await;
    account.account_id
}

/// The request with a time to live (the tests crate does not name `prost_types`).
fn with_ttl(mut request: pb::PlaceHoldRequest, seconds: i64) -> pb::PlaceHoldRequest {
    let mut ttl = request.ttl.take().unwrap_or_default();
    ttl.seconds = seconds;
    request.ttl = Some(ttl);
    request
}

async fn place(app: &TestApp, account_id: &str, amount: &str) -> pb::Hold {
    app.account
        .clone()
        .place_hold(hold_request(account_id, amount))
        .await
        .expect("place hold")
        .into_inner()
}

async fn balance(app: &TestApp, account_id: &str) -> (String, String, String) {
    let balance = app
        .account
        .clone()
        .get_balance(pb::GetBalanceRequest {
            account_id: account_id.to_owned(),
        })
        .await
        .expect("get balance")
        .into_inner();
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

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_reduces_the_available_balance_but_not_the_ledger() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let hold = place(&app, &account_id, "30.25").await;
    assert_eq!(hold.status, pb::HoldStatus::Active as i32);
    assert_eq!(hold.amount.as_ref().unwrap().amount, "30.25");
    assert_eq!(
        balance(&app, &account_id).await,
        ("100.00".into(), "69.75".into(), "30.25".into())
    );
    assert_eq!(get_hold(&app, &hold.hold_id).await, hold);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_beyond_the_available_balance_is_refused_for_insufficient_funds() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    place(&app, &account_id, "60").await;
    let status = app
        .account
        .clone()
        .place_hold(hold_request(&account_id, "40.01"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "INSUFFICIENT_FUNDS");
    assert_eq!(app.count("account.hold").await, 1);
    assert_eq!(balance(&app, &account_id).await.1, "40.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_may_use_the_overdraft_limit_and_no_more() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app
        .account
        .clone()
        .open_account(pb::OpenAccountRequest {
            idempotency_key: key(),
            customer_id,
            currency: "USD".to_owned(),
            product: pb::AccountProduct::Checking as i32,
            overdraft_limit: "50".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    app.deposit(&account.account_id, "20").await;
    place(&app, &account.account_id, "70").await;
    assert_eq!(balance(&app, &account.account_id).await.1, "-50.00");
    let status = app
        .account
        .clone()
        .place_hold(hold_request(&account.account_id, "0.01"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "INSUFFICIENT_FUNDS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_in_another_currency_than_the_account_is_refused() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let mut request = hold_request(&account_id, "10");
    request.amount = money("EUR", "10");
    let status = app.account.clone().place_hold(request).await.unwrap_err();
    assert_eq!(reason(&status), "CURRENCY_MISMATCH");
    assert_eq!(app.count("account.hold").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_request_with_bad_fields_names_each_field_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let request = pb::PlaceHoldRequest {
        account_id: "nope".to_owned(),
        idempotency_key: String::new(),
        amount: money("USD", "1.001"),
        reference: "x".repeat(201),
        ttl: None,
    };
    let request = with_ttl(request, 31 * 24 * 3600);
    let status = app.account.clone().place_hold(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "account_id",
            "idempotency_key",
            "amount.amount",
            "reference",
            "ttl"
        ]
    );
    let mut no_key = hold_request(&account_id, "1");
    no_key.idempotency_key = String::new();
    let status = app.account.clone().place_hold(no_key).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["idempotency_key"]);
    assert_eq!(app.count("account.hold").await, 0);
    assert_eq!(balance(&app, &account_id).await.2, "0.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_hold_returns_its_funds_and_cannot_be_released_or_captured_again() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let hold = place(&app, &account_id, "40").await;
    let released = app
        .account
        .clone()
        .release_hold(release(&hold.hold_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.status, pb::HoldStatus::Released as i32);
    assert_eq!(
        balance(&app, &account_id).await,
        ("100.00".into(), "100.00".into(), "0.00".into())
    );

    let again = app
        .account
        .clone()
        .release_hold(release(&hold.hold_id))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "HOLD_NOT_ACTIVE");
    let info = tonic_types::StatusExt::get_details_error_info(&again).unwrap();
    assert_eq!(
        info.metadata.get("status").map(String::as_str),
        Some("released")
    );

    let captured = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, ""))
        .await
        .unwrap_err();
    assert_eq!(reason(&captured), "HOLD_NOT_ACTIVE");
    assert_eq!(app.count("account.journal").await, 1);
    assert_eq!(balance(&app, &account_id).await.1, "100.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_hold_moves_the_money_once_and_cannot_be_released() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let destination = app.open_account(&customer_id, "USD").await.account_id;
    let hold = place(&app, &source, "40").await;
    let journal = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, &destination))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(journal.kind, pb::JournalKind::Transfer as i32);
    assert_eq!(journal.hold_id, hold.hold_id);
    assert_eq!(
        balance(&app, &source).await,
        ("60.00".into(), "60.00".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &destination).await,
        ("40.00".into(), "40.00".into(), "0.00".into())
    );

    let captured = get_hold(&app, &hold.hold_id).await;
    assert_eq!(captured.status, pb::HoldStatus::Captured as i32);
    assert_eq!(captured.journal_id, journal.journal_id);

    let twice = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, &destination))
        .await
        .unwrap_err();
    assert_eq!(reason(&twice), "HOLD_NOT_ACTIVE");
    let released = app
        .account
        .clone()
        .release_hold(release(&hold.hold_id))
        .await
        .unwrap_err();
    assert_eq!(reason(&released), "HOLD_NOT_ACTIVE");
    assert_eq!(balance(&app, &destination).await.0, "40.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn capturing_without_a_destination_is_a_withdrawal_to_the_settlement_account() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let hold = place(&app, &account_id, "25").await;
    let journal = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(journal.kind, pb::JournalKind::Withdrawal as i32);
    let settlement = journal
        .entries
        .iter()
        .find(|e| e.account_id != account_id)
        .unwrap();
    assert_eq!(settlement.direction, pb::EntryDirection::Credit as i32);
    assert_eq!(
        settlement.running_balance.as_ref().unwrap().amount,
        "-75.00"
    );
    assert_eq!(balance(&app, &account_id).await.0, "75.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capture_to_an_account_in_another_currency_is_refused_and_the_hold_stays_active() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let euros = app.open_account(&customer_id, "EUR").await.account_id;
    let hold = place(&app, &source, "10").await;
    let status = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, &euros))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CURRENCY_MISMATCH");
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, &unknown))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_NOT_FOUND");
    assert_eq!(
        get_hold(&app, &hold.hold_id).await.status,
        pb::HoldStatus::Active as i32
    );
    assert_eq!(
        balance(&app, &source).await,
        ("100.00".into(), "90.00".into(), "10.00".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_account_takes_no_new_hold_and_no_capture_but_its_holds_can_be_released() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let destination = app.open_account(&customer_id, "USD").await.account_id;
    let first = place(&app, &source, "10").await;
    let second = place(&app, &source, "10").await;
    app.account
        .clone()
        .freeze_account(action(&source))
        .await
        .unwrap();

    let status = app
        .account
        .clone()
        .place_hold(hold_request(&source, "1"))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_FROZEN");
    let status = app
        .account
        .clone()
        .capture_hold(capture(&first.hold_id, &destination))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_FROZEN");
    app.account
        .clone()
        .release_hold(release(&first.hold_id))
        .await
        .unwrap();

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
    let status = app
        .account
        .clone()
        .capture_hold(capture(&second.hold_id, &destination))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_FROZEN");
    assert_eq!(
        get_hold(&app, &second.hold_id).await.status,
        pb::HoldStatus::Active as i32
    );
    assert_eq!(
        balance(&app, &source).await,
        ("100.00".into(), "90.00".into(), "10.00".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_destination_refuses_a_capture() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let destination = app.open_account(&customer_id, "USD").await.account_id;
    app.account
        .clone()
        .close_account(action(&destination))
        .await
        .unwrap();
    let hold = place(&app, &source, "10").await;
    let status = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, &destination))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_CLOSED");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_hold_cannot_be_captured_and_the_sweeper_returns_its_funds() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let request = with_ttl(hold_request(&account_id, "30"), 3600);
    let hold = app
        .account
        .clone()
        .place_hold(request)
        .await
        .unwrap()
        .into_inner();
    let lasting = place(&app, &account_id, "5").await;
    app.clock.advance(chrono::Duration::hours(2));

    // Refused as expired, whether or not the sweeper got to it first.
    let status = app
        .account
        .clone()
        .capture_hold(capture(&hold.hold_id, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        ["HOLD_EXPIRED", "HOLD_NOT_ACTIVE"].contains(&reason(&status).as_str()),
        "{status:?}"
    );
    let status = app
        .account
        .clone()
        .release_hold(release(&hold.hold_id))
        .await
        .unwrap_err();
    assert!(
        ["HOLD_EXPIRED", "HOLD_NOT_ACTIVE"].contains(&reason(&status).as_str()),
        "{status:?}"
    );
    let info = tonic_types::StatusExt::get_details_error_info(&status).unwrap();
    assert_eq!(
        info.metadata.get("status").map(String::as_str),
        Some("expired")
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
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_holds_are_not_found() {
    let app = TestApp::spawn().await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = app
        .account
        .clone()
        .release_hold(release(&unknown))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "HOLD_NOT_FOUND");
    let status = app
        .account
        .clone()
        .capture_hold(capture(&unknown, ""))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "HOLD_NOT_FOUND");
    let status = app
        .account
        .clone()
        .get_hold(pb::GetHoldRequest { hold_id: unknown })
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "HOLD_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_holds_never_take_the_available_balance_below_the_overdraft_limit() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app
        .account
        .clone()
        .open_account(pb::OpenAccountRequest {
            idempotency_key: key(),
            customer_id,
            currency: "USD".to_owned(),
            product: pb::AccountProduct::Checking as i32,
            overdraft_limit: "35".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    app.deposit(&account.account_id, "100").await;

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut client = app.account.clone();
        let request = hold_request(&account.account_id, "10");
        tasks.push(tokio::spawn(
            async move { client.place_hold(request).await },
        ));
    }
    let mut placed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => placed += 1,
            Err(status) => assert_eq!(reason(&status), "INSUFFICIENT_FUNDS"),
        }
    }
    // 100 funds + 35 overdraft: 13 holds of 10 fit, a 14th would pass -35.
    assert_eq!(placed, 13);
    assert_eq!(app.count("account.hold").await, 13);
    assert_eq!(
        balance(&app, &account.account_id).await,
        ("100.00".into(), "-30.00".into(), "130.00".into())
    );
}
