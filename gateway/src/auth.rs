//! Authentication at the edge. A partner presents a bearer JWT (audience
//! `corebank`); the gateway verifies it, checks the route's scope, and calls
//! the backend with its own internal token (scope `delegate`) plus the
//! partner's original token in `x-corebank-on-behalf-of`, so every service
//! sees the partner as the principal and applies its tenancy.
//!
//! [`EdgeAuth`] is what the router needs; [`PlatformAuth`] implements it on
//! `corebank_platform::auth`.

use std::sync::Arc;

use corebank_platform::auth::{
    Audience, AuthError, Authenticator, Credentials, DELEGATE_SCOPE, DevKey, ON_BEHALF_OF,
    Principal, TokenSpec,
};
use futures::future::BoxFuture;
use http::HeaderValue;
use tonic::metadata::AsciiMetadataValue;

use crate::errors::{GatewayError, gateway_reason};

/// Verifies partner tokens and supplies the gateway's own credentials.
pub trait EdgeAuth: Send + Sync + std::fmt::Debug + 'static {
    /// Verifies a partner's bearer token (without `Bearer `).
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>>;

    /// The `authorization` value the gateway presents to backends.
    fn backend_authorization(&self) -> Result<Option<AsciiMetadataValue>, tonic::Status>;
}

/// [`EdgeAuth`] on the platform's authenticator and credentials.
#[derive(Debug, Clone)]
pub struct PlatformAuth {
    pub authenticator: Arc<Authenticator>,
    pub credentials: Credentials,
}

impl PlatformAuth {
    /// Trusts `key` for partner tokens and signs the gateway's own delegate
    /// tokens with it: development and tests.
    pub fn development(key: &DevKey) -> Self {
        let spec = TokenSpec::new("service:gateway", DELEGATE_SCOPE, Audience::Internal);
        Self {
            authenticator: Arc::new(key.authenticator()),
            credentials: Credentials::signed(key.clone(), spec),
        }
    }
}

impl EdgeAuth for PlatformAuth {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>> {
        Box::pin(self.authenticator.verify(token, Audience::Partner))
    }

    fn backend_authorization(&self) -> Result<Option<AsciiMetadataValue>, tonic::Status> {
        self.credentials.authorization()
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The 401 of a missing or refused token (503 when the keys are unreachable).
pub fn refused(error: &AuthError) -> GatewayError {
    if let AuthError::KeysUnavailable(_) = error {
        return GatewayError::new(
            tonic::Code::Unavailable,
            "UNAVAILABLE",
            "token verification keys unavailable, retry later",
        );
    }
    GatewayError::new(
        tonic::Code::Unauthenticated,
        gateway_reason::UNAUTHENTICATED,
        "a valid bearer token is required",
    )
    .with_header(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"corebank\""),
    )
}

/// The 403 of a principal without the route's scope.
pub fn forbidden(scope: &str) -> GatewayError {
    GatewayError::new(
        tonic::Code::PermissionDenied,
        gateway_reason::PERMISSION_DENIED,
        format!("this operation needs scope {scope}"),
    )
}

/// The metadata name of the forwarded partner token.
pub const ON_BEHALF_OF_METADATA: &str = ON_BEHALF_OF;
