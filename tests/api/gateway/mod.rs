//! The REST gateway in front of every running service: a partner's walk
//! through customers, accounts and transfers over HTTP, idempotency through
//! the header, the watch stream, and every annotated RPC reached once.

use std::collections::BTreeSet;

use corebank_gateway::routes::{BodyRule, RouteTable};
use corebank_gateway::testing::{HttpClient, HttpResponse};
use corebank_platform::auth::Audience;
use http::StatusCode;
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

mod owasp;

/// Every RPC the REST suite reaches; a new annotated RPC fails
/// `every_annotated_rpc_is_reachable_through_rest` until it is listed here.
const REACHED: &[&str] = &[
    "corebank.v1.CustomerService.CreateCustomer",
    "corebank.v1.CustomerService.GetCustomer",
    "corebank.v1.CustomerService.ListCustomers",
    "corebank.v1.CustomerService.UpdateCustomer",
    "corebank.v1.CustomerService.VerifyCustomer",
    "corebank.v1.CustomerService.RejectCustomer",
    "corebank.v1.CustomerService.SuspendCustomer",
    "corebank.v1.CustomerService.ReinstateCustomer",
    "corebank.v1.CustomerService.ListKycEvents",
    "corebank.v1.AccountService.OpenAccount",
    "corebank.v1.AccountService.GetAccount",
    "corebank.v1.AccountService.ListAccounts",
    "corebank.v1.AccountService.GetBalance",
    "corebank.v1.AccountService.ListEntries",
    "corebank.v1.AccountService.FreezeAccount",
    "corebank.v1.AccountService.UnfreezeAccount",
    "corebank.v1.AccountService.CloseAccount",
    "corebank.v1.AccountService.GetHold",
    "corebank.v1.AccountService.GetJournal",
    "corebank.v1.AccountService.ListLedgerEntries",
    "corebank.v1.AccountService.GetLedgerSummary",
    "corebank.v1.TransactionService.CreateTransfer",
    "corebank.v1.TransactionService.CreateDeposit",
    "corebank.v1.TransactionService.CreateWithdrawal",
    "corebank.v1.TransactionService.GetTransaction",
    "corebank.v1.TransactionService.ListTransactions",
    "corebank.v1.TransactionService.WatchTransaction",
    "corebank.v1.SagaAdminService.ListSagas",
    "corebank.v1.SagaAdminService.GetSaga",
    "corebank.v1.SagaAdminService.RetrySaga",
    "corebank.v1.SagaAdminService.AbortSaga",
    "corebank.v1.FraudService.ListReviews",
    "corebank.v1.FraudService.GetReview",
    "corebank.v1.FraudService.DecideReview",
    "corebank.v1.FraudService.GetDecision",
    "corebank.v1.FraudService.ListAlerts",
    "corebank.v1.FraudService.GetRuleSet",
    "corebank.v1.FraudService.UpdateRuleSet",
    "corebank.v1.FraudService.AddToWatchlist",
    "corebank.v1.FraudService.RemoveFromWatchlist",
    "corebank.v1.FraudService.ListWatchlist",
    "corebank.v1.ReportingService.GetStatement",
    "corebank.v1.ReportingService.ListDailyTotals",
    "corebank.v1.ReportingService.CreateExport",
    "corebank.v1.ReportingService.GetExport",
    "corebank.v1.ReportingService.ListExports",
    "corebank.v1.ReportingService.DownloadExport",
    "corebank.v1.ReportingService.GetSigningKeys",
    "corebank.v1.ReportingService.Reconcile",
    "corebank.v1.ReportingService.GetReconciliation",
    "corebank.v1.ReportingService.ListReconciliations",
    "corebank.v1.ReportingService.RebuildReadModels",
    "corebank.v1.ReportingService.GetProjectionStatus",
];

#[derive(Clone)]
struct Rest {
    client: HttpClient,
    partner: String,
    staff: String,
}

impl Rest {
    fn new(app: &TestApp) -> Rest {
        let partner_scopes = corebank_platform::auth::PARTNER_SCOPES.join(" ");
        let staff_scopes = corebank_platform::auth::STAFF_SCOPES.join(" ");
        let subject = format!("partner-{}", Uuid::new_v4().simple());
        Rest {
            client: HttpClient::new(app.addr_of(Service::named("gateway"))),
            partner: format!(
                "Bearer {}",
                app.token(&subject, &partner_scopes, Audience::Partner)
            ),
            staff: format!(
                "Bearer {}",
                app.token("staff-1", &staff_scopes, Audience::Partner)
            ),
        }
    }

    async fn post(&self, token: &str, path: &str, key: Option<&str>, body: &Value) -> HttpResponse {
        let mut headers = vec![("authorization", token)];
        if let Some(key) = key {
            headers.push(("idempotency-key", key));
        }
        self.client.post(path, &headers, body).await.expect("http")
    }

    async fn get(&self, token: &str, path: &str) -> HttpResponse {
        self.client
            .get(path, &[("authorization", token)])
            .await
            .expect("http")
    }

    /// A verified customer with two funded USD accounts, all through REST.
    async fn funded_accounts(&self) -> (String, String) {
        let unique = Uuid::new_v4().simple().to_string();
        let customer = self
            .post(
                &self.partner,
                "/v1/customers",
                Some(&key()),
                &json!({
                    "legalName": "Ada Lovelace",
                    "email": format!("ada.{}@example.com", &unique[..12]),
                    "phone": "+441234567890",
                    "dateOfBirth": "1990-12-10",
                    "country": "GB",
                    "nationalId": format!("AB{}", &unique[..8]).to_uppercase(),
                }),
            )
            .await;
        assert_eq!(customer.status, StatusCode::OK, "{}", customer.text());
        let customer_id = customer.json()["customerId"]
            .as_str()
            .expect("id")
            .to_owned();
        let verified = self
            .post(
                &self.staff,
                &format!("/v1/customers/{customer_id}:verify"),
                Some(&key()),
                &json!({"reason": "documents checked"}),
            )
            .await;
        assert_eq!(verified.status, StatusCode::OK, "{}", verified.text());
        let mut accounts = Vec::new();
        for _ in 0..2 {
            let opened = self
                .post(
                    &self.partner,
                    "/v1/accounts",
                    Some(&key()),
                    &json!({"customerId": customer_id, "currency": "USD", "product": "ACCOUNT_PRODUCT_CHECKING"}),
                )
                .await;
            assert_eq!(opened.status, StatusCode::OK, "{}", opened.text());
            accounts.push(opened.json()["accountId"].as_str().expect("id").to_owned());
        }
        let deposit = self
            .post(
                &self.partner,
                "/v1/deposits",
                Some(&key()),
                &json!({"accountId": accounts[0], "amount": {"currency": "USD", "amount": "500.00"}, "wait": "20s"}),
            )
            .await;
        assert_eq!(deposit.status, StatusCode::OK, "{}", deposit.text());
        assert_eq!(
            deposit.json()["status"],
            "TRANSACTION_STATUS_COMPLETED",
            "{}",
            deposit.text()
        );
        (accounts[0].clone(), accounts[1].clone())
    }
}

#[tokio::test]
async fn a_transfer_through_rest_replays_on_the_same_key_and_refuses_another_request() {
    let app = TestApp::spawn().await;
    let rest = Rest::new(&app);
    let (source, destination) = rest.funded_accounts().await;
    let transfer = |amount: &str| {
        json!({
            "sourceAccountId": source,
            "destinationAccountId": destination,
            "amount": {"currency": "USD", "amount": amount},
            "wait": "20s"
        })
    };
    let same_key = key();
    let first = rest
        .post(
            &rest.partner,
            "/v1/transfers",
            Some(&same_key),
            &transfer("25.00"),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert!(first.header("idempotent-replayed").is_none());
    let again = rest
        .post(
            &rest.partner,
            "/v1/transfers",
            Some(&same_key),
            &transfer("25.00"),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["transactionId"], first.json()["transactionId"]);

    let other = rest
        .post(
            &rest.partner,
            "/v1/transfers",
            Some(&same_key),
            &transfer("26.00"),
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST, "{}", other.text());
    assert_eq!(
        other.json()["details"][0]["reason"],
        "IDEMPOTENCY_KEY_REUSED"
    );

    let mut body = transfer("25.00");
    body["idempotencyKey"] = json!("a-different-key");
    let mismatch = rest
        .post(&rest.partner, "/v1/transfers", Some(&same_key), &body)
        .await;
    assert_eq!(
        mismatch.status,
        StatusCode::BAD_REQUEST,
        "{}",
        mismatch.text()
    );

    let number = json!({"sourceAccountId": source, "destinationAccountId": destination, "amount": {"currency": "USD", "amount": 25}});
    let refused = rest
        .post(&rest.partner, "/v1/transfers", Some(&key()), &number)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let typo = json!({"sourceAccountId": source, "destinationAcountId": destination});
    let refused = rest
        .post(&rest.partner, "/v1/transfers", Some(&key()), &typo)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.text().contains("destinationAcountId"),
        "{}",
        refused.text()
    );
}

#[tokio::test]
async fn a_hundred_concurrent_requests_with_one_key_have_one_effect() {
    let app = TestApp::spawn().await;
    let rest = Rest::new(&app);
    let (source, destination) = rest.funded_accounts().await;
    let body = json!({
        "sourceAccountId": source,
        "destinationAccountId": destination,
        "amount": {"currency": "USD", "amount": "10.00"}
    });
    let key = key();
    let answers = futures::future::join_all(
        (0..100).map(|_| rest.post(&rest.partner, "/v1/transfers", Some(&key), &body)),
    )
    .await;
    let ids: BTreeSet<String> = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::OK)
        .map(|answer| {
            answer.json()["transactionId"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for answer in &answers {
        assert!(
            answer.status == StatusCode::OK || answer.status == StatusCode::CONFLICT,
            "{}",
            answer.text()
        );
    }
    let listed = rest
        .get(
            &rest.partner,
            &format!("/v1/accounts/{source}/transactions?pageSize=100"),
        )
        .await;
    let transfers = listed.json()["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .filter(|transaction| transaction["kind"] != "TRANSACTION_KIND_DEPOSIT")
        .count();
    assert_eq!(transfers, 1, "{}", listed.text());
}

#[tokio::test]
async fn watching_a_transaction_streams_sse_that_resumes_and_ndjson() {
    let app = TestApp::spawn().await;
    let rest = Rest::new(&app);
    let (source, destination) = rest.funded_accounts().await;
    let created = rest
        .post(
            &rest.partner,
            "/v1/transfers",
            Some(&key()),
            &json!({"sourceAccountId": source, "destinationAccountId": destination, "amount": {"currency": "USD", "amount": "5.00"}, "wait": "20s"}),
        )
        .await;
    let id = created.json()["transactionId"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v1/transactions/{id}:watch");
    let sse = rest
        .client
        .get(
            &path,
            &[
                ("authorization", &rest.partner),
                ("accept", "text/event-stream"),
            ],
        )
        .await
        .expect("http");
    assert_eq!(sse.status, StatusCode::OK);
    let ids: Vec<String> = sse
        .text()
        .lines()
        .filter_map(|line| line.strip_prefix("id:").map(|id| id.trim().to_owned()))
        .collect();
    assert!(!ids.is_empty(), "{}", sse.text());
    let resumed = rest
        .client
        .get(
            &path,
            &[
                ("authorization", &rest.partner),
                ("accept", "text/event-stream"),
                ("last-event-id", ids.last().expect("an id")),
            ],
        )
        .await
        .expect("http");
    assert!(!resumed.text().contains("data:"), "{}", resumed.text());

    let ndjson = rest.get(&rest.partner, &path).await;
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let last: Value =
        serde_json::from_str(ndjson.text().lines().last().expect("a line")).expect("json");
    assert_eq!(last["status"], "TRANSACTION_STATUS_COMPLETED");
}

#[tokio::test]
async fn every_annotated_rpc_is_reachable_through_rest() {
    let app = TestApp::spawn().await;
    let rest = Rest::new(&app);
    let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let table = RouteTable::from_pool(&pool).expect("routes");
    let every_scope = format!(
        "{} {}",
        corebank_platform::auth::PARTNER_SCOPES.join(" "),
        corebank_platform::auth::STAFF_SCOPES.join(" ")
    );
    let token = format!(
        "Bearer {}",
        app.token("staff-all", &every_scope, Audience::Partner)
    );
    for route in table.routes() {
        let name = route.method.full_name();
        assert!(
            REACHED.contains(&name),
            "{name} has a route but no REST test: add it to REACHED"
        );
        let mut path = route.template.openapi_path();
        for variable in route.template.variables() {
            path = path.replace(
                &format!("{{{}}}", variable.name()),
                &Uuid::now_v7().to_string(),
            );
        }
        let body = match route.body {
            BodyRule::None => Vec::new(),
            _ => b"{}".to_vec(),
        };
        let response = rest
            .client
            .send(
                route.http_method.clone(),
                &path,
                &[
                    ("authorization", &token),
                    ("content-type", "application/json"),
                    ("idempotency-key", &key()),
                ],
                body,
            )
            .await
            .expect("http");
        let reason = response.json()["details"][0]["reason"]
            .as_str()
            .map(str::to_owned);
        assert!(
            response.status.as_u16() < 500 && reason.as_deref() != Some("ROUTE_NOT_FOUND"),
            "{} {path} ({name}): {} {}",
            route.http_method,
            response.status,
            response.text()
        );
        assert_ne!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            response.text()
        );
        assert_ne!(
            response.status,
            StatusCode::FORBIDDEN,
            "{name}: {}",
            response.text()
        );
    }
}
