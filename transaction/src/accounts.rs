//! Who owns an account, asked of the account service over gRPC, so a
//! partner moves money only from its own accounts and reads only the
//! transactions that touch them. An account never changes owner, so answers
//! are kept for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corebank_platform::ApiError;
use corebank_platform::auth::{AuthedChannel, Credentials};
use corebank_platform::tenancy::Tenancy;
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use tonic::transport::Endpoint;
use uuid::Uuid;

/// How long one call to the account service may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The most owners kept; beyond it the cache starts over.
const CACHE_LIMIT: usize = 100_000;

/// The owner of an account: `None` for the bank's own accounts.
type Owner = Option<String>;

/// A lazily connected client of `corebank.v1.AccountService` for owners.
#[derive(Debug, Clone)]
pub struct AccountDirectory {
    client: AccountServiceClient<AuthedChannel>,
    owners: Arc<Mutex<HashMap<Uuid, Owner>>>,
}

impl AccountDirectory {
    /// Connects on first use, so the service starts while the account
    /// service is down.
    pub fn connect_lazy(endpoint: &str, credentials: &Credentials) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT);
        Ok(Self {
            client: AccountServiceClient::new(credentials.connect_lazy(endpoint)?),
            owners: Arc::default(),
        })
    }

    /// The owner of `account_id`, or `None` when no such account exists.
    async fn owner(&self, account_id: Uuid) -> Result<Option<Owner>, ApiError> {
        if let Some(owner) = self.cached(account_id) {
            return Ok(Some(owner));
        }
        let mut request = tonic::Request::new(pb::GetAccountRequest {
            account_id: account_id.to_string(),
        });
        request.set_timeout(CALL_TIMEOUT);
        let account = match self.client.clone().get_account(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "account service unavailable");
                return Err(ApiError::unavailable(
                    "the account service is unavailable, retry later",
                ));
            }
        };
        let owner = Some(account.partner_id).filter(|partner| !partner.is_empty());
        let mut owners = self.owners.lock().expect("owner cache");
        if owners.len() >= CACHE_LIMIT {
            owners.clear();
        }
        owners.insert(account_id, owner.clone());
        Ok(Some(owner))
    }

    fn cached(&self, account_id: Uuid) -> Option<Owner> {
        self.owners
            .lock()
            .expect("owner cache")
            .get(&account_id)
            .cloned()
    }

    /// Whether `tenancy` reaches `account_id`. Staff and services reach every
    /// account without asking.
    pub async fn reaches(&self, tenancy: &Tenancy, account_id: Uuid) -> Result<bool, ApiError> {
        if *tenancy == Tenancy::All {
            return Ok(true);
        }
        Ok(match self.owner(account_id).await? {
            Some(owner) => tenancy.reaches(owner.as_deref()),
            None => false,
        })
    }

    /// Whether `tenancy` reaches any of `accounts`.
    pub async fn reaches_any(
        &self,
        tenancy: &Tenancy,
        accounts: impl IntoIterator<Item = Uuid>,
    ) -> Result<bool, ApiError> {
        for account_id in accounts {
            if self.reaches(tenancy, account_id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
