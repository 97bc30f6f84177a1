//! Calls to the REST gateway as a partner makes them, and waiting on the
//! saga a call started.

use std::net::SocketAddr;
use std::time::Duration;

use corebank_tests::harness::{TestDb, key};
use serde_json::Value;

use crate::common::http::http;

/// One REST call (HTTP/1.0, a fresh idempotency key): its status and JSON body.
async fn rest(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let authorization = format!("Bearer {token}");
    let idempotency_key = key();
    let headers = [
        ("Authorization", authorization.as_str()),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", idempotency_key.as_str()),
    ];
    let (status, payload) = http(gateway, method, path, &headers, &body).await;
    (
        status,
        serde_json::from_str(&payload).unwrap_or(Value::Null),
    )
}

/// A REST call that must answer 200; its body.
pub async fn ok(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let (status, answer) = rest(gateway, method, path, token, body).await;
    assert_eq!(status, 200, "{method} {path} answered {status}: {answer}");
    answer
}

/// Waits until the saga of `transaction_id` has completed.
pub async fn until_saga_completed(db: &TestDb, transaction_id: &str) {
    let transaction_id: uuid::Uuid = transaction_id.parse().expect("a transaction id");
    for _ in 0..300 {
        let state: Option<String> =
            sqlx::query_scalar("select state from orchestrator.saga where transaction_id = $1")
                .bind(transaction_id)
                .fetch_optional(&db.owner)
                .await
                .expect("read the saga");
        if state.as_deref() == Some("completed") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the saga of {transaction_id} did not complete");
}
