//! Client commands: a person working with corebank from a shell.

use corebank_platform::auth::AuthedChannel;
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use tonic::transport::Endpoint;

use crate::exit::{Exit, fail};
use crate::output::print;

/// Where the services are and how to print.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    #[arg(
        long,
        global = true,
        env = "COREBANK_CUSTOMER_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub customer_endpoint: String,
    #[arg(
        long,
        global = true,
        env = "COREBANK_ACCOUNT_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub account_endpoint: String,
    #[arg(
        long,
        global = true,
        env = "COREBANK_TRANSACTION_ENDPOINT",
        default_value = "http://127.0.0.1:50053"
    )]
    pub transaction_endpoint: String,
    #[arg(
        long,
        global = true,
        env = "COREBANK_ORCHESTRATOR_ENDPOINT",
        default_value = "http://127.0.0.1:50054"
    )]
    pub orchestrator_endpoint: String,
    #[arg(
        long,
        global = true,
        env = "COREBANK_FRAUD_ENDPOINT",
        default_value = "http://127.0.0.1:50055"
    )]
    pub fraud_endpoint: String,
    /// Print canonical proto3 JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Idempotency key for a mutating command; a fresh one when omitted.
    #[arg(long, global = true, env = "COREBANK_IDEMPOTENCY_KEY")]
    idempotency_key: Option<String>,
}

impl ClientArgs {
    pub fn key(&self) -> String {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
    }
}

/// A channel to `endpoint` presenting the operator's credentials
/// ([`crate::token::operator_credentials`]).
pub async fn channel(endpoint: &str) -> anyhow::Result<AuthedChannel> {
    let endpoint = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|error| {
            fail(
                Exit::BadInput,
                format!("invalid endpoint {endpoint:?}: {error}"),
            )
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30));
    crate::token::operator_credentials()?.connect_lazy(endpoint)
}

/// A channel to `endpoint` presenting `COREBANK_TOKEN`, or else a service
/// token signed with the development key: every scope, no tenant, as one
/// service calling another. The benches run as this; an operator's staff
/// scopes do not open accounts or move money.
pub fn service_channel(endpoint: &str) -> anyhow::Result<AuthedChannel> {
    let token = match std::env::var("COREBANK_TOKEN") {
        Ok(token) if !token.trim().is_empty() => token,
        _ => crate::token::development_token(
            "service:bench",
            corebank_platform::auth::SERVICE_SCOPE,
            corebank_platform::auth::Audience::Internal,
        )?,
    };
    let endpoint = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|error| {
            fail(
                Exit::BadInput,
                format!("invalid endpoint {endpoint:?}: {error}"),
            )
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .tcp_nodelay(true);
    corebank_platform::auth::Credentials::bearer(&token)?.connect_lazy(endpoint)
}

pub fn default_actor() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".to_owned())
}

#[derive(Debug, clap::Args)]
pub struct CustomerCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    action: CustomerAction,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KycFilter {
    Pending,
    Verified,
    Rejected,
    Suspended,
}

#[derive(Debug, clap::Subcommand)]
enum CustomerAction {
    /// Register a customer (KYC starts PENDING).
    Create {
        #[arg(long)]
        legal_name: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        phone: String,
        /// YYYY-MM-DD.
        #[arg(long)]
        date_of_birth: String,
        /// ISO 3166-1 alpha-2, e.g. DE.
        #[arg(long)]
        country: String,
        #[arg(long)]
        national_id: String,
    },
    /// Show one customer.
    Show {
        customer_id: String,
        /// Print the national id unmasked.
        #[arg(long)]
        reveal_national_id: bool,
    },
    /// List customers, optionally by KYC status.
    List {
        #[arg(long, value_enum)]
        kyc_status: Option<KycFilter>,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Change contact details.
    Update {
        customer_id: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        phone: Option<String>,
    },
    /// PENDING → VERIFIED.
    Verify(Decision),
    /// PENDING → REJECTED.
    Reject(Decision),
    /// VERIFIED → SUSPENDED.
    Suspend(Decision),
    /// SUSPENDED → VERIFIED.
    Reinstate(Decision),
    /// The KYC history.
    History { customer_id: String },
}

#[derive(Debug, clap::Args)]
struct Decision {
    customer_id: String,
    #[arg(long)]
    reason: String,
    /// Who decides; defaults to $USER.
    #[arg(long, default_value_t = default_actor())]
    actor: String,
}

impl Decision {
    fn request(self, key: String) -> pb::KycTransitionRequest {
        pb::KycTransitionRequest {
            customer_id: self.customer_id,
            idempotency_key: key,
            actor: self.actor,
            reason: self.reason,
        }
    }
}

pub async fn customer(command: CustomerCommand) -> anyhow::Result<()> {
    let args = command.client;
    let mut client = CustomerServiceClient::new(channel(&args.customer_endpoint).await?);
    let key = args.key();
    match command.action {
        CustomerAction::Create {
            legal_name,
            email,
            phone,
            date_of_birth,
            country,
            national_id,
        } => {
            let request = pb::CreateCustomerRequest {
                idempotency_key: key,
                legal_name,
                email,
                phone,
                date_of_birth,
                country,
                national_id,
            };
            print(
                &client.create_customer(request).await?.into_inner(),
                args.json,
            )
        }
        CustomerAction::Show {
            customer_id,
            reveal_national_id,
        } => {
            let request = pb::GetCustomerRequest {
                customer_id,
                reveal_national_id,
            };
            print(&client.get_customer(request).await?.into_inner(), args.json)
        }
        CustomerAction::List {
            kyc_status,
            page_size,
            page_token,
        } => {
            let kyc_status = match kyc_status {
                None => pb::KycStatus::Unspecified,
                Some(KycFilter::Pending) => pb::KycStatus::Pending,
                Some(KycFilter::Verified) => pb::KycStatus::Verified,
                Some(KycFilter::Rejected) => pb::KycStatus::Rejected,
                Some(KycFilter::Suspended) => pb::KycStatus::Suspended,
            } as i32;
            let request = pb::ListCustomersRequest {
                page_size,
                page_token,
                kyc_status,
            };
            print(
                &client.list_customers(request).await?.into_inner(),
                args.json,
            )
        }
        CustomerAction::Update {
            customer_id,
            email,
            phone,
        } => {
            let request = pb::UpdateCustomerRequest {
                customer_id,
                idempotency_key: key,
                email,
                phone,
            };
            print(
                &client.update_customer(request).await?.into_inner(),
                args.json,
            )
        }
        CustomerAction::Verify(decision) => print(
            &client
                .verify_customer(decision.request(key))
                .await?
                .into_inner(),
            args.json,
        ),
        CustomerAction::Reject(decision) => print(
            &client
                .reject_customer(decision.request(key))
                .await?
                .into_inner(),
            args.json,
        ),
        CustomerAction::Suspend(decision) => print(
            &client
                .suspend_customer(decision.request(key))
                .await?
                .into_inner(),
            args.json,
        ),
        CustomerAction::Reinstate(decision) => print(
            &client
                .reinstate_customer(decision.request(key))
                .await?
                .into_inner(),
            args.json,
        ),
        CustomerAction::History { customer_id } => {
            let request = pb::ListKycEventsRequest {
                customer_id,
                page_size: 100,
                page_token: String::new(),
            };
            print(
                &client.list_kyc_events(request).await?.into_inner(),
                args.json,
            )
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AccountCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    action: AccountAction,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Product {
    Checking,
    Savings,
}

#[derive(Debug, clap::Subcommand)]
enum AccountAction {
    /// Open an account for a VERIFIED customer.
    Open {
        #[arg(long)]
        customer_id: String,
        /// ISO 4217, e.g. USD.
        #[arg(long)]
        currency: String,
        #[arg(long, value_enum, default_value = "checking")]
        product: Product,
        /// How far below zero the available balance may go, e.g. "500.00".
        #[arg(long, default_value = "", allow_negative_numbers = true)]
        overdraft_limit: String,
    },
    /// Show one account.
    Show { account_id: String },
    /// List a customer's accounts.
    List {
        #[arg(long)]
        customer_id: String,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Ledger and available balance.
    Balance { account_id: String },
    /// Ledger entries, newest first, with the running balance.
    Entries {
        account_id: String,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Stop all holds, debits and credits.
    Freeze(Action),
    /// Lift a freeze.
    Unfreeze(Action),
    /// Close an empty account for good.
    Close(Action),
}

#[derive(Debug, clap::Args)]
struct Action {
    account_id: String,
    #[arg(long)]
    reason: String,
    #[arg(long, default_value_t = default_actor())]
    actor: String,
}

impl Action {
    fn request(self, key: String) -> pb::AccountActionRequest {
        pb::AccountActionRequest {
            account_id: self.account_id,
            idempotency_key: key,
            actor: self.actor,
            reason: self.reason,
        }
    }
}

pub async fn account(command: AccountCommand) -> anyhow::Result<()> {
    let args = command.client;
    let mut client = AccountServiceClient::new(channel(&args.account_endpoint).await?);
    let key = args.key();
    match command.action {
        AccountAction::Open {
            customer_id,
            currency,
            product,
            overdraft_limit,
        } => {
            let product = match product {
                Product::Checking => pb::AccountProduct::Checking,
                Product::Savings => pb::AccountProduct::Savings,
            } as i32;
            let request = pb::OpenAccountRequest {
                idempotency_key: key,
                customer_id,
                currency,
                product,
                overdraft_limit,
            };
            print(&client.open_account(request).await?.into_inner(), args.json)
        }
        AccountAction::Show { account_id } => print(
            &client
                .get_account(pb::GetAccountRequest { account_id })
                .await?
                .into_inner(),
            args.json,
        ),
        AccountAction::List {
            customer_id,
            page_size,
            page_token,
        } => {
            let request = pb::ListAccountsRequest {
                customer_id,
                page_size,
                page_token,
            };
            print(
                &client.list_accounts(request).await?.into_inner(),
                args.json,
            )
        }
        AccountAction::Balance { account_id } => print(
            &client
                .get_balance(pb::GetBalanceRequest { account_id })
                .await?
                .into_inner(),
            args.json,
        ),
        AccountAction::Entries {
            account_id,
            page_size,
            page_token,
        } => {
            let request = pb::ListEntriesRequest {
                account_id,
                page_size,
                page_token,
            };
            print(&client.list_entries(request).await?.into_inner(), args.json)
        }
        AccountAction::Freeze(action) => print(
            &client
                .freeze_account(action.request(key))
                .await?
                .into_inner(),
            args.json,
        ),
        AccountAction::Unfreeze(action) => print(
            &client
                .unfreeze_account(action.request(key))
                .await?
                .into_inner(),
            args.json,
        ),
        AccountAction::Close(action) => print(
            &client
                .close_account(action.request(key))
                .await?
                .into_inner(),
            args.json,
        ),
    }
}
