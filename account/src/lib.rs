//! corebank-account: accounts, balances, holds and the double-entry ledger,
//! served over gRPC as `corebank.v1.AccountService`.
//!
//! Every posting is a journal whose entries sum to zero per currency (checked
//! by the database at commit); deposits and withdrawals post against the
//! bank's settlement account of their currency.

pub mod consumer;
pub mod domain;
pub mod grpc;
pub mod kyc;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use corebank_platform::auth::ServiceAuth;
use corebank_platform::clock::SharedClock;
use corebank_platform::config::RequestArgs;
use corebank_platform::db::SchemaSpec;
use corebank_platform::grpc::GrpcServer;
use corebank_platform::messaging::{self, Broker, OutboxRelay, QueueConsumer, QueueSpec};
use corebank_platform::money::AmountLimits;
use corebank_platform::service::{Bound, Context, Service};
use corebank_proto::v1::account_service_server::AccountServiceServer;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::consumer::{CommandHandler, KycHandler};
use crate::grpc::AccountApi;
use crate::kyc::CustomerDirectory;
use crate::store::AccountStore;

/// The schema's migrations (`migrations/account/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/account");

/// What the account service owns in PostgreSQL. The ledger is append-only.
pub const SCHEMA: SchemaSpec = SchemaSpec {
    schema: "account",
    role: "corebank_account",
    append_only: &["journal", "entry", "account_event"],
    migrator: &MIGRATOR,
};

/// The fully qualified gRPC service name, as health reports it.
pub const GRPC_SERVICE: &str = "corebank.v1.AccountService";

/// How often active holds past their expiry are swept.
pub const HOLD_SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Flags of the account service.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountArgs {
    /// gRPC listen address.
    #[arg(
        id = "account_addr",
        long = "account-addr",
        env = "COREBANK_ACCOUNT_ADDR",
        default_value = AccountService::DEFAULT_ADDR
    )]
    pub addr: SocketAddr,
    /// Where the customer service answers (KYC checks).
    #[arg(
        long = "customer-endpoint",
        env = "COREBANK_CUSTOMER_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub customer_endpoint: String,
}

/// The account service as `corebank up`, `serve` and the test harness run it.
#[derive(Debug, Clone, Copy)]
pub struct AccountService;

impl Service for AccountService {
    const NAME: &'static str = "account";
    const SCHEMA: SchemaSpec = SCHEMA;
    const DEFAULT_ADDR: &'static str = "127.0.0.1:50052";
    const CALLS: &'static [&'static str] = &["customer"];
    type Args = AccountArgs;
    type Settings = Settings;

    fn queues() -> Vec<QueueSpec> {
        vec![consumer::command_queue(), consumer::kyc_queue()]
    }

    fn listen_addr(args: &AccountArgs) -> SocketAddr {
        args.addr
    }

    fn settings(context: Context, args: &AccountArgs) -> anyhow::Result<Settings> {
        let customer_endpoint = context
            .peer_endpoint("customer")
            .unwrap_or_else(|| args.customer_endpoint.clone());
        Ok(Settings {
            auth: context.auth,
            pool: context.pool,
            clock: context.clock,
            requests: context.requests,
            customer_endpoint,
            broker: context.broker,
        })
    }

    async fn start(
        settings: Settings,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bound> {
        let app = Application::build(settings, addr).await?;
        Ok(Bound::new(
            app.local_addr(),
            app.run_until_stopped(shutdown),
        ))
    }
}

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A pool logged in as `corebank_account`, search path `account`.
    pub pool: PgPool,
    pub clock: SharedClock,
    pub requests: RequestArgs,
    /// The customer service's gRPC endpoint, e.g. "http://127.0.0.1:50051".
    pub customer_endpoint: String,
    /// Saga commands in, replies and events out (through the outbox).
    pub broker: Broker,
    /// Who it trusts, what it presents to its peers, and its TLS.
    pub auth: ServiceAuth,
}

/// A bound, ready-to-run account service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    store: AccountStore,
    api: AccountApi,
    clock: SharedClock,
    pool: PgPool,
    broker: Broker,
    limits: AmountLimits,
    auth: ServiceAuth,
}

impl Application {
    /// Binds `addr` (port 0 picks a free port). The customer service is
    /// connected lazily, on the first KYC check.
    pub async fn build(settings: Settings, addr: SocketAddr) -> anyhow::Result<Self> {
        let customers = CustomerDirectory::connect_lazy(
            &settings.customer_endpoint,
            &settings.auth.credentials,
        )?;
        let listener = corebank_platform::listen::bind(addr).await?;
        let store = AccountStore::new(settings.pool.clone(), settings.requests.idempotency());
        let api = AccountApi::new(
            store.clone(),
            customers,
            settings.clock.clone(),
            settings.requests.amount_limits(),
        );
        Ok(Self {
            auth: settings.auth,
            listener,
            store,
            api,
            clock: settings.clock,
            pool: settings.pool,
            broker: settings.broker,
            limits: settings.requests.amount_limits(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, sweeping expired holds and
    /// purging old idempotency keys meanwhile.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let purge = corebank_platform::idempotency::spawn_purge(
            self.pool.clone(),
            self.clock.clone(),
            shutdown.clone(),
        );
        let sweep = tokio::spawn(expire_holds(
            self.store.clone(),
            self.clock.clone(),
            shutdown.clone(),
        ));
        let commands = QueueConsumer::new(
            self.broker.clone(),
            self.pool.clone(),
            consumer::command_queue(),
            CommandHandler::new(self.clock.clone(), self.limits),
        );
        let commands = tokio::spawn(commands.run(shutdown.clone()));
        let kyc = QueueConsumer::new(
            self.broker.clone(),
            self.pool.clone(),
            consumer::kyc_queue(),
            KycHandler::new(self.clock.clone()),
        );
        let kyc = tokio::spawn(kyc.run(shutdown.clone()));
        let message_purge =
            messaging::spawn_purge(self.pool.clone(), self.clock.clone(), shutdown.clone());
        let relay = OutboxRelay::new(self.pool.clone(), self.broker.clone()).spawn();
        let server = GrpcServer {
            name: "account",
            services: vec![GRPC_SERVICE],
            auth: self.auth,
        };
        let result = server
            .serve(
                self.listener,
                Routes::new(AccountServiceServer::new(self.api)),
                shutdown,
            )
            .await;
        purge.abort();
        sweep.abort();
        message_purge.abort();
        // Consumers finish their batch first; the relay then flushes what they wrote.
        let _ = commands.await;
        let _ = kyc.await;
        relay.stop().await;
        result
    }
}

/// Expires holds past their expiry, as the injected clock tells time; a full
/// batch is followed at once by the next.
async fn expire_holds(store: AccountStore, clock: SharedClock, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HOLD_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                match store.expire_holds(clock.now()).await {
                    Ok(0) => {}
                    Ok(expired) => {
                        tracing::info!(expired, "holds expired");
                        if expired >= store::holds::EXPIRY_BATCH {
                            tick.reset_immediately();
                        }
                    }
                    Err(error) => tracing::warn!(%error, "hold expiry sweep failed"),
                }
            }
        }
    }
}
