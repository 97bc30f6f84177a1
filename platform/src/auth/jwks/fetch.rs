//! One JWKS fetch: a GET over HTTP/1.1, through TLS for an `https://` URL.
//! An identity provider (Keycloak, any OIDC provider) serves its JWKS over
//! https, and whoever can swap that document can mint tokens, so the
//! provider's certificate must chain to the system's roots or to the
//! operator's own CA file (`--jwks-ca-file`, a private PKI) and name the
//! URL's host. Plain `http://` stays possible for a sidecar on loopback; on
//! any other host it works but is warned about at start.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::auth::verify::PinnedKey;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Where the JWKS is, and for `https://` how to reach it safely.
pub(super) struct JwksEndpoint {
    url: http::Uri,
    /// Boxed: the cache sits in an enum beside a small variant.
    tls: Option<Box<Tls>>,
}

/// The TLS side of an `https://` JWKS URL.
struct Tls {
    connector: TlsConnector,
    /// The name the provider's certificate must carry: the URL's host.
    server_name: ServerName<'static>,
}

impl JwksEndpoint {
    /// The endpoint of `url`; `ca_file` adds roots for an `https://` URL and
    /// is refused with `http://`, where it would silently do nothing.
    pub(super) fn new(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .parse()
            .map_err(|error| anyhow::anyhow!("invalid JWKS URL {url:?}: {error}"))?;
        let Some(host) = uri.host().map(bare_host) else {
            anyhow::bail!("JWKS URL {url:?} names no host");
        };
        let tls = match uri.scheme_str() {
            Some("https") => Some(Box::new(
                Tls::new(host, ca_file).with_context(|| format!("JWKS URL {url:?}"))?,
            )),
            Some("http") => {
                anyhow::ensure!(
                    ca_file.is_none(),
                    "--jwks-ca-file applies to an https:// JWKS URL, not {url:?}"
                );
                if !is_loopback(host) {
                    tracing::warn!(url = %uri, "jwks fetched over plain http from a host that is not loopback: anyone on the path can swap the signing keys; use https");
                }
                None
            }
            _ => anyhow::bail!("JWKS URL {url:?}: only http:// and https:// are fetched"),
        };
        Ok(Self { url: uri, tls })
    }

    pub(super) fn url(&self) -> &http::Uri {
        &self.url
    }

    /// The signing keys the JWKS holds now.
    pub(super) async fn fetch(&self) -> anyhow::Result<Vec<PinnedKey>> {
        let host = self.url.host().map(bare_host).unwrap_or_default();
        let stream = TcpStream::connect((host, self.port()))
            .await
            .with_context(|| format!("connecting to {host}:{}", self.port()))?;
        let Some(tls) = &self.tls else {
            return get(&self.url, stream).await;
        };
        let stream = tls
            .connector
            .connect(tls.server_name.clone(), stream)
            .await
            .context("tls handshake with the jwks provider")?;
        get(&self.url, stream).await
    }

    fn port(&self) -> u16 {
        let default = if self.tls.is_some() { 443 } else { 80 };
        self.url.port_u16().unwrap_or(default)
    }
}

impl Tls {
    fn new(host: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|error| anyhow::anyhow!("{host:?} is not a TLS server name: {error}"))?;
        // ring, as tonic's `tls-ring`: the process may link aws-lc-rs too
        // (lapin), and then rustls has no single default provider to pick.
        let provider = Arc::new(crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("tls protocol versions")?
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// The system's root certificates plus those in `ca_file`.
fn roots(ca_file: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(%error, "cannot load a system root certificate");
    }
    let (_, skipped) = roots.add_parsable_certificates(system.certs);
    if skipped > 0 {
        tracing::debug!(skipped, "system root certificates rustls cannot use");
    }
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path)?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "no root certificate to verify the provider with: none in the system store and no --jwks-ca-file"
    );
    Ok(roots)
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> anyhow::Result<()> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the JWKS CA file {}", path.display()))?;
    let mut added = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate =
            certificate.with_context(|| format!("JWKS CA file {}", path.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("JWKS CA file {}", path.display()))?;
        added += 1;
    }
    anyhow::ensure!(
        added > 0,
        "JWKS CA file {} holds no PEM certificate",
        path.display()
    );
    Ok(())
}

/// GETs `url` over `stream` and reads the JWKS it answers.
async fn get<S>(url: &http::Uri, stream: S) -> anyhow::Result<Vec<PinnedKey>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("http handshake with the jwks provider")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "jwks connection closed");
        }
    });
    let path = url.path_and_query().map_or("/", |path| path.as_str());
    let authority = url.authority().map_or("", |authority| authority.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .context("requesting the jwks")?;
    anyhow::ensure!(
        response.status().is_success(),
        "jwks answered {}",
        response.status()
    );
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|error| anyhow::anyhow!("reading the jwks: {error}"))?
        .to_bytes();
    let set: JwkSet = serde_json::from_slice(&body).context("parsing the jwks")?;
    Ok(set.keys.iter().filter_map(PinnedKey::from_jwk).collect())
}

/// `host` without the brackets of an IPv6 literal (`[::1]`).
fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `host` (bare) is this machine, where plain http is acceptable.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for host in ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["keycloak.internal", "10.0.0.1", "localhost.example", "::2"] {
            assert!(!is_loopback(host), "{host}");
        }
        assert_eq!(bare_host("[::1]"), "::1");
    }

    #[test]
    fn a_ca_file_with_a_plain_http_url_is_refused() {
        let error = JwksEndpoint::new("http://127.0.0.1:8080/certs", Some(Path::new("ca.pem")))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("--jwks-ca-file"), "{error}");
    }

    #[test]
    fn other_schemes_are_refused() {
        let error = JwksEndpoint::new("ftp://idp.example/certs", None)
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("only http:// and https://"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let error = JwksEndpoint::new(
            "https://idp.example/certs",
            Some(Path::new("/nonexistent/jwks-ca.pem")),
        )
        .err()
        .expect("refused");
        assert!(
            format!("{error:#}").contains("/nonexistent/jwks-ca.pem"),
            "{error:#}"
        );
    }
}
