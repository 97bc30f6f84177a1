//! What runs before a generated route's handler: the bearer check (so the
//! rate limit can key on the principal) and the per-principal rate limit.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use corebank_platform::auth::Principal;
use governor::middleware::StateInformationMiddleware;
use http::HeaderValue;
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use crate::auth::{bearer, refused};
use crate::errors::{GatewayError, gateway_reason};
use crate::handler::{Gateway, PartnerToken};

/// Verifies the bearer token (when authentication is on) and attaches the
/// principal and the token; a missing or bad token is 401 here.
pub async fn authenticate(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(auth) = &gateway.auth else {
        return next.run(request).await;
    };
    let Some(token) = bearer(request.headers()).map(str::to_owned) else {
        return refused(&corebank_platform::auth::AuthError::Missing).into_response();
    };
    match auth.verify(&token).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            request.extensions_mut().insert(PartnerToken(token));
            next.run(request).await
        }
        Err(error) => {
            tracing::info!(%error, "bearer token refused");
            refused(&error).into_response()
        }
    }
}

/// Keys the rate limit by the token's subject (all unauthenticated
/// requests share one key; they are refused before reaching it anyway).
#[derive(Debug, Clone, Copy)]
pub struct PrincipalKey;

impl KeyExtractor for PrincipalKey {
    type Key = String;

    fn extract<T>(&self, request: &http::Request<T>) -> Result<String, GovernorError> {
        Ok(request.extensions().get::<Principal>().map_or_else(
            || "anonymous".to_owned(),
            |principal| principal.subject.clone(),
        ))
    }
}

/// The rate limit: `per_second` requests a second sustained, `burst` at once.
pub fn governor_config(
    per_second: u32,
    burst: u32,
) -> anyhow::Result<GovernorConfig<PrincipalKey, StateInformationMiddleware>> {
    anyhow::ensure!(per_second > 0, "--rate-limit-per-second must be positive");
    anyhow::ensure!(burst > 0, "--rate-limit-burst must be positive");
    let period = Duration::from_secs(1) / per_second;
    GovernorConfigBuilder::default()
        .period(period)
        .burst_size(burst)
        .key_extractor(PrincipalKey)
        .use_headers()
        .finish()
        .ok_or_else(|| anyhow::anyhow!("invalid rate limit"))
}

/// A refusal of the limiter in the gateway's error shape, its
/// `retry-after` and `x-ratelimit-*` headers kept.
pub fn rate_limited(error: GovernorError) -> Response {
    match error {
        GovernorError::TooManyRequests { wait_time, headers } => {
            metrics::counter!("corebank_gateway_rate_limited_total").increment(1);
            // The limiter rounds a sub-second wait down to 0, which tells a
            // client to retry at once; a whole second is the least to ask.
            let wait_time = wait_time.max(1);
            let mut gateway_error = GatewayError::new(
                tonic::Code::ResourceExhausted,
                gateway_reason::RATE_LIMITED,
                format!("rate limit exceeded, retry in {wait_time} s"),
            );
            if let Some(headers) = headers {
                gateway_error.headers.extend(headers);
            }
            gateway_error
                .headers
                .insert(http::header::RETRY_AFTER, HeaderValue::from(wait_time));
            gateway_error.into_response()
        }
        other => {
            tracing::error!(error = %other, "rate limiter failed");
            GatewayError::new(
                tonic::Code::Internal,
                "INTERNAL",
                crate::errors::OPAQUE_MESSAGE,
            )
            .into_response()
        }
    }
}
