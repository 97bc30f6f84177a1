//! The gateway's one error shape, `{code, message, details}` as grpc-gateway
//! writes it: `code` is the gRPC code number, the HTTP status follows
//! grpc-gateway's table (the same as `corebank_platform::ErrorCode`), and the
//! `google.rpc` details a backend attached (`ErrorInfo`, `BadRequest`,
//! `RetryInfo`) are carried over as JSON objects with an `@type`. Internal
//! errors stay opaque: the caller gets a generic message, the log the cause.

use axum::Json;
use axum::response::{IntoResponse, Response};
use corebank_platform::error::{ERROR_DOMAIN, reason};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

/// The message of every internal error, whatever the backend said.
pub const OPAQUE_MESSAGE: &str = "internal error";

/// Reasons the gateway itself gives.
pub mod gateway_reason {
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    pub const NOT_FOUND: &str = "ROUTE_NOT_FOUND";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    pub const BODY_TOO_LARGE: &str = "BODY_TOO_LARGE";
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
}

/// An error answered over HTTP.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub details: Vec<Value>,
    pub headers: HeaderMap,
}

/// The HTTP status grpc-gateway gives a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn is_internal(code: Code) -> bool {
    matches!(code, Code::Unknown | Code::Internal | Code::DataLoss)
}

impl GatewayError {
    pub fn new(code: Code, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status: http_status(code),
            code,
            message: message.into(),
            details: vec![error_info(reason, &[])],
            headers: HeaderMap::new(),
        }
    }

    /// A 400 with one field violation, as a backend's validation would say it.
    pub fn invalid_field(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut error = Self::new(
            Code::InvalidArgument,
            reason::VALIDATION_FAILED,
            format!("{field}: {description}"),
        );
        error.details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        }));
        error
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// A backend's status, its details carried over; internal ones opaque.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = status.code();
        if is_internal(code) {
            tracing::error!(grpc_code = ?code, error = %status.message(), "backend internal error");
            return Self::new(Code::Internal, reason::INTERNAL, OPAQUE_MESSAGE)
                .with_status(http_status(code));
        }
        let details = details_json(status);
        let mut headers = HeaderMap::new();
        if let Some(delay) = status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
        {
            let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        Self {
            status: http_status(code),
            code,
            message: status.message().to_owned(),
            details,
            headers,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({
            "code": self.code as i32,
            "message": self.message,
            "details": self.details,
        })
    }

    /// The `reason` of its `ErrorInfo`, if any.
    pub fn reason(&self) -> Option<&str> {
        self.details
            .iter()
            .find(|detail| detail["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
            .and_then(|detail| detail["reason"].as_str())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

/// An `ErrorInfo` detail in the corebank domain.
pub fn error_info(reason: &str, metadata: &[(&str, &str)]) -> Value {
    let metadata: serde_json::Map<String, Value> = metadata
        .iter()
        .map(|(key, value)| ((*key).to_owned(), Value::from(*value)))
        .collect();
    json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": ERROR_DOMAIN,
        "metadata": metadata,
    })
}

/// The `google.rpc` details of a status, as proto3 JSON objects.
fn details_json(status: &tonic::Status) -> Vec<Value> {
    let details = status.get_error_details();
    let mut out = Vec::new();
    if let Some(info) = details.error_info() {
        let metadata: serde_json::Map<String, Value> = info
            .metadata
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(value.clone())))
            .collect();
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": info.reason,
            "domain": info.domain,
            "metadata": metadata,
        }));
    }
    if let Some(bad_request) = details.bad_request() {
        let violations: Vec<Value> = bad_request
            .field_violations
            .iter()
            .map(
                |violation| json!({"field": violation.field, "description": violation.description}),
            )
            .collect();
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": violations,
        }));
    }
    if let Some(retry) = details.retry_info()
        && let Some(delay) = retry.retry_delay
    {
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}.{:09}s", delay.as_secs(), delay.subsec_nanos()),
        }));
    }
    if let Some(failure) = details.precondition_failure() {
        let violations: Vec<Value> = failure
            .violations
            .iter()
            .map(|violation| {
                json!({"type": violation.r#type, "subject": violation.subject, "description": violation.description})
            })
            .collect();
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
            "violations": violations,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use corebank_platform::ErrorCode;
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    #[test]
    fn the_status_table_is_grpc_gateways() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Cancelled, 499),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn the_gateway_agrees_with_the_platform_error_model() {
        let every = [
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::FailedPrecondition,
            ErrorCode::Aborted,
            ErrorCode::PermissionDenied,
            ErrorCode::Unauthenticated,
            ErrorCode::ResourceExhausted,
            ErrorCode::DeadlineExceeded,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        for code in every {
            assert_eq!(http_status(code.grpc()), code.http_status(), "{code:?}");
        }
    }

    #[test]
    fn bad_request_and_error_info_are_carried_over() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("amount.amount", "must be positive");
        details.set_error_info("VALIDATION_FAILED", "corebank", []);
        let status =
            tonic::Status::with_error_details(Code::InvalidArgument, "bad amount", details);
        let error = GatewayError::from_status(&status);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let body = error.body();
        assert_eq!(body["code"], 3);
        assert_eq!(body["message"], "bad amount");
        assert_eq!(body["details"][0]["reason"], "VALIDATION_FAILED");
        assert_eq!(
            body["details"][1]["fieldViolations"][0]["field"],
            "amount.amount"
        );
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let status = tonic::Status::internal("connection to 10.0.0.7:5432 refused: password");
        let error = GatewayError::from_status(&status);
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.message, OPAQUE_MESSAGE);
        assert!(!error.body().to_string().contains("5432"));
    }
}
