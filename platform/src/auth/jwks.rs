//! A JWKS cache: keys are fetched on first use and refetched when a token
//! names an unknown `kid` (a provider rotated its keys), with at most one
//! fetch in flight and at least `floor` between fetches, so a stream of
//! tokens with made-up `kid`s cannot turn the service into a fetch amplifier.
//! How a fetch reaches the provider (http or https) is the `fetch` module's.

mod fetch;

use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use self::fetch::JwksEndpoint;
use super::verify::{AuthError, PinnedKey};

/// How long one fetch may take, TLS handshake included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Verification keys from a JWKS URL.
pub struct JwksCache {
    endpoint: JwksEndpoint,
    floor: Duration,
    keys: RwLock<Vec<PinnedKey>>,
    /// Held while fetching; holds when the last fetch started.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", self.endpoint.url())
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache of the JWKS at `url`, refetched at most once per `floor`.
    /// An `https://` URL is verified against the system's roots plus the
    /// PEM certificates in `ca_file` (a private PKI); `http://` is fetched
    /// as is, for a sidecar on loopback.
    pub fn new(url: &str, floor: Duration, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        Ok(Self {
            endpoint: JwksEndpoint::new(url, ca_file)?,
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
        match tokio::time::timeout(FETCH_TIMEOUT, self.endpoint.fetch()).await {
            Ok(Ok(keys)) => {
                tracing::info!(url = %self.endpoint.url(), keys = keys.len(), "jwks fetched");
                *self.keys.write().expect("jwks lock") = keys;
            }
            Ok(Err(error)) => return self.unavailable(format!("{error:#}")),
            Err(_) => return self.unavailable("timed out".to_owned()),
        }
        Ok(self.lookup(kid))
    }

    fn unavailable(&self, error: String) -> Result<Vec<PinnedKey>, AuthError> {
        tracing::warn!(url = %self.endpoint.url(), %error, "jwks fetch failed");
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
