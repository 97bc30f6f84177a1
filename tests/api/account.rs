//! AccountService: opening, reading, listing, balances and the freeze /
//! unfreeze / close lifecycle.

use corebank_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{
    SagaCommands, TestApp, key, reason, rejected, succeeded, usd, violated_fields,
};

fn open_request(customer_id: &str, currency: &str) -> pb::OpenAccountRequest {
    pb::OpenAccountRequest {
        idempotency_key: key(),
        customer_id: customer_id.to_owned(),
        currency: currency.to_owned(),
        product: pb::AccountProduct::Checking as i32,
        overdraft_limit: String::new(),
    }
}

fn action(account_id: &str) -> pb::AccountActionRequest {
    pb::AccountActionRequest {
        account_id: account_id.to_owned(),
        idempotency_key: key(),
        actor: "ops-3".to_owned(),
        reason: "court order 12".to_owned(),
    }
}

fn amount(money: &Option<pb::Money>) -> &str {
    &money.as_ref().expect("money is set").amount
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verified_customer_opens_an_account_that_reads_back_the_same() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let mut request = open_request(&customer_id, "USD");
    request.product = pb::AccountProduct::Savings as i32;
    request.overdraft_limit = "250".to_owned();
    let opened = app
        .account
        .clone()
        .open_account(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.customer_id, customer_id);
    assert_eq!(opened.currency, "USD");
    assert_eq!(opened.product, pb::AccountProduct::Savings as i32);
    assert_eq!(opened.status, pb::AccountStatus::Active as i32);
    assert_eq!(amount(&opened.overdraft_limit), "250.00");

    let fetched = app
        .account
        .clone()
        .get_account(pb::GetAccountRequest {
            account_id: opened.account_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, opened);
    let balance = app.balance(&opened.account_id).await;
    assert_eq!(amount(&balance.ledger), "0.00");
    assert_eq!(amount(&balance.available), "0.00");
    assert_eq!(amount(&balance.overdraft_limit), "250.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_who_is_not_verified_cannot_open_an_account() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let status = app
        .account
        .clone()
        .open_account(open_request(&customer_id, "USD"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "KYC_NOT_VERIFIED");
    assert_eq!(app.count("account.account").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_customer_cannot_open_an_account() {
    let app = TestApp::spawn().await;
    let status = app
        .account
        .clone()
        .open_account(open_request(&uuid::Uuid::now_v7().to_string(), "USD"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "CUSTOMER_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_request_with_bad_fields_names_each_field_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let request = pb::OpenAccountRequest {
        idempotency_key: key(),
        customer_id: "not-a-uuid".to_owned(),
        currency: "usd".to_owned(),
        product: pb::AccountProduct::Settlement as i32,
        overdraft_limit: "-5".to_owned(),
    };
    let status = app.account.clone().open_account(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "VALIDATION_FAILED");
    assert_eq!(
        violated_fields(&status),
        ["customer_id", "currency", "product"]
    );

    let customer_id = app.verified_customer().await;
    let mut too_precise = open_request(&customer_id, "JPY");
    too_precise.overdraft_limit = "10.5".to_owned();
    let status = app
        .account
        .clone()
        .open_account(too_precise)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["overdraft_limit"]);
    assert_eq!(app.count("account.account").await, 0);
    assert_eq!(app.count("account.account_event").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_replays_the_same_account_for_the_same_key() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let request = open_request(&customer_id, "EUR");
    let first = app
        .account
        .clone()
        .open_account(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = app
        .account
        .clone()
        .open_account(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    assert_eq!(app.count("account.account").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customers_accounts_are_listed_page_by_page() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let other = app.verified_customer().await;
    let mut opened = Vec::new();
    for currency in ["USD", "EUR", "GBP"] {
        opened.push(app.open_account(&customer_id, currency).await.account_id);
    }
    app.open_account(&other, "USD").await;

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .account
            .clone()
            .list_accounts(pb::ListAccountsRequest {
                customer_id: customer_id.clone(),
                page_size: 2,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.len() <= 2);
        seen.extend(page.accounts.into_iter().map(|a| a.account_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, opened);
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_an_unknown_or_malformed_id_says_which() {
    let app = TestApp::spawn().await;
    let unknown = app
        .account
        .clone()
        .get_account(pb::GetAccountRequest {
            account_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "ACCOUNT_NOT_FOUND");
    let malformed = app
        .account
        .clone()
        .get_balance(pb::GetBalanceRequest {
            account_id: "42".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&malformed), ["account_id"]);
    let journal = app
        .account
        .clone()
        .get_journal(pb::GetJournalRequest {
            journal_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&journal), "JOURNAL_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_account_takes_no_deposit_until_unfrozen() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    let frozen = app
        .account
        .clone()
        .freeze_account(action(&account.account_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(frozen.status, pb::AccountStatus::Frozen as i32);

    let reply = app
        .command(&SagaCommands::new().deposit(&account.account_id, usd("10")))
        .await;
    assert_eq!(rejected(&reply), "ACCOUNT_FROZEN");

    let again = app
        .account
        .clone()
        .freeze_account(action(&account.account_id))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "ACCOUNT_FROZEN");
    let active = app
        .account
        .clone()
        .unfreeze_account(action(&account.account_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.status, pb::AccountStatus::Active as i32);
    app.deposit(&account.account_id, "10").await;

    let history: Vec<(String, String, String)> = sqlx::query_as(
        "select action, actor, reason from account.account_event where account_id = $1::uuid order by account_event_id",
    )
    .bind(&account.account_id)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    let actions: Vec<&str> = history
        .iter()
        .map(|(action, _, _)| action.as_str())
        .collect();
    assert_eq!(actions, ["open", "freeze", "unfreeze"]);
    // The caller's token subject, not the request's `actor`.
    assert_eq!(history[1].1, corebank_tests::harness::OPERATOR);
    assert_eq!(history[1].2, "court order 12");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lifecycle_request_without_actor_or_reason_is_refused() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    let request = pb::AccountActionRequest {
        account_id: account.account_id.clone(),
        idempotency_key: key(),
        actor: String::new(),
        reason: " ".to_owned(),
    };
    let status = app
        .account
        .clone()
        .freeze_account(request)
        .await
        .unwrap_err();
    // The actor comes from the token, so only the reason can be missing.
    assert_eq!(violated_fields(&status), ["reason"]);
    assert_eq!(app.count("account.account_event").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_empty_account_can_be_closed_and_a_closed_one_refuses_everything() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    app.deposit(&account.account_id, "10").await;
    let status = app
        .account
        .clone()
        .close_account(action(&account.account_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "ACCOUNT_NOT_EMPTY");

    let cash_out = SagaCommands::new();
    let reply = app
        .command(&cash_out.reserve(&account.account_id, usd("10")))
        .await;
    assert!(succeeded(&reply), "{reply:?}");
    let reply = app.command(&cash_out.post(&account.account_id, "")).await;
    assert!(succeeded(&reply), "{reply:?}");
    let closed = app
        .account
        .clone()
        .close_account(action(&account.account_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.status, pb::AccountStatus::Closed as i32);

    let reply = app
        .command(&SagaCommands::new().deposit(&account.account_id, usd("1")))
        .await;
    assert_eq!(rejected(&reply), "ACCOUNT_CLOSED");
    let reply = app
        .command(&SagaCommands::new().reserve(&account.account_id, usd("1")))
        .await;
    assert_eq!(rejected(&reply), "ACCOUNT_CLOSED");
    for result in [
        app.account
            .clone()
            .freeze_account(action(&account.account_id))
            .await,
        app.account
            .clone()
            .unfreeze_account(action(&account.account_id))
            .await,
        app.account
            .clone()
            .close_account(action(&account.account_id))
            .await,
    ] {
        assert_eq!(reason(&result.unwrap_err()), "ACCOUNT_CLOSED");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_with_an_active_hold_cannot_be_closed() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let mut request = open_request(&customer_id, "USD");
    request.overdraft_limit = "50".to_owned();
    let account = app
        .account
        .clone()
        .open_account(request)
        .await
        .unwrap()
        .into_inner();
    app.kyc_mirrored(&customer_id).await;
    let reply = app
        .command(&SagaCommands::new().reserve(&account.account_id, usd("20")))
        .await;
    assert!(succeeded(&reply), "{reply:?}");
    let status = app
        .account
        .clone()
        .close_account(action(&account.account_id))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "ACCOUNT_HAS_ACTIVE_HOLDS");
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_an_account_while_the_customer_service_is_down_is_unavailable_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    // Nothing listens on a port just released.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let isolated = corebank_account::Application::build(
        corebank_account::Settings {
            pool: app.db.service_pool(&corebank_account::SCHEMA, 2).await,
            clock: app.clock.clone(),
            requests: Default::default(),
            customer_endpoint: format!("http://{unused}"),
            broker: corebank_tests::harness::broker(&app.namespace, "isolated-account"),
            auth: corebank_platform::auth::ServiceAuth::development(&app.auth_key, "account"),
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the service starts without the customer service");
    let addr = isolated.local_addr();
    tokio::spawn(isolated.run_until_stopped(app.shutdown.clone()));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let mut client = pb::account_service_client::AccountServiceClient::new(
        app.credentials.connect_lazy(endpoint).unwrap(),
    );
    let status = client
        .open_account(open_request(&customer_id, "USD"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(app.count("account.account").await, 0);
}
