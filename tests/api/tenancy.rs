//! Tenancy (OWASP API1): a partner reaches only its own customers, their
//! accounts and their transactions; anything else answers NOT_FOUND, exactly
//! like an unknown id, and lists hold only its own. Partners are reached as
//! the REST gateway reaches the services: the gateway's token with the
//! partner's token forwarded on its behalf.

use corebank_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{Clients, TestApp, key, reason, usd};

const PARTNER_SCOPES: &str = "customers:read customers:write accounts:read accounts:write \
                              payments:write transactions:read statements:read";

/// A partner's verified customer (verified by bank staff) and an account
/// of it funded with `funds` USD by the partner's own deposit.
async fn partner_account(app: &TestApp, partner: &Clients, funds: &str) -> (String, String) {
    let customer_id = partner
        .customer
        .clone()
        .create_customer(app.new_customer_request())
        .await
        .expect("a partner creates its customer")
        .into_inner()
        .customer_id;
    app.customer
        .clone()
        .verify_customer(pb::KycTransitionRequest {
            customer_id: customer_id.clone(),
            idempotency_key: key(),
            actor: String::new(),
            reason: "documents checked".to_owned(),
        })
        .await
        .expect("staff verify the customer");
    let account_id = partner
        .account
        .clone()
        .open_account(pb::OpenAccountRequest {
            idempotency_key: key(),
            customer_id: customer_id.clone(),
            currency: "USD".to_owned(),
            product: pb::AccountProduct::Checking as i32,
            overdraft_limit: String::new(),
        })
        .await
        .expect("a partner opens an account for its customer")
        .into_inner()
        .account_id;
    let deposit = partner
        .transaction
        .clone()
        .create_deposit(pb::CreateDepositRequest {
            idempotency_key: key(),
            account_id: account_id.clone(),
            amount: Some(usd(funds)),
            description: "funding".to_owned(),
            wait: Some(prost_types::Duration {
                seconds: 20,
                nanos: 0,
            }),
        })
        .await
        .expect("a partner deposits into its account")
        .into_inner();
    let deposit = app.terminal(&deposit.transaction_id).await;
    assert_eq!(deposit.status, pb::TransactionStatus::Completed as i32);
    (customer_id, account_id)
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, tonic::Status>, expected: &str) {
    let status = result.expect_err("another partner's object must not be reached");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(reason(&status), expected, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_neither_reads_nor_changes_another_partners_customers() {
    let app = TestApp::spawn().await;
    let acme = app.partner("acme", PARTNER_SCOPES).await;
    let globex = app.partner("globex", PARTNER_SCOPES).await;
    let ours = acme
        .customer
        .clone()
        .create_customer(app.new_customer_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ours.partner_id, "acme", "the creating partner owns it");
    let theirs = globex
        .customer
        .clone()
        .create_customer(app.new_customer_request())
        .await
        .unwrap()
        .into_inner();

    assert_not_found(
        globex
            .customer
            .clone()
            .get_customer(pb::GetCustomerRequest {
                customer_id: ours.customer_id.clone(),
                reveal_national_id: false,
            })
            .await,
        "CUSTOMER_NOT_FOUND",
    );
    assert_not_found(
        globex
            .customer
            .clone()
            .update_customer(pb::UpdateCustomerRequest {
                customer_id: ours.customer_id.clone(),
                idempotency_key: key(),
                email: Some("taken.over@example.com".to_owned()),
                phone: None,
            })
            .await,
        "CUSTOMER_NOT_FOUND",
    );
    assert_not_found(
        globex
            .customer
            .clone()
            .list_kyc_events(pb::ListKycEventsRequest {
                customer_id: ours.customer_id.clone(),
                page_size: 0,
                page_token: String::new(),
            })
            .await,
        "CUSTOMER_NOT_FOUND",
    );
    let listed = |clients: &Clients| {
        let mut client = clients.customer.clone();
        async move {
            client
                .list_customers(pb::ListCustomersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .customers
                .into_iter()
                .map(|c| c.customer_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&acme).await, std::slice::from_ref(&ours.customer_id));
    assert_eq!(
        listed(&globex).await,
        std::slice::from_ref(&theirs.customer_id)
    );
    // Staff are not tenant-bound.
    assert_eq!(listed(&app.clients(&app.credentials).await).await.len(), 2);
    let unchanged = app
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: ours.customer_id,
            reveal_national_id: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged.email, ours.email);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_neither_opens_nor_reads_nor_freezes_another_partners_accounts() {
    let app = TestApp::spawn().await;
    let acme = app.partner("acme", PARTNER_SCOPES).await;
    let globex = app.partner("globex", PARTNER_SCOPES).await;
    let (customer_id, account_id) = partner_account(&app, &acme, "100").await;

    assert_not_found(
        globex
            .account
            .clone()
            .open_account(pb::OpenAccountRequest {
                idempotency_key: key(),
                customer_id: customer_id.clone(),
                currency: "USD".to_owned(),
                product: pb::AccountProduct::Checking as i32,
                overdraft_limit: String::new(),
            })
            .await,
        "CUSTOMER_NOT_FOUND",
    );
    let get = pb::GetAccountRequest {
        account_id: account_id.clone(),
    };
    assert_not_found(
        globex.account.clone().get_account(get).await,
        "ACCOUNT_NOT_FOUND",
    );
    assert_not_found(
        globex
            .account
            .clone()
            .get_balance(pb::GetBalanceRequest {
                account_id: account_id.clone(),
            })
            .await,
        "ACCOUNT_NOT_FOUND",
    );
    assert_not_found(
        globex
            .account
            .clone()
            .list_entries(pb::ListEntriesRequest {
                account_id: account_id.clone(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_NOT_FOUND",
    );
    assert_not_found(
        globex
            .account
            .clone()
            .freeze_account(pb::AccountActionRequest {
                account_id: account_id.clone(),
                idempotency_key: key(),
                actor: String::new(),
                reason: "hostile".to_owned(),
            })
            .await,
        "ACCOUNT_NOT_FOUND",
    );
    let listed = globex
        .account
        .clone()
        .list_accounts(pb::ListAccountsRequest {
            customer_id: customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.accounts.is_empty(), "{listed:?}");
    let own = acme
        .account
        .clone()
        .list_accounts(pb::ListAccountsRequest {
            customer_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.accounts.len(), 1);
    assert_eq!(own.accounts[0].partner_id, "acme");
    assert_eq!(own.accounts[0].status, pb::AccountStatus::Active as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partner_neither_moves_nor_sees_another_partners_money() {
    let app = TestApp::spawn().await;
    let acme = app.partner("acme", PARTNER_SCOPES).await;
    let globex = app.partner("globex", PARTNER_SCOPES).await;
    let (_, ours) = partner_account(&app, &acme, "100").await;
    let (_, theirs) = partner_account(&app, &globex, "5").await;
    let transactions_before = app.count("transaction.transaction").await;

    assert_not_found(
        globex
            .transaction
            .clone()
            .create_transfer(pb::CreateTransferRequest {
                idempotency_key: key(),
                source_account_id: ours.clone(),
                destination_account_id: theirs.clone(),
                amount: Some(usd("100")),
                description: "theft".to_owned(),
                wait: None,
            })
            .await,
        "ACCOUNT_NOT_FOUND",
    );
    assert_not_found(
        globex
            .transaction
            .clone()
            .create_withdrawal(pb::CreateWithdrawalRequest {
                idempotency_key: key(),
                account_id: ours.clone(),
                amount: Some(usd("100")),
                description: "theft".to_owned(),
                wait: None,
            })
            .await,
        "ACCOUNT_NOT_FOUND",
    );
    assert_eq!(
        app.count("transaction.transaction").await,
        transactions_before,
        "nothing was started"
    );

    // acme pays globex: both see that transfer; globex sees nothing else of acme's.
    let paid = acme
        .transaction
        .clone()
        .create_transfer(pb::CreateTransferRequest {
            idempotency_key: key(),
            source_account_id: ours.clone(),
            destination_account_id: theirs.clone(),
            amount: Some(usd("10")),
            description: "invoice 7".to_owned(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    let paid = app.terminal(&paid.transaction_id).await;
    assert_eq!(paid.status, pb::TransactionStatus::Completed as i32);
    let seen = globex
        .transaction
        .clone()
        .get_transaction(pb::GetTransactionRequest {
            transaction_id: paid.transaction_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.transaction_id, paid.transaction_id);
    let funding = acme
        .transaction
        .clone()
        .list_transactions(pb::ListTransactionsRequest {
            account_id: ours.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .transactions;
    let deposit_id = funding
        .iter()
        .find(|t| t.kind == pb::TransactionKind::Deposit as i32)
        .expect("acme's funding deposit")
        .transaction_id
        .clone();
    assert_not_found(
        globex
            .transaction
            .clone()
            .get_transaction(pb::GetTransactionRequest {
                transaction_id: deposit_id.clone(),
            })
            .await,
        "TRANSACTION_NOT_FOUND",
    );
    let watched = globex
        .transaction
        .clone()
        .watch_transaction(pb::GetTransactionRequest {
            transaction_id: deposit_id,
        })
        .await;
    assert_not_found(watched.map(|_| ()), "TRANSACTION_NOT_FOUND");
    assert_not_found(
        globex
            .transaction
            .clone()
            .list_transactions(pb::ListTransactionsRequest {
                account_id: ours.clone(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_NOT_FOUND",
    );
    assert_not_found(
        globex
            .reporting
            .clone()
            .get_statement(pb::GetStatementRequest {
                account_id: ours.clone(),
                ..Default::default()
            })
            .await,
        "ACCOUNT_NOT_FOUND",
    );
    let totals = globex
        .reporting
        .clone()
        .list_daily_totals(pb::ListDailyTotalsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        totals.code(),
        Code::InvalidArgument,
        "a partner names its account"
    );
    assert_eq!(
        app.balance(&ours).await.ledger.unwrap().amount,
        "90.00",
        "only acme's own transfer moved its money"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_partners_idempotency_key_never_replays_another_partners_response() {
    let app = TestApp::spawn().await;
    let acme = app.partner("acme", PARTNER_SCOPES).await;
    let globex = app.partner("globex", PARTNER_SCOPES).await;
    let request = app.new_customer_request();
    let first = acme
        .customer
        .clone()
        .create_customer(request.clone())
        .await
        .unwrap()
        .into_inner();
    // globex guesses acme's key and body: it must not get acme's customer back.
    let status = globex
        .customer
        .clone()
        .create_customer(request)
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert!(!status.message().contains(&first.customer_id), "{status:?}");
}
