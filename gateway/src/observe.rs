//! The gateway's own metrics: every request to a generated route by its
//! template (never the raw path, whose ids would make a series per
//! customer), method and HTTP status, and how long the answer took to start.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::handler::Gateway;
use crate::routes::Found;

/// The route label of a request no route matches.
const UNMATCHED: &str = "unmatched";

/// Counts the request (`corebank_gateway_requests_total`) and records the
/// time until its response began (`corebank_gateway_request_duration_seconds`;
/// for a stream, until its first byte), whatever answered it: the handler,
/// the authentication or the rate limit.
pub async fn count(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let route = match gateway.routes.find(request.method(), request.uri().path()) {
        Found::Route(route, _) => route.template.as_str().to_owned(),
        Found::MethodNotAllowed(_) | Found::NotFound => UNMATCHED.to_owned(),
    };
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("corebank_gateway_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("corebank_gateway_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}
