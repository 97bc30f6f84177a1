//! Tokens and clients acting as someone: the operator the default clients
//! are, a partner reached through delegation (as the REST gateway calls), or
//! any credentials a test makes.

use corebank_platform::auth::{Audience, Claims, PARTNER_SCOPES, STAFF_SCOPES, TokenSpec};

use super::*;

/// The subject of the default clients' operator token.
pub const OPERATOR: &str = "operator-test";

/// The subject of the gateway's token in [`TestApp::partner`].
pub const GATEWAY: &str = "service:gateway";

/// An operator token with every staff and partner scope.
pub(super) fn operator_credentials(key: &DevKey) -> Credentials {
    let scopes = STAFF_SCOPES
        .iter()
        .chain(PARTNER_SCOPES)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    Credentials::signed(
        key.clone(),
        TokenSpec::new(OPERATOR, scopes, Audience::Internal),
    )
}

/// One client per service, all presenting the same credentials.
#[derive(Debug, Clone)]
pub struct Clients {
    pub customer: CustomerServiceClient<AuthedChannel>,
    pub account: AccountServiceClient<AuthedChannel>,
    pub transaction: TransactionServiceClient<AuthedChannel>,
    pub sagas: SagaAdminServiceClient<AuthedChannel>,
    pub fraud: FraudServiceClient<AuthedChannel>,
    pub reporting: ReportingServiceClient<AuthedChannel>,
}

impl TestApp {
    /// A token signed with this app's key: `scopes` space-separated, valid
    /// for an hour.
    pub fn token(&self, subject: &str, scopes: &str, audience: Audience) -> String {
        self.auth_key
            .issue(&TokenSpec::new(subject, scopes, audience))
            .expect("sign a token")
    }

    /// Clients presenting `credentials` to every service.
    pub async fn clients(&self, credentials: &Credentials) -> Clients {
        let channel = |addr: SocketAddr| {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint");
            credentials.connect_lazy(endpoint).expect("channel")
        };
        Clients {
            customer: CustomerServiceClient::new(channel(self.customer_addr)),
            account: AccountServiceClient::new(channel(self.account_addr)),
            transaction: TransactionServiceClient::new(channel(self.transaction_addr)),
            sagas: SagaAdminServiceClient::new(channel(self.orchestrator_addr)),
            fraud: FraudServiceClient::new(channel(self.fraud_addr)),
            reporting: ReportingServiceClient::new(channel(self.reporting_addr)),
        }
    }

    /// Clients presenting a bearer `token` only.
    pub async fn clients_with_token(&self, token: &str) -> Clients {
        self.clients(&Credentials::bearer(token).expect("token as a header"))
            .await
    }

    /// Clients acting for partner `subject` with `scopes`, as the REST
    /// gateway does: the gateway's own token (scope `delegate`) with the
    /// partner's token forwarded on behalf of it.
    pub async fn partner(&self, subject: &str, scopes: &str) -> Clients {
        let partner = self.token(subject, scopes, Audience::Partner);
        self.on_behalf_of(&partner).await
    }

    /// Clients forwarding `token` (a partner-audience token) through the
    /// gateway's delegation.
    pub async fn on_behalf_of(&self, token: &str) -> Clients {
        let gateway = self.token(GATEWAY, "delegate", Audience::Internal);
        let credentials = Credentials::bearer(&gateway)
            .and_then(|credentials| credentials.on_behalf_of(token))
            .expect("tokens as headers");
        self.clients(&credentials).await
    }
}

/// `claims` spoilt each way an attacker or a misconfigured provider would:
/// expired, not yet valid, foreign issuer or audience, signed by another key,
/// unsigned (`alg: none`), HS256 keyed with the public key the server
/// trusts, and not a token at all. Each must be refused as unauthenticated.
pub fn spoilt_tokens(key: &DevKey, claims: &Claims) -> Vec<(&'static str, String)> {
    let now = unix_now();
    let sign = |claims: &Claims| key.sign(claims).expect("sign");
    let spoil = |change: &dyn Fn(&mut Claims)| {
        let mut spoilt = claims.clone();
        change(&mut spoilt);
        sign(&spoilt)
    };
    let payload = b64(&serde_json::to_vec(claims).expect("claims"));
    let hs256 = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mac = hmac_sha256(
        &key.verifying_key().to_bytes(),
        format!("{hs256}.{payload}").as_bytes(),
    );
    let stranger = DevKey::generate().expect("a key");
    vec![
        ("expired", spoil(&|c| c.exp = now - 120)),
        ("not yet valid", spoil(&|c| c.nbf = Some(now + 120))),
        (
            "wrong issuer",
            spoil(&|c| c.iss = "https://idp.example.com".to_owned()),
        ),
        (
            "wrong audience",
            spoil(&|c| c.aud = "someone-else".to_owned()),
        ),
        ("bad signature", stranger.sign(claims).expect("sign")),
        (
            "alg none",
            format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
        ),
        (
            "HS256 with the public key",
            format!("{hs256}.{payload}.{}", b64(&mac)),
        ),
        ("not a token", "not-a-token".to_owned()),
    ]
}

/// Seconds since the epoch, as token claims count time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256, enough of it to forge the token an attacker would.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<_>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}
