//! What a client presents to a corebank gRPC port: a bearer token (fixed, or
//! signed and renewed from the development key), optionally the token of the
//! principal it acts for, and optionally a TLS client identity; and, with
//! traces on, the `traceparent` of the calling span.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::ON_BEHALF_OF;
use super::devkey::{DevKey, TokenSpec};

/// A gRPC channel that presents [`Credentials`] on every call.
pub type AuthedChannel = InterceptedService<Channel, Credentials>;

enum TokenSource {
    Anonymous,
    Fixed(AsciiMetadataValue),
    /// Signed on demand, renewed once half its lifetime has passed.
    Signed(Box<Signed>),
}

struct Signed {
    key: DevKey,
    spec: TokenSpec,
    current: Mutex<Option<(AsciiMetadataValue, Instant)>>,
}

/// A client's credentials; cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    token: Arc<TokenSource>,
    on_behalf_of: Option<AsciiMetadataValue>,
    tls: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = match &*self.token {
            TokenSource::Anonymous => "none".to_owned(),
            TokenSource::Fixed(_) => "[fixed token]".to_owned(),
            TokenSource::Signed(signed) => format!("[signed for {}]", signed.spec.subject),
        };
        f.debug_struct("Credentials")
            .field("token", &token)
            .field("on_behalf_of", &self.on_behalf_of.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Credentials {
    /// No token: only health answers such a caller.
    pub fn anonymous() -> Self {
        Self::from_source(TokenSource::Anonymous)
    }

    /// A fixed bearer token (`--service-token`, `COREBANK_TOKEN`).
    pub fn bearer(token: &str) -> anyhow::Result<Self> {
        Ok(Self::from_source(TokenSource::Fixed(header_value(token)?)))
    }

    /// Tokens as `spec` says, signed with `key` and renewed before they expire.
    pub fn signed(key: DevKey, spec: TokenSpec) -> Self {
        Self::from_source(TokenSource::Signed(Box::new(Signed {
            key,
            spec,
            current: Mutex::new(None),
        })))
    }

    fn from_source(token: TokenSource) -> Self {
        Self {
            token: Arc::new(token),
            on_behalf_of: None,
            tls: None,
        }
    }

    /// Also forwards `token` as the principal this caller acts for
    /// ([`ON_BEHALF_OF`]); honoured only when the bearer has scope `delegate`.
    pub fn on_behalf_of(mut self, token: &str) -> anyhow::Result<Self> {
        self.on_behalf_of = Some(header_value(token)?);
        Ok(self)
    }

    /// Connects over TLS (server verification, and a client identity if
    /// `tls` has one).
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The client TLS these credentials connect with, if any.
    pub fn tls(&self) -> Option<&ClientTlsConfig> {
        self.tls.as_ref()
    }

    /// The `authorization` value presented now, if any.
    pub fn authorization(&self) -> Result<Option<AsciiMetadataValue>, tonic::Status> {
        match &*self.token {
            TokenSource::Anonymous => Ok(None),
            TokenSource::Fixed(value) => Ok(Some(value.clone())),
            TokenSource::Signed(signed) => {
                let Signed { key, spec, current } = &**signed;
                let mut current = current.lock().expect("token lock");
                let renew_after = spec.ttl / 2;
                if let Some((value, signed_at)) = &*current
                    && signed_at.elapsed() < renew_after
                {
                    return Ok(Some(value.clone()));
                }
                let token = key.issue(spec).map_err(|error| {
                    tracing::error!(%error, "cannot sign a service token");
                    tonic::Status::internal("cannot sign a service token")
                })?;
                let value = header_value(&token)
                    .map_err(|_| tonic::Status::internal("cannot sign a service token"))?;
                *current = Some((value.clone(), Instant::now()));
                Ok(Some(value))
            }
        }
    }

    /// A lazily connecting channel to `endpoint` that presents these
    /// credentials (and TLS, when configured). With TLS configured the
    /// endpoint must be `https://`: tonic applies TLS by the URL's scheme
    /// and would otherwise send the bearer token in plain text.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> anyhow::Result<AuthedChannel> {
        let endpoint = match &self.tls {
            Some(tls) => {
                anyhow::ensure!(
                    endpoint.uri().scheme_str() == Some("https"),
                    "TLS is configured (--tls-ca) but endpoint {} is not https://",
                    endpoint.uri()
                );
                endpoint.tls_config(tls.clone())?
            }
            None => endpoint,
        };
        Ok(InterceptedService::new(
            endpoint.connect_lazy(),
            self.clone(),
        ))
    }

    /// [`Self::connect_lazy`] on an endpoint URL, with the usual timeouts.
    pub fn channel(&self, endpoint: &str) -> anyhow::Result<AuthedChannel> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|error| anyhow::anyhow!("invalid endpoint {endpoint:?}: {error}"))?
            .connect_timeout(Duration::from_secs(5));
        self.connect_lazy(endpoint)
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.authorization()? {
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(value) = &self.on_behalf_of {
            request.metadata_mut().insert(ON_BEHALF_OF, value.clone());
        }
        // The callee's span continues the caller's trace.
        crate::tracing_otel::inject(request.metadata_mut());
        Ok(request)
    }
}

fn header_value(token: &str) -> anyhow::Result<AsciiMetadataValue> {
    let token = token.trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token);
    let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| anyhow::anyhow!("a token must be printable ASCII"))?;
    value.set_sensitive(true);
    Ok(value)
}
