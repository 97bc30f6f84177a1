//! The partner edge tried as an attacker would, through REST against every
//! running service, one test per item of the OWASP API Security Top 10
//! (2023) the gateway answers for.

use corebank_gateway::routes::BodyRule;
use corebank_gateway::routes::RouteTable;
use corebank_platform::auth::{
    Audience, Claims, DEFAULT_ISSUER, DEFAULT_PARTNER_AUDIENCE, STAFF_SCOPES,
};
use http::{Method, StatusCode};
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Rest;
use crate::helpers::*;

fn reason_of(response: &corebank_gateway::testing::HttpResponse) -> String {
    response.json()["details"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn api1_a_partner_neither_reads_nor_moves_another_partners_objects() {
    let app = TestApp::spawn().await;
    let (owner, intruder) = (Rest::new(&app), Rest::new(&app));
    let (from, to) = owner.funded_accounts().await;
    let (intruders_account, _) = intruder.funded_accounts().await;
    let transfer = owner
        .post(
            &owner.partner,
            "/v1/transfers",
            Some(&key()),
            &json!({"sourceAccountId": from, "destinationAccountId": to,
                    "amount": {"currency": "USD", "amount": "40.00"}, "wait": "20s"}),
        )
        .await;
    assert_eq!(transfer.status, StatusCode::OK, "{}", transfer.text());
    let transaction = transfer.json()["transactionId"]
        .as_str()
        .expect("id")
        .to_owned();
    let account = owner
        .get(&owner.partner, &format!("/v1/accounts/{from}"))
        .await;
    let customer = account.json()["customerId"]
        .as_str()
        .expect("id")
        .to_owned();

    // Each read of the owner's objects, and the same read of an id that
    // never existed: the intruder gets the same answer for both, so it
    // learns not even that the object exists.
    let unknown = Uuid::now_v7().to_string();
    for (path, ids) in [
        ("/v1/customers/{}", &customer),
        ("/v1/customers/{}/accounts", &customer),
        ("/v1/customers/{}/kycEvents", &customer),
        ("/v1/accounts/{}", &from),
        ("/v1/accounts/{}/balance", &from),
        ("/v1/accounts/{}/entries", &from),
        ("/v1/accounts/{}/transactions", &from),
        ("/v1/accounts/{}/statement", &from),
        ("/v1/transactions/{}", &transaction),
    ] {
        let real = path.replace("{}", ids);
        let own = owner.get(&owner.partner, &real).await;
        assert_eq!(own.status, StatusCode::OK, "{real}: {}", own.text());
        let foreign = intruder.get(&intruder.partner, &real).await;
        let never = intruder
            .get(&intruder.partner, &path.replace("{}", &unknown))
            .await;
        assert_eq!(foreign.status, never.status, "{path}: {}", foreign.text());
        assert_eq!(reason_of(&foreign), reason_of(&never), "{path}");
        if foreign.status == StatusCode::OK {
            let listed = foreign.json();
            let items = listed.as_object().expect("a list").values();
            assert!(
                items.filter_map(Value::as_array).all(Vec::is_empty),
                "{path}: a list of another partner's objects is empty: {listed}"
            );
        } else {
            assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{path}");
            assert!(reason_of(&foreign).ends_with("_NOT_FOUND"), "{path}");
        }
    }

    let money = |source: &str, destination: &str| {
        json!({"sourceAccountId": source, "destinationAccountId": destination,
               "amount": {"currency": "USD", "amount": "10.00"}})
    };
    let writes = [
        (
            Method::PATCH,
            format!("/v1/customers/{customer}"),
            json!({"email": "mallory@example.com"}),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{from}:freeze"),
            json!({"reason": "mine now"}),
        ),
        (
            Method::POST,
            "/v1/accounts".to_owned(),
            json!({"customerId": customer, "currency": "USD", "product": "ACCOUNT_PRODUCT_CHECKING"}),
        ),
        (
            Method::POST,
            "/v1/transfers".to_owned(),
            money(&from, &intruders_account),
        ),
        (
            Method::POST,
            "/v1/withdrawals".to_owned(),
            json!({"accountId": from, "amount": {"currency": "USD", "amount": "10.00"}}),
        ),
    ];
    for (method, path, body) in writes {
        let response = intruder
            .client
            .send(
                method.clone(),
                &path,
                &[
                    ("authorization", &intruder.partner),
                    ("content-type", "application/json"),
                    ("idempotency-key", &key()),
                ],
                serde_json::to_vec(&body).unwrap(),
            )
            .await
            .expect("http");
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            response.text()
        );
    }

    let listed = |rest: &Rest| {
        let rest = rest.clone();
        async move {
            let response = rest.get(&rest.partner, "/v1/customers?pageSize=100").await;
            assert_eq!(response.status, StatusCode::OK, "{}", response.text());
            response.json()["customers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c["customerId"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    assert!(listed(&owner).await.contains(&customer));
    assert!(!listed(&intruder).await.contains(&customer));

    // Nothing the intruder tried changed the owner's money or account.
    let balance = owner
        .get(&owner.partner, &format!("/v1/accounts/{from}/balance"))
        .await
        .json();
    assert_eq!(balance["available"]["amount"], "460.00", "{balance}");
    let account = owner
        .get(&owner.partner, &format!("/v1/accounts/{from}"))
        .await
        .json();
    assert_eq!(account["status"], "ACCOUNT_STATUS_ACTIVE", "{account}");
    app.assert_invariants().await;
}

#[tokio::test]
async fn api2_missing_spoilt_and_internal_tokens_are_401_at_the_edge() {
    let app = TestApp::spawn().await;
    let rest = Rest::new(&app);
    let now = unix_now();
    let claims = Claims {
        sub: "partner-spoilt".to_owned(),
        iss: DEFAULT_ISSUER.to_owned(),
        aud: DEFAULT_PARTNER_AUDIENCE.to_owned(),
        exp: now + 600,
        nbf: Some(now),
        iat: Some(now),
        scope: "customers:read".to_owned(),
    };
    let valid = format!("Bearer {}", app.auth_key.sign(&claims).unwrap());
    assert_eq!(
        rest.get(&valid, "/v1/customers").await.status,
        StatusCode::OK,
        "the unspoilt token works"
    );
    let mut cases = spoilt_tokens(&app.auth_key, &claims);
    // An internal token is for gRPC ports, never the partner edge.
    cases.push((
        "an internal token",
        app.token("operator-1", "customers:read", Audience::Internal),
    ));
    for (what, token) in cases {
        let response = rest.get(&format!("Bearer {token}"), "/v1/customers").await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            response.header("www-authenticate").is_some(),
            "{what}: a 401 names the scheme"
        );
    }
    let anonymous = rest.client.get("/v1/customers", &[]).await.expect("http");
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api3_fields_a_partner_may_not_set_are_refused_naming_them() {
    let app = TestApp::spawn().await;
    let rest = Rest::new(&app);
    let (account, _) = rest.funded_accounts().await;
    let customer = rest
        .get(&rest.partner, &format!("/v1/accounts/{account}"))
        .await
        .json()["customerId"]
        .as_str()
        .expect("id")
        .to_owned();
    let cases = [
        (
            "/v1/customers".to_owned(),
            json!({"legalName": "Eve", "email": "eve@example.com", "phone": "+441234567890",
                   "dateOfBirth": "1990-01-01", "country": "GB", "nationalId": "EVE12345",
                   "status": "CUSTOMER_STATUS_VERIFIED"}),
            "status",
        ),
        (
            "/v1/accounts".to_owned(),
            json!({"customerId": customer, "currency": "USD",
                   "product": "ACCOUNT_PRODUCT_CHECKING", "balance": "1000000.00"}),
            "balance",
        ),
        (
            "/v1/accounts".to_owned(),
            json!({"customerId": customer, "currency": "USD",
                   "product": "ACCOUNT_PRODUCT_CHECKING", "partnerId": "someone-else"}),
            "partnerId",
        ),
        (
            format!("/v1/accounts/{account}:freeze"),
            json!({"reason": "x", "owner": "mallory"}),
            "owner",
        ),
    ];
    let before = rest.get(&rest.partner, "/v1/customers").await.json();
    for (path, body, field) in cases {
        let response = rest.post(&rest.partner, &path, Some(&key()), &body).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{path} {field}");
        assert!(
            response.text().contains(field),
            "{path}: the error names {field}: {}",
            response.text()
        );
    }
    assert_eq!(
        rest.get(&rest.partner, "/v1/customers").await.json(),
        before,
        "nothing was created"
    );
    let status = rest
        .get(&rest.partner, &format!("/v1/accounts/{account}"))
        .await
        .json()["status"]
        .clone();
    assert_eq!(status, "ACCOUNT_STATUS_ACTIVE");
}

#[tokio::test]
async fn api4_a_burst_past_the_limit_is_429_for_that_partner_only_and_a_huge_body_413() {
    let app = TestApp::spawn().await;
    let (greedy, other) = (Rest::new(&app), Rest::new(&app));
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..250 {
        let greedy = greedy.clone();
        burst.spawn(async move {
            greedy
                .get(&greedy.partner, "/v1/customers?pageSize=1")
                .await
        });
    }
    let mut limited = Vec::new();
    while let Some(response) = burst.join_next().await {
        let response = response.expect("task");
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            limited.push(response);
        } else {
            assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        }
    }
    let first = limited.first().expect("a burst of 250 passes the limit");
    let retry_after: u64 = first
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(reason_of(first), "RATE_LIMITED", "{}", first.text());
    let during = other.get(&other.partner, "/v1/customers").await;
    assert_eq!(
        during.status,
        StatusCode::OK,
        "another partner is not limited"
    );

    let huge = "x".repeat(1 << 20);
    let response = other
        .post(
            &other.partner,
            "/v1/customers",
            Some(&key()),
            &json!({"legalName": huge}),
        )
        .await;
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn api5_a_partner_token_with_every_partner_scope_reaches_no_staff_route() {
    let app = TestApp::spawn().await;
    let rest = Rest::new(&app);
    let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let table = RouteTable::from_pool(&pool).expect("routes");
    let mut staff_routes = 0;
    for route in table.routes() {
        let Some(scope) = route.scope.as_deref() else {
            continue;
        };
        if !STAFF_SCOPES.contains(&scope) {
            continue;
        }
        staff_routes += 1;
        let mut path = route.template.openapi_path();
        for variable in route.template.variables() {
            path = path.replace(&format!("{{{}}}", variable.name()), &key());
        }
        let response = rest
            .client
            .send(
                route.http_method.clone(),
                &path,
                &[
                    ("authorization", &rest.partner),
                    ("content-type", "application/json"),
                    ("idempotency-key", &key()),
                ],
                match route.body {
                    BodyRule::None => Vec::new(),
                    _ => b"{}".to_vec(),
                },
            )
            .await
            .expect("http");
        assert_eq!(
            response.status,
            StatusCode::FORBIDDEN,
            "{} {path} needs {scope}: {}",
            route.http_method,
            response.text()
        );
    }
    // KYC, fraud decisions, saga admin, exports and more: all of them.
    assert!(staff_routes >= 20, "{staff_routes} staff routes");
}
