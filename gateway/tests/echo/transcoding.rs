//! How a REST request maps onto the echo service and its answer back:
//! path, query, body and header mapping, refused inputs, the OpenAPI document.

use super::*;

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
