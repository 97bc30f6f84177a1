//! The one handler behind every generated route: find the route, check the
//! principal's scope, transcode, call the backend with a deadline, and
//! answer in JSON (or as a stream). Mutating requests are logged with the
//! principal, route, resource id, idempotency key and status; never a body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use corebank_platform::auth::Principal;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost_reflect::{DynamicMessage, Kind, ReflectMessage};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::auth::{EdgeAuth, ON_BEHALF_OF_METADATA, forbidden};
use crate::backend::Backends;
use crate::errors::{GatewayError, gateway_reason};
use crate::routes::{Found, Route, RouteTable};
use crate::transcode::{HttpInput, request_message, response_json};

/// The response header saying an idempotent request was replayed.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Everything the handler shares.
#[derive(Debug)]
pub struct Gateway {
    pub routes: RouteTable,
    pub backends: Backends,
    /// `None`: no authentication (only when explicitly configured so).
    pub auth: Option<Arc<dyn EdgeAuth>>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

/// The partner's original token, kept by the auth middleware for forwarding.
#[derive(Debug, Clone)]
pub struct PartnerToken(pub String);

pub async fn dispatch(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (route, variables) = match gateway.routes.find(&parts.method, &path) {
        Found::Route(route, variables) => (route, variables),
        Found::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(http::Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut error = GatewayError::new(
                tonic::Code::Unimplemented,
                gateway_reason::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            )
            .with_status(StatusCode::METHOD_NOT_ALLOWED);
            if let Ok(value) = HeaderValue::from_str(&allow) {
                error = error.with_header(header::ALLOW, value);
            }
            return error.into_response();
        }
        Found::NotFound => {
            return GatewayError::new(
                tonic::Code::NotFound,
                gateway_reason::NOT_FOUND,
                "no such route",
            )
            .into_response();
        }
    };
    let principal = parts.extensions.get::<Principal>().cloned();
    let idempotency_key = header_text(&parts.headers, "idempotency-key");
    let path_id = variables.first().map(|(_, value)| value.clone());
    let response = match call(&gateway, route, variables, parts, body, principal.as_ref()).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if route.is_mutating() {
        // The object acted on: named in the path, or made by this request.
        let resource_id = path_id
            .or_else(|| {
                response
                    .extensions()
                    .get::<CreatedId>()
                    .map(|id| id.0.clone())
            })
            .unwrap_or_default();
        tracing::info!(
            principal = principal.as_ref().map_or("anonymous", |p| p.subject.as_str()),
            route = %route.template,
            method = %route.http_method,
            resource_id = %resource_id,
            idempotency_key = idempotency_key.as_deref().unwrap_or(""),
            status = response.status().as_u16(),
            "mutating request"
        );
    }
    response
}

async fn call(
    gateway: &Gateway,
    route: &Route,
    variables: Vec<(crate::template::Variable, String)>,
    parts: http::request::Parts,
    body: Body,
    principal: Option<&Principal>,
) -> Result<Response, GatewayError> {
    if gateway.auth.is_some()
        && let Some(scope) = &route.scope
        && !principal.is_some_and(|principal| principal.has_scope(scope))
    {
        return Err(forbidden(scope));
    }
    let body = axum::body::to_bytes(body, gateway.max_body_bytes)
        .await
        .map_err(|_| too_large(gateway.max_body_bytes))?;
    let idempotency_key = header_text(&parts.headers, "idempotency-key");
    let message = request_message(
        route,
        HttpInput {
            variables,
            query: parts.uri.query(),
            body: &body,
            idempotency_key: idempotency_key.as_deref(),
        },
    )?;
    let request = backend_request(gateway, &parts, message)?;
    let service = route.service_name();
    let grpc_path = route.grpc_path();
    let output = route.method.output();
    if route.is_streaming() {
        let streaming = tokio::time::timeout(
            gateway.request_timeout,
            gateway
                .backends
                .server_streaming(service, &grpc_path, output, request),
        )
        .await
        .map_err(|_| deadline())?
        .map_err(|status| status_error(&status))?;
        return Ok(crate::sse::stream_response(&parts.headers, streaming));
    }
    let response = tokio::time::timeout(
        gateway.request_timeout,
        gateway.backends.unary(service, &grpc_path, output, request),
    )
    .await
    .map_err(|_| deadline())?
    .map_err(|status| status_error(&status))?;
    let replayed = response
        .metadata()
        .get(IDEMPOTENT_REPLAYED)
        .is_some_and(|value| value.as_encoded_bytes() == b"true");
    let json = response_json(response.get_ref())?;
    let created = created_id(response.get_ref());
    let mut http_response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response();
    if replayed {
        http_response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    if let Some(id) = created {
        http_response.extensions_mut().insert(CreatedId(id));
    }
    Ok(http_response)
}

/// The id of the object an answer describes, for the audit log line.
#[derive(Clone)]
struct CreatedId(String);

/// The answer's first string field named `*_id` (`customer_id`,
/// `transaction_id`, …): corebank's resources lead with their own id.
fn created_id(message: &DynamicMessage) -> Option<String> {
    let field = message
        .descriptor()
        .fields()
        .find(|field| field.name().ends_with("_id") && field.kind() == Kind::String)?;
    let value = message.get_field(&field);
    value
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// The gRPC request: the message, the deadline, the request id, and the
/// credentials (the gateway's own plus the partner's token it acts for).
fn backend_request(
    gateway: &Gateway,
    parts: &http::request::Parts,
    message: DynamicMessage,
) -> Result<tonic::Request<DynamicMessage>, GatewayError> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(gateway.request_timeout);
    let metadata = request.metadata_mut();
    if let Some(id) = parts.headers.get("x-request-id").and_then(ascii) {
        metadata.insert("x-request-id", id);
    }
    if let Some(auth) = &gateway.auth {
        let authorization = auth
            .backend_authorization()
            .map_err(|status| GatewayError::from_status(&status))?;
        if let Some(value) = authorization {
            metadata.insert("authorization", value);
        }
        if let Some(token) = parts.extensions.get::<PartnerToken>()
            && let Ok(value) = MetadataValue::try_from(token.0.as_str())
        {
            metadata.insert(ON_BEHALF_OF_METADATA, value);
        }
    }
    Ok(request)
}

fn ascii(value: &HeaderValue) -> Option<AsciiMetadataValue> {
    AsciiMetadataValue::try_from(value.as_bytes()).ok()
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A backend's error; a backend's own deadline (tonic answers CANCELLED
/// when the `grpc-timeout` the gateway set elapses) is the gateway's 504.
fn status_error(status: &tonic::Status) -> GatewayError {
    if status.code() == tonic::Code::Cancelled {
        return deadline();
    }
    GatewayError::from_status(status)
}

fn deadline() -> GatewayError {
    GatewayError::new(
        tonic::Code::DeadlineExceeded,
        gateway_reason::DEADLINE_EXCEEDED,
        "the request timed out",
    )
}

/// The 413 of a body over the limit.
pub fn too_large(limit: usize) -> GatewayError {
    GatewayError::new(
        tonic::Code::InvalidArgument,
        gateway_reason::BODY_TOO_LARGE,
        format!("the request body exceeds {limit} bytes"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DescriptorPool, Value};

    use super::*;

    fn message(name: &str) -> DynamicMessage {
        let pool = DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("pool");
        DynamicMessage::new(pool.get_message_by_name(name).expect("message"))
    }

    #[test]
    fn the_id_logged_for_a_create_is_the_answers_own_id() {
        let mut customer = message("corebank.v1.Customer");
        assert_eq!(created_id(&customer), None, "no id yet");
        customer.set_field_by_name("customer_id", Value::String("c-1".to_owned()));
        assert_eq!(created_id(&customer).as_deref(), Some("c-1"));
        let mut transaction = message("corebank.v1.Transaction");
        transaction.set_field_by_name("transaction_id", Value::String("t-1".to_owned()));
        assert_eq!(created_id(&transaction).as_deref(), Some("t-1"));
    }
}
