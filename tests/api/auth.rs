//! Every gRPC port authenticates its caller: internal tokens only (a partner
//! token goes through the gateway's delegation), each method's declared
//! scope, health open for probes, and actors taken from the token.

use std::net::SocketAddr;

use corebank_platform::auth::{
    AUDIT_READS, AUDIT_SCOPE, Audience, Claims, Credentials, DEFAULT_INTERNAL_AUDIENCE,
    DEFAULT_ISSUER, PARTNER_SCOPES, STAFF_SCOPES, method_scopes,
};
use corebank_proto::v1 as pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{TestApp, key, reason, spoilt_tokens, unix_now};

/// Every scope there is: what a token needs to pass every method's check.
fn every_scope() -> Vec<&'static str> {
    STAFF_SCOPES.iter().chain(PARTNER_SCOPES).copied().collect()
}

/// Where the service serving `path` (`/corebank.v1.X/Method`) listens.
fn port_of(app: &TestApp, path: &str) -> SocketAddr {
    let service = path.trim_start_matches('/').split('/').next().unwrap();
    match service {
        "corebank.v1.CustomerService" => app.customer_addr,
        "corebank.v1.AccountService" => app.account_addr,
        "corebank.v1.TransactionService" => app.transaction_addr,
        "corebank.v1.SagaAdminService" => app.orchestrator_addr,
        "corebank.v1.FraudService" => app.fraud_addr,
        "corebank.v1.ReportingService" => app.reporting_addr,
        other => panic!("{other}: which port serves it? add it here"),
    }
}

/// Calls `path` with an empty message; the status it answers.
async fn call(addr: SocketAddr, path: &str, credentials: &Credentials) -> tonic::Status {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let mut grpc = tonic::client::Grpc::new(credentials.connect_lazy(endpoint).unwrap());
    grpc.ready().await.expect("the server is up");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

fn bearer(token: &str) -> Credentials {
    Credentials::bearer(token).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_of_every_port_refuses_an_anonymous_caller_and_a_partner_token() {
    let app = TestApp::spawn().await;
    let partner = bearer(&app.token("partner-a", &every_scope().join(" "), Audience::Partner));
    assert!(method_scopes().len() > 40);
    for path in method_scopes().keys() {
        let addr = port_of(&app, path);
        let anonymous = call(addr, path, &Credentials::anonymous()).await;
        assert_eq!(anonymous.code(), Code::Unauthenticated, "{path} anonymous");
        let refused = call(addr, path, &partner).await;
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{path} partner token"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_the_scope_a_method_declares_is_permission_denied() {
    let app = TestApp::spawn().await;
    for (path, scope) in method_scopes() {
        let scope = scope.unwrap_or_else(|| panic!("{path} declares no scope"));
        // An auditor reads accounts, transactions and statements by
        // `audit:read`: without the scope means without that too.
        let others: Vec<_> = every_scope()
            .into_iter()
            .filter(|other| *other != scope)
            .filter(|other| !(AUDIT_READS.contains(&scope) && *other == AUDIT_SCOPE))
            .collect();
        let token = app.token("staff-1", &others.join(" "), Audience::Internal);
        let status = call(port_of(&app, path), path, &bearer(&token)).await;
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{path} without {scope}"
        );
        assert_eq!(reason(&status), "MISSING_SCOPE", "{path}");
    }
}

/// Claims of a valid operator token, to spoil one at a time.
fn operator_claims() -> Claims {
    let now = unix_now();
    Claims {
        sub: "operator-1".to_owned(),
        iss: DEFAULT_ISSUER.to_owned(),
        aud: DEFAULT_INTERNAL_AUDIENCE.to_owned(),
        exp: now + 600,
        nbf: Some(now),
        iat: Some(now),
        scope: every_scope().join(" "),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_early_foreign_forged_and_unsigned_tokens_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let valid = app.auth_key.sign(&operator_claims()).unwrap();
    let cases = spoilt_tokens(&app.auth_key, &operator_claims());

    let path = "/corebank.v1.CustomerService/ListCustomers";
    assert_eq!(
        call(app.customer_addr, path, &bearer(&valid)).await.code(),
        Code::Ok,
        "the unspoilt token works"
    );
    for (what, token) in cases {
        let status = call(app.customer_addr, path, &bearer(&token)).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_probes_without_a_token_on_every_port() {
    let app = TestApp::spawn().await;
    for addr in [
        app.customer_addr,
        app.account_addr,
        app.transaction_addr,
        app.orchestrator_addr,
        app.fraud_addr,
        app.reporting_addr,
    ] {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let mut health = HealthClient::new(endpoint.connect_lazy());
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("{addr}: {status}"));
        assert_eq!(answer.into_inner().status, 1, "{addr} SERVING");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_needs_a_token() {
    let app = TestApp::spawn().await;
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let status = call(app.account_addr, path, &Credentials::anonymous()).await;
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_actor_of_a_kyc_transition_is_the_tokens_subject_not_the_request_field() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let analyst = app.token(
        "kyc-analyst-42",
        "kyc:write customers:read",
        Audience::Internal,
    );
    let mut customers = app.clients_with_token(&analyst).await.customer;
    customers
        .verify_customer(pb::KycTransitionRequest {
            customer_id: customer_id.clone(),
            idempotency_key: key(),
            actor: "mallory".to_owned(),
            reason: "documents checked".to_owned(),
        })
        .await
        .unwrap();
    let events = customers
        .list_kyc_events(pb::ListKycEventsRequest {
            customer_id,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .kyc_events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "kyc-analyst-42");
}

#[tokio::test(flavor = "multi_thread")]
async fn revealing_a_national_id_needs_kyc_write() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let request = |reveal| pb::GetCustomerRequest {
        customer_id: customer_id.clone(),
        reveal_national_id: reveal,
    };
    // Staff (not tenant-bound) who may read customers, but not KYC staff.
    let reader = app.token("auditor-1", "customers:read audit:read", Audience::Internal);
    let mut customers = app.clients_with_token(&reader).await.customer;
    let masked = customers.get_customer(request(false)).await.unwrap();
    assert!(masked.into_inner().national_id.contains('*'));
    let status = customers.get_customer(request(true)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "MISSING_SCOPE");

    let revealed = app
        .customer
        .clone()
        .get_customer(request(true))
        .await
        .unwrap()
        .into_inner();
    assert!(!revealed.national_id.contains('*'));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_delegate_may_act_for_a_forwarded_partner_token_and_then_only_with_its_scopes() {
    let app = TestApp::spawn().await;
    let customer_id = app.pending_customer().await;
    let partner = app.token(
        "partner-a",
        "customers:read customers:write",
        Audience::Partner,
    );
    let verify = pb::KycTransitionRequest {
        customer_id,
        idempotency_key: key(),
        actor: String::new(),
        reason: "looks fine".to_owned(),
    };

    // The gateway's token alone carries no staff scope, and forwarding a
    // partner's token does not add one.
    let mut as_partner = app.on_behalf_of(&partner).await.customer;
    let status = as_partner
        .verify_customer(verify.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // An operator token without `delegate` cannot switch to another principal.
    let operator = app.token("operator-1", &every_scope().join(" "), Audience::Internal);
    let forwarding = Credentials::bearer(&operator)
        .unwrap()
        .on_behalf_of(&partner)
        .unwrap();
    let status = call(
        app.customer_addr,
        "/corebank.v1.CustomerService/ListCustomers",
        &forwarding,
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied);

    // A forwarded token must be a partner token.
    let internal = app.token("operator-1", &every_scope().join(" "), Audience::Internal);
    let mut smuggled = app.on_behalf_of(&internal).await.customer;
    let status = smuggled.verify_customer(verify).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auditor_reads_every_account_its_transactions_and_statements_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let from = app.funded_account("100.00").await;
    let to = app
        .open_account(&app.verified_customer().await, "USD")
        .await;
    let transfer = app
        .transfer(&from.account_id, &to.account_id, "25.00")
        .await;
    let auditor = app
        .clients(&bearer(&app.token(
            "auditor-1",
            AUDIT_SCOPE,
            Audience::Internal,
        )))
        .await;
    let balance = auditor
        .account
        .clone()
        .get_balance(pb::GetBalanceRequest {
            account_id: from.account_id.clone(),
        })
        .await
        .expect("an auditor reads any balance")
        .into_inner();
    assert_eq!(balance.ledger.expect("ledger").amount, "75.00");
    auditor
        .account
        .clone()
        .list_entries(pb::ListEntriesRequest {
            account_id: from.account_id.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("and its entries");
    auditor
        .transaction
        .clone()
        .get_transaction(pb::GetTransactionRequest {
            transaction_id: transfer.transaction_id.clone(),
        })
        .await
        .expect("and its transactions");
    auditor
        .reporting
        .clone()
        .get_statement(pb::GetStatementRequest {
            account_id: from.account_id.clone(),
            ..Default::default()
        })
        .await
        .expect("and its statements");

    // Read only, and accounts only: no write, no customer's personal data.
    let frozen = auditor
        .account
        .clone()
        .freeze_account(pb::AccountActionRequest {
            account_id: from.account_id.clone(),
            idempotency_key: key(),
            actor: String::new(),
            reason: "audit".to_owned(),
        })
        .await
        .expect_err("an auditor freezes nothing");
    assert_eq!(frozen.code(), Code::PermissionDenied);
    let customer = auditor
        .customer
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: from.customer_id.clone(),
            reveal_national_id: false,
        })
        .await
        .expect_err("an auditor reads no customer");
    assert_eq!(customer.code(), Code::PermissionDenied);
}
