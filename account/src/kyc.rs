//! The KYC gate: the customer service says whether a customer may open
//! accounts. Asked over gRPC, never while a database transaction is open.

use std::time::Duration;

use corebank_platform::ApiError;
use corebank_platform::auth::{AuthedChannel, Credentials};
use corebank_proto::v1 as pb;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use tonic::transport::Endpoint;
use uuid::Uuid;

use crate::domain::reason;

/// How long one call to the customer service may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// What the customer service says of a customer who may open accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCustomer {
    pub kyc_version: i64,
    /// The partner owning the customer; `None` for the bank's own.
    pub partner_id: Option<String>,
}

/// A lazily connected client of `corebank.v1.CustomerService`.
#[derive(Debug, Clone)]
pub struct CustomerDirectory {
    client: CustomerServiceClient<AuthedChannel>,
}

impl CustomerDirectory {
    /// Connects on first use, so the account service starts even while the
    /// customer service is down.
    pub fn connect_lazy(endpoint: &str, credentials: &Credentials) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT);
        let channel = credentials.connect_lazy(endpoint)?;
        Ok(Self {
            client: CustomerServiceClient::new(channel),
        })
    }

    /// Succeeds when the customer exists and is VERIFIED, with the customer's
    /// KYC version and owning partner.
    #[tracing::instrument(skip_all, fields(customer_id = %customer_id), err)]
    pub async fn require_verified(&self, customer_id: Uuid) -> Result<VerifiedCustomer, ApiError> {
        let mut request = tonic::Request::new(pb::GetCustomerRequest {
            customer_id: customer_id.to_string(),
            reveal_national_id: false,
        });
        request.set_timeout(CALL_TIMEOUT);
        let customer = match self.client.clone().get_customer(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(lookup_failed(customer_id, &status)),
        };
        if customer.kyc_status() == pb::KycStatus::Verified {
            return Ok(VerifiedCustomer {
                kyc_version: customer.kyc_version,
                partner_id: Some(customer.partner_id).filter(|partner| !partner.is_empty()),
            });
        }
        let kyc_status = customer.kyc_status().as_str_name();
        Err(ApiError::failed_precondition(
            reason::KYC_NOT_VERIFIED,
            format!("customer {customer_id} is not verified"),
        )
        .with_metadata("kyc_status", kyc_status))
    }
}

fn lookup_failed(customer_id: Uuid, status: &tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::NotFound => ApiError::not_found(
            reason::CUSTOMER_NOT_FOUND,
            format!("customer {customer_id} not found"),
        ),
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::ResourceExhausted
        | tonic::Code::Aborted => {
            tracing::warn!(code = ?status.code(), message = status.message(), "customer service unavailable");
            ApiError::unavailable("the customer service is unavailable, retry later")
        }
        _ => ApiError::internal(anyhow::anyhow!(
            "customer service answered {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// Records a customer's KYC status in the local mirror unless a newer one is
/// already there (events may arrive out of order or twice).
pub async fn record(
    conn: &mut sqlx::PgConnection,
    customer_id: Uuid,
    status: &str,
    version: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into customer_kyc (customer_id, kyc_status, kyc_version, updated_at)
         values ($1, $2, $3, $4)
         on conflict (customer_id) do update
             set kyc_status = excluded.kyc_status, kyc_version = excluded.kyc_version,
                 updated_at = excluded.updated_at
             where customer_kyc.kyc_version < excluded.kyc_version",
    )
    .bind(customer_id)
    .bind(status)
    .bind(version)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
