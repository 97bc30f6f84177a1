//! The development signing key: made by `corebank up` or `corebank token
//! issue` on first use, trusted by every service unless `--jwt-public-key` or
//! `--jwks-url` says otherwise, so the quick start needs no identity provider.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::TryRngCore as _;

use super::verify::{Audience, Authenticator, Claims};
use super::{DEFAULT_INTERNAL_AUDIENCE, DEFAULT_ISSUER, DEFAULT_PARTNER_AUDIENCE};

/// The development key's file: `$XDG_DATA_HOME/corebank/auth-signing.key.pem`
/// or `~/.local/share/corebank/auth-signing.key.pem`.
pub fn development_key_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("corebank").join("auth-signing.key.pem")
}

/// What a token says, before it is signed.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub subject: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The `aud` value.
    pub audience: String,
    pub issuer: String,
    pub ttl: Duration,
}

impl TokenSpec {
    /// A token for `subject` with `scope`, for the default value of
    /// `audience`, the default issuer, valid for an hour.
    pub fn new(subject: impl Into<String>, scope: impl Into<String>, audience: Audience) -> Self {
        let audience = match audience {
            Audience::Partner => DEFAULT_PARTNER_AUDIENCE,
            Audience::Internal => DEFAULT_INTERNAL_AUDIENCE,
        };
        Self {
            subject: subject.into(),
            scope: scope.into(),
            audience: audience.to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            ttl: Duration::from_secs(3600),
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The claims of a token issued now.
    pub fn claims(&self) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub: self.subject.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: Some(now),
            iat: Some(now),
            scope: self.scope.clone(),
        }
    }
}

/// An Ed25519 key that signs development and test tokens.
#[derive(Clone)]
pub struct DevKey {
    signing: SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey").finish_non_exhaustive()
    }
}

impl DevKey {
    /// The development key at [`development_key_path`], made on first use.
    pub fn load_or_create() -> anyhow::Result<Self> {
        Self::load_or_create_at(&development_key_path())
    }

    /// The key at `path`, made (mode 0600) if there is none.
    pub fn load_or_create_at(path: &Path) -> anyhow::Result<Self> {
        if let Ok(pem) = std::fs::read_to_string(path) {
            return Self::from_pem(&pem);
        }
        let key = Self::generate()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match write_private(path, key.to_pem()?.as_bytes()) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), "created a development token signing key: use --jwt-public-key or --jwks-url in production");
                Ok(key)
            }
            // Another process made it first: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::from_pem(&std::fs::read_to_string(path)?)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A fresh random key (tests make one per app).
    pub fn generate() -> anyhow::Result<Self> {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|error| anyhow::anyhow!("no randomness for a signing key: {error}"))?;
        Self::from_signing_key(SigningKey::from_bytes(&secret))
    }

    pub fn from_signing_key(signing: SigningKey) -> anyhow::Result<Self> {
        let pem = pkcs8_pem(&signing)?;
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())?;
        Ok(Self { signing, encoding })
    }

    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let signing = SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|error| anyhow::anyhow!("not an Ed25519 PKCS#8 private key: {error}"))?;
        Self::from_signing_key(signing)
    }

    /// The private key as PKCS#8 PEM, as [`Self::load_or_create_at`] writes it.
    pub fn to_pem(&self) -> anyhow::Result<String> {
        pkcs8_pem(&self.signing)
    }

    /// The key as jsonwebtoken signs with it (to set header fields such as `kid`).
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// An authenticator trusting this key, with the default issuer and audiences.
    pub fn authenticator(&self) -> Authenticator {
        Authenticator::ed25519(self.verifying_key())
    }

    /// Signs `claims` (EdDSA): usually [`Claims`], any JSON object in tests.
    pub fn sign(&self, claims: &impl serde::Serialize) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            claims,
            &self.encoding,
        )?)
    }

    /// Signs a token issued now as `spec` says.
    pub fn issue(&self, spec: &TokenSpec) -> anyhow::Result<String> {
        self.sign(&spec.claims())
    }
}

/// PKCS#8 v1 (no public key inside): what OpenSSL 3.0 and jsonwebtoken read.
fn pkcs8_pem(key: &SigningKey) -> anyhow::Result<String> {
    let keypair = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let pem = keypair
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| anyhow::anyhow!("encoding the signing key: {error}"))?;
    Ok(pem.to_string())
}

/// Writes `bytes` to `path` (mode 0600) unless it exists, whole or not at
/// all: they go to a file of this process's own first, which is then linked
/// at `path` (failing with `AlreadyExists` if another process got there
/// first). A process reading `path` meanwhile (another replica starting at
/// the same moment) never sees it empty or half written.
#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{}.{}", std::process::id(), uuid::Uuid::new_v4()));
    let staged = std::path::PathBuf::from(staged);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::hard_link(&staged, path)
    })();
    let _ = std::fs::remove_file(&staged);
    written
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::DevKey;

    /// Replicas starting together race to make the key: each gets the
    /// whole key, the same one, never a file another is still writing.
    #[test]
    fn processes_racing_to_make_the_key_all_load_the_one_made() {
        let dir = std::env::temp_dir().join(format!("devkey-race-{}", uuid::Uuid::new_v4()));
        for round in 0..50 {
            let path = dir.join(format!("key-{round}.pem"));
            let keys: Vec<String> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| DevKey::load_or_create_at(&path)))
                    .collect();
                racers
                    .into_iter()
                    .map(|racer| {
                        let key = racer.join().expect("no panic").expect("the key loads");
                        key.to_pem().expect("a PEM")
                    })
                    .collect()
            });
            assert!(
                keys.iter().all(|key| *key == keys[0]),
                "round {round}: the racers loaded different keys"
            );
            let left: Vec<_> = std::fs::read_dir(&dir)
                .expect("the key's directory")
                .filter_map(Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().contains(".pem."))
                .collect();
            assert!(left.is_empty(), "round {round}: staged files left behind");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
