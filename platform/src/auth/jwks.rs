//! A JWKS cache: keys are fetched on first use and refetched when a token
//! names an unknown `kid` (a provider rotated its keys), with at most one
//! fetch in flight and at least `floor` between fetches, so a stream of
//! tokens with made-up `kid`s cannot turn the service into a fetch amplifier.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;

use super::verify::{AuthError, PinnedKey};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Verification keys from a JWKS URL.
pub struct JwksCache {
    url: http::Uri,
    floor: Duration,
    keys: RwLock<Vec<PinnedKey>>,
    /// Held while fetching; holds when the last fetch started.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.url)
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache of the JWKS at `url` (`http://`), refetched at most once per `floor`.
    pub fn new(url: &str, floor: Duration) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .parse()
            .map_err(|error| anyhow::anyhow!("invalid JWKS URL {url:?}: {error}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http") && uri.host().is_some(),
            "JWKS URL {url:?}: only http:// URLs are fetched directly; put a TLS-terminating sidecar in front of an https provider"
        );
        Ok(Self {
            url: uri,
            floor,
            keys: RwLock::new(Vec::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// How many times the JWKS has been fetched.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The keys a token with `kid` may be signed by, fetching the JWKS when
    /// none is known yet and the floor allows.
    pub(crate) async fn keys_for(&self, kid: Option<&str>) -> Result<Vec<PinnedKey>, AuthError> {
        let known = self.lookup(kid);
        if !known.is_empty() {
            return Ok(known);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another caller may have fetched while this one waited.
        let known = self.lookup(kid);
        if !known.is_empty() {
            return Ok(known);
        }
        if last_fetch.is_some_and(|at| at.elapsed() < self.floor) {
            return Ok(Vec::new());
        }
        *last_fetch = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(FETCH_TIMEOUT, fetch(&self.url)).await {
            Ok(Ok(keys)) => {
                tracing::info!(url = %self.url, keys = keys.len(), "jwks fetched");
                *self.keys.write().expect("jwks lock") = keys;
            }
            Ok(Err(error)) => return self.unavailable(error.to_string()),
            Err(_) => return self.unavailable("timed out".to_owned()),
        }
        Ok(self.lookup(kid))
    }

    fn unavailable(&self, error: String) -> Result<Vec<PinnedKey>, AuthError> {
        tracing::warn!(url = %self.url, %error, "jwks fetch failed");
        if self.keys.read().expect("jwks lock").is_empty() {
            Err(AuthError::KeysUnavailable(error))
        } else {
            // The cached keys stay; the token's kid is simply unknown.
            Ok(Vec::new())
        }
    }

    fn lookup(&self, kid: Option<&str>) -> Vec<PinnedKey> {
        let keys = self.keys.read().expect("jwks lock");
        keys.iter()
            .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
            .cloned()
            .collect()
    }
}

async fn fetch(url: &http::Uri) -> anyhow::Result<Vec<PinnedKey>> {
    let host = url.host().unwrap_or_default();
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "jwks connection closed");
        }
    });
    let path = url.path_and_query().map_or("/", |path| path.as_str());
    let authority = url.authority().map_or(host, |authority| authority.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
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
    let set: JwkSet = serde_json::from_slice(&body)?;
    Ok(set.keys.iter().filter_map(PinnedKey::from_jwk).collect())
}
