//! One error model for two transports. An [`ApiError`] carries an
//! [`ErrorCode`] that maps to both a gRPC code and an HTTP status, a stable
//! machine-readable reason (`INSUFFICIENT_FUNDS`), and the field violations of
//! a bad request. Internal errors are logged with their cause chain and reach
//! the caller only as an opaque message.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every corebank error.
pub const ERROR_DOMAIN: &str = "corebank";

/// Reasons shared by every service.
pub mod reason {
    pub const VALIDATION_FAILED: &str = "VALIDATION_FAILED";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    pub const IDEMPOTENCY_KEY_IN_USE: &str = "IDEMPOTENCY_KEY_IN_USE";
    pub const INTERNAL: &str = "INTERNAL";
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
}

/// Transport-neutral error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The gRPC status code.
    pub fn grpc(self) -> tonic::Code {
        match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::FailedPrecondition => tonic::Code::FailedPrecondition,
            Self::Aborted => tonic::Code::Aborted,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::ResourceExhausted => tonic::Code::ResourceExhausted,
            Self::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status, as grpc-gateway maps the gRPC code.
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::InvalidArgument | Self::FailedPrecondition => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => StatusCode::CONFLICT,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The class of a gRPC code received from another service.
    pub fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Self::InvalidArgument,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::AlreadyExists => Self::AlreadyExists,
            tonic::Code::FailedPrecondition => Self::FailedPrecondition,
            tonic::Code::Aborted => Self::Aborted,
            tonic::Code::PermissionDenied => Self::PermissionDenied,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::ResourceExhausted => Self::ResourceExhausted,
            tonic::Code::DeadlineExceeded => Self::DeadlineExceeded,
            tonic::Code::Unavailable | tonic::Code::Cancelled => Self::Unavailable,
            _ => Self::Internal,
        }
    }

    /// Whether trying the same request again later may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Aborted | Self::Unavailable | Self::DeadlineExceeded | Self::ResourceExhausted
        )
    }
}

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// An error a client can act on, or an opaque internal one.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    reason: Cow<'static, str>,
    message: String,
    violations: Vec<FieldViolation>,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(
        code: ErrorCode,
        reason: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            violations: Vec::new(),
            metadata: HashMap::new(),
            retry_after: None,
            source: None,
        }
    }

    /// One invalid field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut violations = Violations::default();
        violations.add(field, description);
        violations.into_error()
    }

    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, reason, message)
    }

    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, reason, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, reason::UNAVAILABLE, message)
    }

    /// An unexpected failure: logged with its cause chain, opaque to the caller.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut error = Self::new(ErrorCode::Internal, reason::INTERNAL, "internal error");
        error.source = Some(source.into());
        error
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }

    /// The gRPC status with `ErrorInfo`, `BadRequest` and `RetryInfo` details.
    pub fn into_status(self) -> tonic::Status {
        if let Some(source) = &self.source {
            // The cause chain, without a backtrace.
            tracing::error!(error = format!("{source:#}"), reason = %self.reason, "internal error");
        }
        let mut details = ErrorDetails::new();
        details.set_error_info(self.reason.to_string(), ERROR_DOMAIN, self.metadata);
        for violation in &self.violations {
            details
                .add_bad_request_violation(violation.field.clone(), violation.description.clone());
        }
        if self.retry_after.is_some() {
            details.set_retry_info(self.retry_after);
        }
        tonic::Status::with_error_details(self.code.grpc(), self.message, details)
    }

    /// An error answered by another service, kept with its code and reason.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = ErrorCode::from_grpc(status.code());
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_else(|| reason::INTERNAL.to_owned());
        let mut error = Self::new(code, reason, status.message().to_owned());
        if let Some(bad_request) = status.get_details_bad_request() {
            error.violations = bad_request
                .field_violations
                .into_iter()
                .map(|violation| FieldViolation {
                    field: violation.field,
                    description: violation.description,
                })
                .collect();
        }
        error
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)?;
        for violation in &self.violations {
            write!(f, "; {}: {}", violation.field, violation.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        error.into_status()
    }
}

/// A concurrency conflict the caller may simply retry.
pub const CONCURRENT_UPDATE: &str = "CONCURRENT_UPDATE";

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(%error, "database unavailable");
                Self::unavailable("database unavailable, retry later")
            }
            // 40001 serialization failure, 40P01 deadlock, 55P03 lock timeout:
            // nothing was written and the same request may well succeed now.
            _ if matches!(
                sqlstate(&error).as_deref(),
                Some("40001" | "40P01" | "55P03")
            ) =>
            {
                tracing::warn!(%error, "database conflict, answered as retryable");
                Self::new(
                    ErrorCode::Aborted,
                    CONCURRENT_UPDATE,
                    "concurrent update, retry",
                )
                .with_retry_after(Duration::from_millis(100))
            }
            // 22021 invalid byte sequence (a NUL in text), 22P05 untranslatable
            // character: the request carried what PostgreSQL cannot store.
            // The input layer refuses these first; this is the second line.
            _ if matches!(sqlstate(&error).as_deref(), Some("22021" | "22P05")) => {
                tracing::info!(%error, "request refused by the database encoding");
                Self::new(
                    ErrorCode::InvalidArgument,
                    reason::VALIDATION_FAILED,
                    "invalid request: a text field holds a character that cannot be stored",
                )
            }
            _ => Self::internal(error),
        }
    }
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}

/// The name of the constraint a database error violated, if any.
pub fn constraint(error: &sqlx::Error) -> Option<&str> {
    error.as_database_error().and_then(|db| db.constraint())
}

/// Collects every invalid field of a request before answering, so the caller
/// sees all of them at once.
/// A required UUID request field: empty is "is required", anything else
/// that does not parse is "must be a UUID", both naming `field`.
pub fn required_uuid(field: &str, text: &str) -> Result<uuid::Uuid, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid_field(field, "is required"));
    }
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::invalid_field(field, "must be a UUID"))
}

#[derive(Debug, Default)]
pub struct Violations {
    violations: Vec<FieldViolation>,
}

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records a violation unless `ok` holds.
    pub fn check(&mut self, ok: bool, field: &str, description: &str) {
        if !ok {
            self.add(field, description);
        }
    }

    /// Keeps the value of a parse, or records its error against `field`.
    pub fn take<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parsed: Result<T, E>,
    ) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(error) => {
                self.add(field, error.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn into_error(self) -> ApiError {
        let summary = self
            .violations
            .iter()
            .map(|violation| format!("{}: {}", violation.field, violation.description))
            .collect::<Vec<_>>()
            .join("; ");
        let mut error = ApiError::new(
            ErrorCode::InvalidArgument,
            reason::VALIDATION_FAILED,
            format!("invalid request: {summary}"),
        );
        error.violations = self.violations;
        error
    }

    /// `Ok` when nothing was recorded.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.into_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_grpc_gateway_http_status() {
        assert_eq!(ErrorCode::InvalidArgument.http_status(), 400);
        assert_eq!(ErrorCode::FailedPrecondition.http_status(), 400);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::Aborted.http_status(), 409);
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert_eq!(ErrorCode::Internal.http_status(), 500);
    }

    #[test]
    fn a_validation_error_round_trips_through_a_grpc_status_with_its_fields() {
        let mut violations = Violations::default();
        violations.add("email", "must be an email address");
        violations.add("country", "must be an ISO 3166-1 alpha-2 code");
        let status = violations.into_error().into_status();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let back = ApiError::from_status(&status);
        assert_eq!(back.reason(), reason::VALIDATION_FAILED);
        let fields: Vec<_> = back.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "country"]);
    }

    #[test]
    fn an_internal_error_hides_its_cause_from_the_caller() {
        let status = ApiError::internal(anyhow::anyhow!("password=hunter2 leaked")).into_status();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        assert!(ErrorCode::Unavailable.retryable());
        assert!(ErrorCode::Aborted.retryable());
        assert!(!ErrorCode::FailedPrecondition.retryable());
        assert!(!ErrorCode::InvalidArgument.retryable());
    }
}
