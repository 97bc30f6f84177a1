//! What the edge does around a call: backend errors, replays, deadlines,
//! streams, unknown routes, tokens and rate limits.

use super::*;

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
