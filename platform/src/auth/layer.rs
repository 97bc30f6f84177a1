//! The server side: one tower layer in front of every corebank gRPC service.
//! It authenticates the caller (bearer token for the internal audience, or a
//! verified TLS client certificate), lets a caller holding `delegate` act
//! for the partner whose token it forwards, checks the method's declared
//! scope, and leaves the [`Principal`] in the request extensions, where
//! handlers read it with [`Principal::of`].

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;

use super::principal::{Principal, missing_scope};
use super::scope::required_scope;
use super::verify::{Audience, AuthError, Authenticator};
use super::{DELEGATE_SCOPE, ON_BEHALF_OF};

/// Authenticates and authorizes every request of a gRPC server.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

type HealthService = HealthServer<tonic_health::server::HealthService>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        let path = request.uri().path().to_owned();
        if path.starts_with(&format!("/{}/", HealthService::NAME)) {
            return Box::pin(inner.call(request));
        }
        let presented = Presented::of(&request);
        Box::pin(async move {
            match authorize(&authenticator, &path, presented).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => {
                    tracing::info!(method = %path, code = ?status.code(), reason = status.message(), "request refused");
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// What a request presents, read before the request moves on.
struct Presented {
    token: Result<Option<String>, tonic::Status>,
    on_behalf_of: Result<Option<String>, tonic::Status>,
    certificate: Option<String>,
}

impl Presented {
    fn of<B>(request: &http::Request<B>) -> Self {
        let headers = request.headers();
        Self {
            token: bearer(headers, http::header::AUTHORIZATION.as_str()),
            on_behalf_of: bearer(headers, ON_BEHALF_OF),
            certificate: super::args::client_certificate_subject(request.extensions()),
        }
    }
}

/// The effective principal of a request to `path`, allowed to call it.
async fn authorize(
    authenticator: &Authenticator,
    path: &str,
    presented: Presented,
) -> Result<Principal, tonic::Status> {
    let principal = authenticate(authenticator, presented).await?;
    match required_scope(path) {
        Some(scope) if !principal.has_scope(scope) => Err(missing_scope(scope).into_status()),
        // Methods outside corebank's protos (reflection) need a valid caller only.
        _ => Ok(principal),
    }
}

async fn authenticate(
    authenticator: &Authenticator,
    presented: Presented,
) -> Result<Principal, tonic::Status> {
    let Some(token) = presented.token? else {
        if let Some(subject) = presented.certificate {
            return Ok(Principal::service(subject));
        }
        return Err(AuthError::Missing.into());
    };
    let caller = authenticator.verify(&token, Audience::Internal).await?;
    let Some(forwarded) = presented.on_behalf_of? else {
        return Ok(caller);
    };
    if !caller.scopes.contains(DELEGATE_SCOPE) {
        return Err(tonic::Status::permission_denied(format!(
            "{ON_BEHALF_OF} needs scope {DELEGATE_SCOPE}"
        )));
    }
    Ok(authenticator.verify(&forwarded, Audience::Partner).await?)
}

/// The token in header `name` (`Bearer <token>`; the prefix is optional for
/// the forwarded token).
fn bearer(headers: &http::HeaderMap, name: &str) -> Result<Option<String>, tonic::Status> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| tonic::Status::unauthenticated("malformed credentials"))?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        Some(_) => return Err(tonic::Status::unauthenticated("expected a bearer token")),
        None if name != http::header::AUTHORIZATION.as_str() => value,
        None => return Err(tonic::Status::unauthenticated("expected a bearer token")),
    };
    if token.is_empty() {
        return Err(AuthError::Missing.into());
    }
    Ok(Some(token.to_owned()))
}
