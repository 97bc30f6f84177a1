//! corebank-customer: customers, their personal data and their KYC lifecycle
//! (`PENDING → VERIFIED | REJECTED`, `VERIFIED ⇄ SUSPENDED`), served over gRPC
//! as `corebank.v1.CustomerService`.

pub mod domain;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;

use corebank_platform::auth::ServiceAuth;
use corebank_platform::clock::SharedClock;
use corebank_platform::config::RequestArgs;
use corebank_platform::db::SchemaSpec;
use corebank_platform::grpc::GrpcServer;
use corebank_platform::messaging::{self, Broker, OutboxRelay};
use corebank_platform::service::{Bound, Context, Service};
use corebank_proto::v1::customer_service_server::CustomerServiceServer;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::grpc::CustomerApi;
use crate::store::CustomerStore;

/// The schema's migrations (`migrations/customer/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/customer");

/// What the customer service owns in PostgreSQL.
pub const SCHEMA: SchemaSpec = SchemaSpec {
    schema: "customer",
    role: "corebank_customer",
    append_only: &["kyc_event"],
    migrator: &MIGRATOR,
};

/// The fully qualified gRPC service name, as health reports it.
pub const GRPC_SERVICE: &str = "corebank.v1.CustomerService";

/// Flags of the customer service.
#[derive(Debug, Clone, clap::Args)]
pub struct CustomerArgs {
    /// gRPC listen address.
    #[arg(
        id = "customer_addr",
        long = "customer-addr",
        env = "COREBANK_CUSTOMER_ADDR",
        default_value = CustomerService::DEFAULT_ADDR
    )]
    pub addr: SocketAddr,
}

/// The customer service as `corebank up`, `serve` and the test harness run it.
#[derive(Debug, Clone, Copy)]
pub struct CustomerService;

impl Service for CustomerService {
    const NAME: &'static str = "customer";
    const SCHEMA: SchemaSpec = SCHEMA;
    const DEFAULT_ADDR: &'static str = "127.0.0.1:50051";
    type Args = CustomerArgs;
    type Settings = Settings;

    fn listen_addr(args: &CustomerArgs) -> SocketAddr {
        args.addr
    }

    fn settings(context: Context, _args: &CustomerArgs) -> anyhow::Result<Settings> {
        Ok(Settings {
            auth: context.auth,
            pool: context.pool,
            clock: context.clock,
            requests: context.requests,
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
    /// A pool logged in as `corebank_customer`, search path `customer`.
    pub pool: PgPool,
    pub clock: SharedClock,
    pub requests: RequestArgs,
    /// Where KYC events go (through the outbox).
    pub broker: Broker,
    /// Who it trusts, what it presents to its peers, and its TLS.
    pub auth: ServiceAuth,
}

/// A bound, ready-to-run customer service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    api: CustomerApi,
    clock: SharedClock,
    pool: PgPool,
    broker: Broker,
    auth: ServiceAuth,
}

impl Application {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn build(settings: Settings, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = corebank_platform::listen::bind(addr).await?;
        let store = CustomerStore::new(settings.pool.clone(), settings.requests.idempotency());
        let api = CustomerApi::new(store.clone(), settings.clock.clone());
        Ok(Self {
            auth: settings.auth,
            listener,
            api,
            clock: settings.clock,
            pool: settings.pool,
            broker: settings.broker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let purge = corebank_platform::idempotency::spawn_purge(
            self.pool.clone(),
            self.clock.clone(),
            shutdown.clone(),
        );
        let relay = OutboxRelay::new(self.pool.clone(), self.broker.clone()).spawn();
        let message_purge =
            messaging::spawn_purge(self.pool.clone(), self.clock.clone(), shutdown.clone());
        let server = GrpcServer {
            name: "customer",
            services: vec![GRPC_SERVICE],
            auth: self.auth,
        };
        let result = server
            .serve(
                self.listener,
                Routes::new(CustomerServiceServer::new(self.api)),
                shutdown,
            )
            .await;
        purge.abort();
        message_purge.abort();
        // Requests in flight finished first; the relay then flushes what they wrote.
        relay.stop().await;
        result
    }
}
