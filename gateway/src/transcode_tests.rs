use http::Method;
use prost_reflect::ReflectMessage;

use super::*;
use crate::routes::{Found, RouteTable};

fn table() -> RouteTable {
    RouteTable::from_pool(&crate::testing::echo_pool().expect("test protos")).expect("routes")
}

fn request(
    method: Method,
    path: &str,
    query: Option<&str>,
    body: &str,
    key: Option<&str>,
) -> Result<Value, GatewayError> {
    let table = table();
    let Found::Route(route, variables) = table.find(&method, path) else {
        panic!("no route for {path}");
    };
    let message = request_message(
        route,
        HttpInput {
            variables,
            query,
            body: body.as_bytes(),
            idempotency_key: key,
        },
    )?;
    assert_eq!(
        message.descriptor().full_name(),
        route.method.input().full_name()
    );
    Ok(serde_json::from_slice(&response_json(&message).expect("serializes")).expect("json"))
}

fn field_of(error: &GatewayError) -> String {
    error.details[1]["fieldViolations"][0]["field"]
        .as_str()
        .expect("a field violation")
        .to_owned()
}

#[test]
fn query_parameters_map_to_nested_repeated_and_enum_fields() {
    let json = request(
        Method::GET,
        "/v1/echo/t1/search",
        Some("filter.owner=a+b&tags=x&tags=y&color=COLOR_RED&page_size=3&big=9007199254740993"),
        "",
        None,
    )
    .expect("valid");
    assert_eq!(json["target"]["targetId"], "t1");
    assert_eq!(json["filter"]["owner"], "a b");
    assert_eq!(json["tags"], serde_json::json!(["x", "y"]));
    assert_eq!(json["color"], "COLOR_RED");
    assert_eq!(json["pageSize"], 3);
    assert_eq!(json["big"], "9007199254740993");
}

#[test]
fn bad_query_values_name_the_parameter() {
    for (query, field) in [
        ("page_size=ten", "page_size"),
        ("nope=1", "nope"),
        ("filter.active=maybe", "filter.active"),
        ("target.target_id=other", "target.target_id"),
        ("page_size=1&page_size=2", "page_size"),
    ] {
        let error =
            request(Method::GET, "/v1/echo/t1/search", Some(query), "", None).expect_err(query);
        assert_eq!(field_of(&error), field, "{query}");
    }
}

#[test]
fn the_body_accepts_proto_and_json_names_but_not_both() {
    let json = request(
        Method::POST,
        "/v1/echo/t1:shout",
        None,
        r#"{"idempotency_key":"k","text":"x"}"#,
        None,
    )
    .expect("proto names");
    assert_eq!(json["idempotencyKey"], "k");
    let error = request(
        Method::POST,
        "/v1/echo/t1:shout",
        None,
        r#"{"idempotency_key":"k","idempotencyKey":"k"}"#,
        None,
    )
    .expect_err("twice");
    let field = field_of(&error);
    assert!(
        field == "idempotencyKey" || field == "idempotency_key",
        "{field}"
    );
}

#[test]
fn the_same_idempotency_key_in_body_and_header_is_accepted() {
    let json = request(
        Method::POST,
        "/v1/echo/t1:shout",
        None,
        r#"{"idempotencyKey":"k"}"#,
        Some("k"),
    )
    .expect("same key");
    assert_eq!(json["idempotencyKey"], "k");
}

#[test]
fn a_get_route_refuses_a_body_and_a_whole_body_route_refuses_a_query() {
    assert!(request(Method::GET, "/v1/echo/t1/search", None, "{}", None).is_err());
    assert!(
        request(
            Method::POST,
            "/v1/echo/t1:shout",
            Some("text=x"),
            "{}",
            None
        )
        .is_err()
    );
}

#[test]
fn a_number_for_a_string_is_refused_anywhere_in_the_body() {
    let error = request(
        Method::POST,
        "/v1/echo/t1:shout",
        None,
        r#"{"text": 12}"#,
        None,
    )
    .expect_err("number");
    assert_eq!(field_of(&error), "text");
    let error = request(
        Method::POST,
        "/v1/echo/n1/notes",
        None,
        r#"{"text": 12}"#,
        None,
    )
    .expect_err("number");
    assert_eq!(field_of(&error), "note.text");
}
