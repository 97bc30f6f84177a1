//! Tokens already verified. A signature check costs far more than the RPC it
//! guards (an Ed25519 verify is tens of microseconds, an RS256 one more), and
//! a partner's request through the gateway presents its token three times:
//! to the gateway, and twice to the backend (the gateway's own token and the
//! forwarded one). A token is cached under the SHA-256 of its whole text,
//! signature included, so only the exact bytes that verified hit the cache; an
//! entry lives until the token expires or for [`MAX_AGE`], whichever is
//! sooner, so a key withdrawn from a JWKS stops being honoured within that.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::principal::Principal;
use super::verify::Audience;

/// The longest a verified token is trusted without checking it again.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Entries kept at most; past it, expired ones go, and if none has, all do.
pub const CAPACITY: usize = 10_000;

type Key = [u8; 32];

struct Entry {
    principal: Principal,
    /// Seconds since the epoch after which the entry is not used.
    until: u64,
}

/// A bounded map from a token's hash to the principal it verified as.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<Key, Entry>>,
}

impl VerifiedTokens {
    /// The principal `token` verified as for `audience`, while still fresh.
    pub fn get(&self, token: &str, audience: Audience) -> Option<Principal> {
        let key = key(token, audience);
        let entries = self.entries.read().expect("token cache lock");
        let entry = entries.get(&key)?;
        (now() < entry.until).then(|| entry.principal.clone())
    }

    /// Remembers that `token` verified as `principal` and expires at `exp`.
    pub fn insert(&self, token: &str, audience: Audience, principal: &Principal, exp: u64) {
        let until = exp.min(now() + MAX_AGE.as_secs());
        let mut entries = self.entries.write().expect("token cache lock");
        if entries.len() >= CAPACITY {
            let now = now();
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key(token, audience),
            Entry {
                principal: principal.clone(),
                until,
            },
        );
    }

    /// Entries held, fresh or not yet purged.
    pub fn count(&self) -> usize {
        self.entries.read().expect("token cache lock").len()
    }
}

fn key(token: &str, audience: Audience) -> Key {
    let mut hash = Sha256::new();
    hash.update([audience as u8]);
    hash.update(token.as_bytes());
    hash.finalize().into()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
