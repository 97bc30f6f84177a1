//! Token verification. The algorithm is pinned by the key: an Ed25519 key
//! verifies EdDSA only, a P-256 key ES256 only, an RSA key RS256 only, so
//! `alg: none`, HS256 (including HS256 keyed with the public key's bytes) and
//! any algorithm other than the key's are refused before any signature check.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::cache::VerifiedTokens;
use super::jwks::JwksCache;
use super::principal::Principal;
use super::{DEFAULT_INTERNAL_AUDIENCE, DEFAULT_ISSUER, DEFAULT_PARTNER_AUDIENCE};

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Which audience a token must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Partner tokens, presented to the REST gateway (`aud = corebank`).
    Partner,
    /// Service, operator and gateway tokens, presented to internal gRPC
    /// ports (`aud = corebank-internal`).
    Internal,
}

/// The claims corebank signs (development and test tokens). Verification
/// reads only `sub` and `scope` itself; `iss`, `aud`, `exp` and `nbf` are
/// checked by the verifier, so a provider's `aud` array works too.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
}

#[derive(Deserialize)]
struct VerifiedClaims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: String,
}

/// Why a token was refused. Every variant but [`AuthError::KeysUnavailable`]
/// is the caller's fault (UNAUTHENTICATED).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted for its key")]
    Algorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::KeysUnavailable(_) => {
                tonic::Status::unavailable("token verification keys unavailable, retry later")
            }
            other => tonic::Status::unauthenticated(other.to_string()),
        }
    }
}

/// Where verification keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A public key PEM file (`--jwt-public-key`): Ed25519, P-256 or RSA.
    PemFile(PathBuf),
    /// PEM text in hand.
    Pem(String),
    /// A JWKS URL (`--jwks-url`), refetched on an unknown `kid` at most once
    /// per `floor`; an `https://` one is verified against the system's roots
    /// plus the PEM certificates in `ca_file` (`--jwks-ca-file`).
    Jwks {
        url: String,
        floor: Duration,
        ca_file: Option<PathBuf>,
    },
    /// An Ed25519 key in hand (the development key's public half, tests).
    Ed25519(VerifyingKey),
}

/// A verification key with the one algorithm it accepts.
#[derive(Clone)]
pub(crate) struct PinnedKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

impl PinnedKey {
    pub(crate) fn ed25519(key: &VerifyingKey) -> Self {
        Self {
            kid: None,
            key: DecodingKey::from_ed_der(key.as_bytes()),
            algorithm: Algorithm::EdDSA,
        }
    }

    /// The key of a PEM public key, its algorithm chosen by its type.
    pub(crate) fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else {
            anyhow::bail!("not an Ed25519, P-256 or RSA public key in PEM form");
        };
        Ok(Self {
            kid: None,
            key,
            algorithm,
        })
    }

    /// The key of a JWK, if it is a signing key of a type corebank accepts;
    /// symmetric (`oct`) keys never are.
    pub(crate) fn from_jwk(jwk: &Jwk) -> Option<Self> {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
                let raw = base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    params.x.trim_end_matches('='),
                )
                .ok()?;
                if raw.len() != 32 {
                    return None;
                }
                Algorithm::EdDSA
            }
            AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            _ => return None,
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self {
            kid: jwk.common.key_id.clone(),
            key,
            algorithm,
        })
    }
}

enum Keys {
    Static(Vec<PinnedKey>),
    Jwks(JwksCache),
}

/// Verifies bearer tokens and turns them into [`Principal`]s.
pub struct Authenticator {
    keys: Keys,
    verified: VerifiedTokens,
    issuer: String,
    partner_audience: String,
    internal_audience: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("partner_audience", &self.partner_audience)
            .field("internal_audience", &self.internal_audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Trusts `keys`, with the default issuer and audiences.
    pub fn new(keys: KeySource) -> anyhow::Result<Self> {
        let keys = match keys {
            KeySource::PemFile(path) => {
                let pem = std::fs::read(&path).map_err(|error| {
                    anyhow::anyhow!("cannot read the JWT public key {}: {error}", path.display())
                })?;
                Keys::Static(vec![PinnedKey::from_pem(&pem)?])
            }
            KeySource::Pem(pem) => Keys::Static(vec![PinnedKey::from_pem(pem.as_bytes())?]),
            KeySource::Jwks {
                url,
                floor,
                ca_file,
            } => Keys::Jwks(JwksCache::new(&url, floor, ca_file.as_deref())?),
            KeySource::Ed25519(key) => Keys::Static(vec![PinnedKey::ed25519(&key)]),
        };
        Ok(Self {
            keys,
            verified: VerifiedTokens::default(),
            issuer: DEFAULT_ISSUER.to_owned(),
            partner_audience: DEFAULT_PARTNER_AUDIENCE.to_owned(),
            internal_audience: DEFAULT_INTERNAL_AUDIENCE.to_owned(),
        })
    }

    /// Trusts one Ed25519 key (the development key, or a test's).
    pub fn ed25519(key: VerifyingKey) -> Self {
        Self::new(KeySource::Ed25519(key)).expect("an Ed25519 key needs no loading")
    }

    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    pub fn with_audiences(
        mut self,
        partner: impl Into<String>,
        internal: impl Into<String>,
    ) -> Self {
        self.partner_audience = partner.into();
        self.internal_audience = internal.into();
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` value tokens for `audience` must carry.
    pub fn audience(&self, audience: Audience) -> &str {
        match audience {
            Audience::Partner => &self.partner_audience,
            Audience::Internal => &self.internal_audience,
        }
    }

    /// Verifies `token` (without the `Bearer ` prefix) for `audience`; a
    /// token that verified in the last minute and has not expired is not
    /// checked again.
    pub async fn verify(&self, token: &str, audience: Audience) -> Result<Principal, AuthError> {
        if let Some(principal) = self.verified.get(token, audience) {
            return Ok(principal);
        }
        let (principal, exp) = self.verify_signature(token, audience).await?;
        self.verified.insert(token, audience, &principal, exp);
        Ok(principal)
    }

    /// How many verified tokens are remembered.
    pub fn cached_tokens(&self) -> usize {
        self.verified.count()
    }

    /// The principal `token` is remembered as, if it verified recently.
    pub fn verified_principal(&self, token: &str, audience: Audience) -> Option<Principal> {
        self.verified.get(token, audience)
    }

    async fn verify_signature(
        &self,
        token: &str,
        audience: Audience,
    ) -> Result<(Principal, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let candidates = match &self.keys {
            Keys::Static(keys) => keys
                .iter()
                .filter(|key| header.kid.is_none() || key.kid.is_none() || key.kid == header.kid)
                .cloned()
                .collect(),
            Keys::Jwks(cache) => cache.keys_for(header.kid.as_deref()).await?,
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let Some(key) = candidates.iter().find(|key| key.algorithm == header.alg) else {
            return Err(AuthError::Algorithm);
        };
        let validation = self.validation(key.algorithm, audience);
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, &key.key, &validation)
            .map_err(|error| AuthError::Invalid(reason(error.kind())))?;
        let scopes: BTreeSet<String> = data
            .claims
            .scope
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if data.claims.sub.trim().is_empty() {
            return Err(AuthError::Invalid("empty subject"));
        }
        let principal =
            Principal::from_token(data.claims.sub, scopes, audience == Audience::Internal);
        Ok((principal, data.claims.exp))
    }

    fn validation(&self, algorithm: Algorithm, audience: Audience) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[self.audience(audience)]);
        validation.required_spec_claims =
            HashSet::from(["exp", "iss", "aud", "sub"].map(str::to_owned));
        validation
    }
}

fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidAlgorithm => "algorithm not accepted",
        _ => "malformed",
    }
}
