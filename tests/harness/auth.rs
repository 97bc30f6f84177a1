//! Tokens and clients acting as someone: the operator the default clients
//! are, a partner reached through delegation (as the REST gateway calls), or
//! any credentials a test makes.

use corebank_platform::auth::{Audience, PARTNER_SCOPES, STAFF_SCOPES, TokenSpec};

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
