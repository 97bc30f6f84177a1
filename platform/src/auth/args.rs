//! Auth settings, once for every service: flags with environment variables
//! (secrets never printed), turned into what a service runs with: the
//! authenticator its server layer uses, the credentials its clients present,
//! and its TLS configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::credentials::Credentials;
use super::devkey::{DevKey, TokenSpec, development_key_path};
use super::verify::{Audience, Authenticator, KeySource};
use super::{DEFAULT_INTERNAL_AUDIENCE, DEFAULT_ISSUER, DEFAULT_PARTNER_AUDIENCE, SERVICE_SCOPE};

/// How long a self-signed service token lives (renewed at half of it).
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// TLS for a client: the CA that signed the servers' certificates and,
/// for mTLS, the client's own certificate and key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM certificate presented by this process (server certificate for
    /// its own port, client certificate when calling others).
    #[arg(long, env = "COREBANK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "COREBANK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate that signed the servers' certificates; set it to
    /// call corebank services over TLS.
    #[arg(long, env = "COREBANK_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The client TLS configuration, if `--tls-ca` is set.
    pub fn client_tls(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some(identity) = self.identity()? {
            tls = tls.identity(identity);
        }
        Ok(Some(tls))
    }

    fn identity(&self) -> anyhow::Result<Option<Identity>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(read(cert)?, read(key)?))),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        }
    }
}

/// Server-side TLS flags (the certificate and key are [`ClientTlsArgs`]'s).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM CA certificate of the clients: when set, every caller must present
    /// a certificate it signed (mTLS), and such a caller is a service.
    #[arg(long, env = "COREBANK_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Who a service trusts and how it presents itself to its peers.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Public key (PEM: Ed25519, P-256 or RSA) that signs tokens; the
    /// development key when neither this nor `--jwks-url` is given.
    #[arg(long, env = "COREBANK_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS URL of the identity provider (e.g. Keycloak's certs endpoint):
    /// `https://`, or `http://` for a sidecar on loopback.
    #[arg(long, env = "COREBANK_JWKS_URL", conflicts_with = "jwt_public_key")]
    pub jwks_url: Option<String>,
    /// PEM CA certificate(s) trusted for an `https://` `--jwks-url` besides
    /// the system's roots: the provider's private PKI.
    #[arg(long, env = "COREBANK_JWKS_CA_FILE", requires = "jwks_url")]
    pub jwks_ca_file: Option<PathBuf>,
    /// Least time between two JWKS fetches.
    #[arg(long, env = "COREBANK_JWKS_REFRESH_FLOOR", default_value = "30s", value_parser = crate::config::parse_duration)]
    pub jwks_refresh_floor: Duration,
    /// Expected `iss` of every token.
    #[arg(long, env = "COREBANK_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub jwt_issuer: String,
    /// `aud` of partner tokens (REST gateway).
    #[arg(long, env = "COREBANK_PARTNER_AUDIENCE", default_value = DEFAULT_PARTNER_AUDIENCE)]
    pub partner_audience: String,
    /// `aud` of service and operator tokens (internal gRPC).
    #[arg(long, env = "COREBANK_INTERNAL_AUDIENCE", default_value = DEFAULT_INTERNAL_AUDIENCE)]
    pub internal_audience: String,
    /// Token this service presents to its peers; in development, without
    /// it, the service signs its own with the development key.
    #[arg(long, env = "COREBANK_SERVICE_TOKEN", hide_env_values = true)]
    pub service_token: Option<SecretString>,
    /// The development signing key's file.
    #[arg(long, env = "COREBANK_DEV_SIGNING_KEY")]
    pub dev_signing_key: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    #[command(flatten)]
    pub server_tls: ServerTlsArgs,
}

impl AuthArgs {
    fn dev_key(&self) -> anyhow::Result<DevKey> {
        DevKey::load_or_create_at(
            &self
                .dev_signing_key
                .clone()
                .unwrap_or_else(development_key_path),
        )
    }

    /// The authenticator these flags describe.
    pub fn authenticator(&self) -> anyhow::Result<Authenticator> {
        let keys = if let Some(path) = &self.jwt_public_key {
            KeySource::PemFile(path.clone())
        } else if let Some(url) = &self.jwks_url {
            KeySource::Jwks {
                url: url.clone(),
                floor: self.jwks_refresh_floor,
                ca_file: self.jwks_ca_file.clone(),
            }
        } else {
            KeySource::Ed25519(self.dev_key()?.verifying_key())
        };
        Ok(Authenticator::new(keys)?
            .with_issuer(&self.jwt_issuer)
            .with_audiences(&self.partner_audience, &self.internal_audience))
    }

    /// Everything service `name` needs: its authenticator, the credentials
    /// it presents (`--service-token`, or a token it signs as
    /// `service:<name>` with the development key), and its TLS.
    pub fn service_auth(&self, name: &str) -> anyhow::Result<ServiceAuth> {
        let external_keys = self.jwt_public_key.is_some() || self.jwks_url.is_some();
        let mut credentials = match &self.service_token {
            Some(token) => Credentials::bearer(token.expose_secret())?,
            // Peers would not trust a development token: the client
            // certificate (mTLS) is the service's identity.
            None if external_keys => Credentials::anonymous(),
            None => {
                let mut spec =
                    TokenSpec::new(format!("service:{name}"), SERVICE_SCOPE, Audience::Internal)
                        .with_ttl(SERVICE_TOKEN_TTL);
                spec.issuer = self.jwt_issuer.clone();
                spec.audience = self.internal_audience.clone();
                Credentials::signed(self.dev_key()?, spec)
            }
        };
        if let Some(tls) = self.tls.client_tls()? {
            credentials = credentials.with_tls(tls);
        }
        Ok(ServiceAuth {
            authenticator: Arc::new(self.authenticator()?),
            credentials,
            tls: self.server_tls()?,
        })
    }

    /// The server TLS configuration, if `--tls-cert` is set.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let Some(identity) = self.tls.identity()? else {
            anyhow::ensure!(
                self.server_tls.tls_client_ca.is_none(),
                "--tls-client-ca needs --tls-cert and --tls-key"
            );
            return Ok(None);
        };
        let mut tls = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.server_tls.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(tls))
    }
}

/// What a service runs with: who it trusts, what it presents to its peers,
/// and its server TLS.
#[derive(Debug, Clone)]
pub struct ServiceAuth {
    pub authenticator: Arc<Authenticator>,
    pub credentials: Credentials,
    pub tls: Option<ServerTlsConfig>,
}

impl ServiceAuth {
    /// Trusts `key` and signs `service:<name>` tokens with it, without TLS
    /// (tests, and `corebank up` in development).
    pub fn development(key: &DevKey, name: &str) -> Self {
        let spec = TokenSpec::new(format!("service:{name}"), SERVICE_SCOPE, Audience::Internal)
            .with_ttl(SERVICE_TOKEN_TTL);
        Self {
            authenticator: Arc::new(key.authenticator()),
            credentials: Credentials::signed(key.clone(), spec),
            tls: None,
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))
}

/// The subject (common name, else first DNS name) of a TLS client
/// certificate the server verified, if the connection has one.
pub(crate) fn client_certificate_subject(extensions: &http::Extensions) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    let (_, cert) = X509Certificate::from_der(certs.first()?.as_ref()).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map(str::to_owned);
    let dns_name = || {
        cert.subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
            })
    };
    common_name
        .or_else(dns_name)
        .map(|name| format!("service:{name}"))
}
