//! The gateway against a test-only service it was never written for
//! (`corebank.test.v1.EchoService`, compiled from `tests/proto` at test
//! time): routes, transcoding, errors, headers, streams, auth and limits,
//! without PostgreSQL or RabbitMQ.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corebank_gateway::auth::EdgeAuth;
use corebank_gateway::testing::{ECHO_SERVICE, HttpClient, echo_pool, serve_echo};
use corebank_gateway::{Application, Settings};
use corebank_platform::auth::{AuthError, Principal};
use futures::future::BoxFuture;
use http::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;

/// Tokens are `sub:<subject>:<scope>,<scope>`; anything else is refused.
#[derive(Debug)]
struct FakeAuth;

impl EdgeAuth for FakeAuth {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>> {
        Box::pin(async move {
            let mut parts = token.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("sub"), Some(subject), Some(scopes)) => {
                    let scopes: BTreeSet<String> = scopes.split(',').map(str::to_owned).collect();
                    Ok(Principal::from_token(subject.to_owned(), scopes, false))
                }
                _ => Err(AuthError::Invalid("signature")),
            }
        })
    }

    fn backend_authorization(&self) -> Result<Option<AsciiMetadataValue>, tonic::Status> {
        Ok(Some("Bearer gateway-delegate".parse().expect("ascii")))
    }
}

struct Gateway {
    client: HttpClient,
    _stop: tokio_util::sync::DropGuard,
}

async fn gateway_with(adjust: impl FnOnce(&mut Settings)) -> Gateway {
    let stop = CancellationToken::new();
    let pool = echo_pool().expect("the test protos compile");
    let echo = serve_echo(pool.clone(), stop.clone())
        .await
        .expect("echo server");
    let mut settings = Settings {
        pool,
        endpoints: HashMap::from([(ECHO_SERVICE.to_owned(), format!("http://{echo}"))]),
        backend_tls: None,
        auth: None,
        request_timeout: Duration::from_secs(10),
        rate_limit_per_second: 1000,
        rate_limit_burst: 1000,
        max_body_bytes: 64 * 1024,
    };
    adjust(&mut settings);
    let app = Application::build(settings, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("gateway builds");
    let client = HttpClient::new(app.local_addr());
    tokio::spawn(app.run_until_stopped(stop.clone()));
    Gateway {
        client,
        _stop: stop.drop_guard(),
    }
}

async fn gateway() -> Gateway {
    gateway_with(|_| {}).await
}

fn violation_field(body: &serde_json::Value) -> Option<String> {
    body["details"].as_array()?.iter().find_map(|detail| {
        detail["fieldViolations"][0]["field"]
            .as_str()
            .map(str::to_owned)
    })
}

#[tokio::test]
async fn an_rpc_added_later_is_served_with_path_body_and_header_mapped() {
    let gateway = gateway().await;
    let response = gateway
        .client
        .post(
            "/v1/echo/t-1:shout",
            &[("idempotency-key", "key-1"), ("x-request-id", "req-42")],
            &json!({"text": "hello", "amount": {"currency": "USD", "amount": "1.50"}}),
        )
        .await
        .expect("http");
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.header("x-request-id"), Some("req-42"));
    let body = response.json();
    assert_eq!(body["shout"]["target"]["targetId"], "t-1");
    assert_eq!(body["shout"]["idempotencyKey"], "key-1");
    assert_eq!(body["shout"]["amount"]["amount"], "1.50");
    // int64 as a string, enums by name, defaults emitted.
    assert_eq!(body["big"], "9007199254740993");
    assert_eq!(body["color"], "COLOR_UNSPECIFIED");
    assert!(response.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_request_id_is_made_when_none_is_given() {
    let gateway = gateway().await;
    let response = gateway
        .client
        .get("/v1/echo/t/search", &[])
        .await
        .expect("http");
    let id = response
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    assert!(
        response.json()["text"]
            .as_str()
            .expect("text")
            .contains(&id)
    );
}

#[tokio::test]
async fn query_parameters_fill_scalars_nested_fields_repeated_fields_and_enums() {
    let gateway = gateway().await;
    let query = "filter.owner=ann%20b&filter.active=true&tags=a&tags=b&color=COLOR_RED\
                 &pageSize=5&big=12&since=2026-01-02T03:04:05Z&colors=COLOR_BLUE&colors=2";
    let response = gateway
        .client
        .get(&format!("/v1/echo/t-9/search?{query}"), &[])
        .await
        .expect("http");
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let search = &response.json()["search"];
    assert_eq!(search["target"]["targetId"], "t-9");
    assert_eq!(search["filter"]["owner"], "ann b");
    assert_eq!(search["filter"]["active"], true);
    assert_eq!(search["tags"], json!(["a", "b"]));
    assert_eq!(search["color"], "COLOR_RED");
    assert_eq!(search["pageSize"], 5);
    assert_eq!(search["big"], "12");
    assert_eq!(search["since"], "2026-01-02T03:04:05Z");
    assert_eq!(search["colors"], json!(["COLOR_BLUE", "COLOR_BLUE"]));
}

#[tokio::test]
async fn a_body_field_rule_takes_the_body_as_that_field_and_the_rest_from_the_query() {
    let gateway = gateway().await;
    let response = gateway
        .client
        .post(
            "/v1/echo/n-1/notes?mode=fast",
            &[],
            &json!({"text": "remember"}),
        )
        .await
        .expect("http");
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let annotate = &response.json()["annotate"];
    assert_eq!(annotate["noteId"], "n-1");
    assert_eq!(annotate["note"]["text"], "remember");
    assert_eq!(annotate["mode"], "fast");
}

#[tokio::test]
async fn money_unsafe_input_is_refused_naming_the_field() {
    let gateway = gateway().await;
    let cases = [
        (
            json!({"amount": {"currency": "USD", "amout": "1.00"}}),
            "amount.amout",
        ),
        (
            json!({"amount": {"currency": "USD", "amount": 1.5}}),
            "amount.amount",
        ),
        (json!({"text": "x", "status": "COMPLETED"}), "status"),
        (json!({"target": {"targetId": "other"}}), "target.target_id"),
        (json!({"idempotencyKey": "key-2"}), "idempotency_key"),
    ];
    for (body, field) in cases {
        let response = gateway
            .client
            .post("/v1/echo/t-1:shout", &[("idempotency-key", "key-1")], &body)
            .await
            .expect("http");
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            response.text()
        );
        let error = response.json();
        assert_eq!(error["code"], 3);
        assert_eq!(violation_field(&error).as_deref(), Some(field), "{error}");
    }
    let unknown = gateway
        .client
        .get("/v1/echo/t/search?colour=COLOR_RED", &[])
        .await
        .expect("http");
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(violation_field(&unknown.json()).as_deref(), Some("colour"));
}

#[tokio::test]
async fn deep_and_large_bodies_are_refused() {
    let gateway = gateway().await;
    let mut deep = json!("x");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let response = gateway
        .client
        .post("/v1/echo/t:shout", &[], &json!({"text": deep}))
        .await
        .expect("http");
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.text()
    );

    let huge = json!({"text": "x".repeat(1024 * 1024)});
    let response = gateway
        .client
        .post("/v1/echo/t:shout", &[], &huge)
        .await
        .expect("http");
    assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.json()["details"][0]["reason"], "BODY_TOO_LARGE");
}

#[tokio::test]
async fn backend_errors_keep_their_details_and_internal_ones_stay_opaque() {
    let gateway = gateway().await;
    let shout = |text: &'static str| {
        let client = gateway.client.clone();
        async move {
            client
                .post("/v1/echo/t:shout", &[], &json!({"text": text}))
                .await
                .expect("http")
        }
    };
    let invalid = shout("fail-invalid").await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let body = invalid.json();
    assert_eq!(body["code"], 3);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(body["details"][0]["reason"], "VALIDATION_FAILED");
    assert_eq!(violation_field(&body).as_deref(), Some("text"));

    let refused = shout("fail-precondition").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["details"][0]["reason"], "INSUFFICIENT_FUNDS");

    let internal = shout("fail-internal").await;
    assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(internal.json()["message"], "internal error");
    assert!(!internal.text().contains("10.1.2.3"));
}

#[tokio::test]
async fn a_replay_is_marked_idempotent_replayed() {
    let gateway = gateway().await;
    let response = gateway
        .client
        .post(
            "/v1/echo/t:shout",
            &[("idempotency-key", "k")],
            &json!({"text": "replay"}),
        )
        .await
        .expect("http");
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn the_request_timeout_is_the_backend_deadline_and_answers_504() {
    let gateway = gateway_with(|settings| settings.request_timeout = Duration::from_secs(1)).await;
    let response = gateway
        .client
        .post("/v1/echo/t:shout", &[], &json!({"text": "slow"}))
        .await
        .expect("http");
    assert_eq!(
        response.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        response.text()
    );
    assert_eq!(response.json()["code"], 4);
}

#[tokio::test]
async fn a_server_stream_is_ndjson_or_resumable_server_sent_events() {
    let gateway = gateway().await;
    let ndjson = gateway
        .client
        .get("/v1/echo:count?to=3", &[])
        .await
        .expect("http");
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = ndjson
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|line| line["n"].clone())
            .collect::<Vec<_>>(),
        vec![json!(1), json!(2), json!(3)]
    );

    let accept = [("accept", "text/event-stream")];
    let sse = gateway
        .client
        .get("/v1/echo:count?to=3", &accept)
        .await
        .expect("http");
    assert!(
        sse.header("content-type")
            .is_some_and(|value| value.starts_with("text/event-stream"))
    );
    let ids: Vec<String> = sse
        .text()
        .lines()
        .filter_map(|line| line.strip_prefix("id:").map(|id| id.trim().to_owned()))
        .collect();
    assert_eq!(ids.len(), 3, "{}", sse.text());

    let resumed = gateway
        .client
        .get(
            "/v1/echo:count?to=3",
            &[("accept", "text/event-stream"), ("last-event-id", &ids[0])],
        )
        .await
        .expect("http");
    let data: Vec<serde_json::Value> = resumed
        .text()
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).expect("JSON data"))
        .collect();
    assert_eq!(
        data.iter()
            .map(|item| item["n"].clone())
            .collect::<Vec<_>>(),
        vec![json!(2), json!(3)]
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let gateway = gateway().await;
    let missing = gateway.client.get("/v1/nothing", &[]).await.expect("http");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["code"], 5);
    let wrong = gateway
        .client
        .get("/v1/echo/t:shout", &[])
        .await
        .expect("http");
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("POST"));
}

#[tokio::test]
async fn the_edge_refuses_missing_and_bad_tokens_and_missing_scopes() {
    let gateway = gateway_with(|settings| settings.auth = Some(Arc::new(FakeAuth))).await;
    let missing = gateway
        .client
        .get("/v1/echo/t/search", &[])
        .await
        .expect("http");
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|value| value.starts_with("Bearer"))
    );
    assert_eq!(missing.json()["code"], 16);

    let bad = gateway
        .client
        .get("/v1/echo/t/search", &[("authorization", "Bearer forged")])
        .await
        .expect("http");
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);

    let reader = [("authorization", "Bearer sub:partner-a:echo:read")];
    let forbidden = gateway
        .client
        .post("/v1/echo/t:shout", &reader, &json!({"text": "x"}))
        .await
        .expect("http");
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "{}",
        forbidden.text()
    );
    assert_eq!(forbidden.json()["code"], 7);

    let allowed = gateway
        .client
        .get("/v1/echo/t/search", &reader)
        .await
        .expect("http");
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
    let text = allowed.json()["text"].as_str().expect("text").to_owned();
    assert!(
        text.contains("authorization=yes") && text.contains("on-behalf-of=yes"),
        "{text}"
    );

    let document = gateway
        .client
        .get("/openapi.json", &[])
        .await
        .expect("http");
    assert_eq!(document.status, StatusCode::OK);
    let health = gateway.client.get("/healthz", &[]).await.expect("http");
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn a_principal_over_its_rate_limit_gets_429_with_retry_after() {
    let gateway = gateway_with(|settings| {
        settings.auth = Some(Arc::new(FakeAuth));
        settings.rate_limit_per_second = 1;
        settings.rate_limit_burst = 2;
    })
    .await;
    let a = [("authorization", "Bearer sub:partner-a:echo:read")];
    let b = [("authorization", "Bearer sub:partner-b:echo:read")];
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..4 {
        let response = gateway
            .client
            .get("/v1/echo/t/search", &a)
            .await
            .expect("http");
        statuses.push(response.status.as_u16());
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
        }
    }
    let limited = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    assert!(limited.header("retry-after").is_some());
    assert!(
        limited.header("x-ratelimit-after").is_some()
            || limited.header("x-ratelimit-limit").is_some(),
        "{:?}",
        limited.headers
    );
    assert_eq!(limited.json()["code"], 8);
    assert_eq!(limited.json()["details"][0]["reason"], "RATE_LIMITED");
    // Another principal has its own budget.
    let other = gateway
        .client
        .get("/v1/echo/t/search", &b)
        .await
        .expect("http");
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_covers_the_later_added_service() {
    let gateway = gateway().await;
    let document = gateway
        .client
        .get("/openapi.json", &[])
        .await
        .expect("http")
        .json();
    let shout = &document["paths"]["/v1/echo/{target.target_id}:shout"]["post"];
    assert_eq!(shout["x-required-scope"], "echo:write");
    assert_eq!(
        document["paths"]["/v1/echo/{target.target_id}/search"]["get"]["security"][0]["bearer"][0],
        "echo:read"
    );
}
