//! The whole system as a real process, killed with SIGKILL while sagas are in
//! flight and started again: every saga ends and no money is lost or made.

use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_platform::auth::{
    Audience, Credentials, DevKey, PARTNER_SCOPES, STAFF_SCOPES, TokenSpec,
};
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;
use corebank_tests::harness::{TestDb, admin_url, lease_namespace, usd};
use tonic::service::interceptor::InterceptedService;

mod common;
use common::{connect, free_ports, port, spawn_corebank};

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corebank_killed_mid_saga_finishes_every_saga_after_a_restart_and_loses_no_money() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let namespace = lease.namespace();
    let (base, _) = admin_url()
        .rsplit_once('/')
        .map(|(b, d)| (b.to_owned(), d.to_owned()))
        .unwrap();
    let database_url = format!("{base}/{}", db.name);
    let ports = free_ports();
    let key_path = std::env::temp_dir().join(format!("{}-signing.key.pem", db.name));
    let signing_key = DevKey::load_or_create_at(&key_path).expect("a token signing key");
    let operator = Credentials::signed(
        signing_key,
        TokenSpec::new(
            "operator-crash-test",
            [STAFF_SCOPES, PARTNER_SCOPES].concat().join(" "),
            Audience::Internal,
        ),
    );
    let authed = |channel| InterceptedService::new(channel, operator.clone());
    let mut corebank = spawn_corebank(&database_url, namespace.as_str(), &ports, &key_path);

    let mut customers = CustomerServiceClient::new(authed(connect(port(&ports, "customer")).await));
    let mut accounts = AccountServiceClient::new(authed(connect(port(&ports, "account")).await));
    let mut transactions =
        TransactionServiceClient::new(authed(connect(port(&ports, "transaction")).await));
    for service in SERVICES {
        connect(port(&ports, service.name())).await;
    }

    let mut account_ids = Vec::new();
    for i in 0..6 {
        let customer = customers
            .create_customer(pb::CreateCustomerRequest {
                idempotency_key: key(),
                legal_name: format!("Crash Test {i}"),
                email: format!("crash{i}.{}@example.com", &key()[24..]),
                phone: String::new(),
                date_of_birth: "1985-05-05".to_owned(),
                country: "FR".to_owned(),
                national_id: format!("CRASH{i}X"),
            })
            .await
            .unwrap()
            .into_inner();
        customers
            .verify_customer(pb::KycTransitionRequest {
                customer_id: customer.customer_id.clone(),
                idempotency_key: key(),
                actor: "test".to_owned(),
                reason: "ok".to_owned(),
            })
            .await
            .unwrap();
        let account = accounts
            .open_account(pb::OpenAccountRequest {
                idempotency_key: key(),
                customer_id: customer.customer_id,
                currency: "USD".to_owned(),
                product: pb::AccountProduct::Checking as i32,
                overdraft_limit: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let deposit = transactions
            .create_deposit(pb::CreateDepositRequest {
                idempotency_key: key(),
                account_id: account.account_id.clone(),
                amount: Some(usd("500.00")),
                description: String::new(),
                wait: Some(prost_types::Duration {
                    seconds: 20,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            deposit.status,
            pb::TransactionStatus::Completed as i32,
            "{deposit:?}"
        );
        account_ids.push(account.account_id);
    }

    // Many transfers in flight, then the whole process dies without warning.
    let mut accepted = 0;
    for i in 0..150_usize {
        let request = pb::CreateTransferRequest {
            idempotency_key: key(),
            source_account_id: account_ids[i % 6].clone(),
            destination_account_id: account_ids[(i + 1 + i / 6) % 6].clone(),
            amount: Some(usd(&format!("{}.25", 1 + i % 30))),
            description: String::new(),
            wait: None,
        };
        if request.source_account_id != request.destination_account_id {
            transactions.create_transfer(request).await.unwrap();
            accepted += 1;
        }
    }
    corebank.start_kill().unwrap();
    corebank.wait().await.unwrap();
    let in_flight: i64 = sqlx::query_scalar(
        "select count(*) from transaction.transaction where status not in ('completed', 'failed')",
    )
    .fetch_one(&db.owner)
    .await
    .unwrap();
    assert!(in_flight > 0, "the kill should catch sagas in flight");

    let _corebank = spawn_corebank(&database_url, namespace.as_str(), &ports, &key_path);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "select count(*) from transaction.transaction where status not in ('completed', 'failed')",
        )
        .fetch_one(&db.owner)
        .await
        .unwrap();
        if unfinished == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{unfinished} transactions never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let transfers: i64 =
        sqlx::query_scalar("select count(*) from transaction.transaction where kind = 'transfer'")
            .fetch_one(&db.owner)
            .await
            .unwrap();
    assert_eq!(transfers, accepted);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = corebank_audit::check(&db.owner).await.unwrap();
        if report.ok() || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(report.ok(), "{:?}", report.violations());
    let customer_money: rust_decimal::Decimal = sqlx::query_scalar(
        "select sum(ledger_balance) from account.account where product <> 'settlement'",
    )
    .fetch_one(&db.owner)
    .await
    .unwrap();
    assert_eq!(customer_money, rust_decimal::Decimal::from(3000));
    drop(_corebank);
    let _ = std::fs::remove_file(&key_path);
}
