//! corebank-transaction: the public record of every money movement (transfer,
//! deposit, withdrawal) and its status, served over gRPC as
//! `corebank.v1.TransactionService`.
//!
//! Creating a movement stores it PENDING with a `transaction.<kind>.requested`
//! event in the outbox, which starts the orchestrator's saga; the saga's
//! commands (on queue `transaction.commands`) move it to COMPLETED or FAILED,
//! each announced as an event and answered with a reply (and, while the saga
//! waits for a fraud review, to REVIEW).

pub mod accounts;
pub mod consumer;
pub mod domain;
pub mod grpc;
pub mod messages;
pub mod store;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use corebank_platform::auth::ServiceAuth;
use corebank_platform::clock::SharedClock;
use corebank_platform::config::RequestArgs;
use corebank_platform::db::SchemaSpec;

use crate::accounts::AccountDirectory;
use corebank_platform::grpc::GrpcServer;
use corebank_platform::messaging::{
    self, Broker, OutboxRelay, QueueConsumer, QueueSpec, RelayConfig,
};
use corebank_platform::service::{Bound, Context, Service};
use corebank_proto::v1::transaction_service_server::TransactionServiceServer;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::consumer::CommandHandler;
use crate::grpc::TransactionApi;
use crate::store::TransactionStore;
use crate::watch::StatusHub;

/// The schema's migrations (`migrations/transaction/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/transaction");

/// What the transaction service owns in PostgreSQL.
pub const SCHEMA: SchemaSpec = SchemaSpec {
    schema: "transaction",
    role: "corebank_transaction",
    append_only: &["transaction_status_change"],
    migrator: &MIGRATOR,
};

/// The fully qualified gRPC service name, as health reports it.
pub const GRPC_SERVICE: &str = "corebank.v1.TransactionService";

/// How long sent outbox rows and inbox rows are kept.
const MESSAGE_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Flags of the transaction service.
#[derive(Debug, Clone, clap::Args)]
pub struct TransactionArgs {
    /// gRPC listen address.
    #[arg(
        id = "transaction_addr",
        long = "transaction-addr",
        env = "COREBANK_TRANSACTION_ADDR",
        default_value = TransactionService::DEFAULT_ADDR
    )]
    pub addr: SocketAddr,

    /// The account service, asked who owns an account (tenancy).
    #[arg(
        id = "transaction_account_endpoint",
        long = "transaction-account-endpoint",
        env = "COREBANK_TRANSACTION_ACCOUNT_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub account_endpoint: String,

    /// How long each round of the service's relay waits for the rows
    /// committing meanwhile before it publishes the handed-over ones (the
    /// creates' requests, the consumer's replies and events), in
    /// milliseconds: the sagas that arrive together then start together,
    /// and share their consumer batches and AMQP messages downstream. Each
    /// of those messages goes out up to that much later; 0 publishes them
    /// at once.
    #[arg(
        long = "transaction-request-gather-ms",
        env = "COREBANK_TRANSACTION_REQUEST_GATHER_MS",
        default_value_t = 2
    )]
    pub request_gather_ms: u64,
}

/// The transaction service as `corebank up`, `serve` and the test harness run it.
#[derive(Debug, Clone, Copy)]
pub struct TransactionService;

impl Service for TransactionService {
    const NAME: &'static str = "transaction";
    const SCHEMA: SchemaSpec = SCHEMA;
    const DEFAULT_ADDR: &'static str = "127.0.0.1:50053";
    const CALLS: &'static [&'static str] = &["account"];
    type Args = TransactionArgs;
    type Settings = Settings;

    fn queues() -> Vec<QueueSpec> {
        vec![consumer::queue_spec()]
    }

    fn listen_addr(args: &TransactionArgs) -> SocketAddr {
        args.addr
    }

    fn settings(context: Context, args: &TransactionArgs) -> anyhow::Result<Settings> {
        let account_endpoint = context
            .peer_endpoint("account")
            .unwrap_or_else(|| args.account_endpoint.clone());
        Ok(Settings {
            account_endpoint,
            auth: context.auth,
            pool: context.pool,
            clock: context.clock,
            requests: context.requests,
            broker: context.broker,
            request_gather: Duration::from_millis(args.request_gather_ms),
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
    /// A pool logged in as `corebank_transaction`, search path `transaction`.
    pub pool: PgPool,
    pub clock: SharedClock,
    pub requests: RequestArgs,
    /// The broker the outbox relay publishes to and the command consumer reads from.
    pub broker: Broker,
    /// Who it trusts, what it presents to its peers, and its TLS.
    pub auth: ServiceAuth,
    /// The account service's gRPC endpoint, asked who owns an account.
    pub account_endpoint: String,
    /// How long each round of the relay gathers handed-over rows (see
    /// [`TransactionArgs::request_gather_ms`]).
    pub request_gather: Duration,
}

/// A bound, ready-to-run transaction service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    settings: Settings,
    store: TransactionStore,
}

impl Application {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn build(settings: Settings, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = corebank_platform::listen::bind(addr).await?;
        // Creates hand their events to the relay `run_until_stopped` starts
        // in this process (see `waking_relay_after`).
        let outbox = messaging::handover_key(&settings.pool, "transaction creates").await;
        let store = TransactionStore::new(settings.pool.clone(), settings.requests.idempotency())
            .with_outbox(outbox);
        Ok(Self {
            listener,
            settings,
            store,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves gRPC, consumes saga commands, relays the outbox and listens for
    /// status changes until `shutdown` is cancelled. On shutdown, intake stops
    /// first (gRPC drains, the consumer finishes its batch), then the relay
    /// flushes what they wrote.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Settings {
            pool,
            clock,
            requests,
            broker,
            auth,
            account_endpoint,
            request_gather,
        } = self.settings;
        let intake = shutdown.child_token();
        let relay = OutboxRelay::new(pool.clone(), broker.clone())
            .with_config(RelayConfig {
                handover_gather: request_gather,
                ..RelayConfig::default()
            })
            .spawn();
        let hub = StatusHub::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(hub.clone().listen(self.store.clone(), intake.clone()));
        tasks.spawn(
            QueueConsumer::new(
                broker,
                pool,
                consumer::queue_spec(),
                CommandHandler::new(clock.clone()),
            )
            .run(intake.clone()),
        );
        tasks.spawn(purge(self.store.clone(), clock.clone(), intake.clone()));

        let accounts = AccountDirectory::connect_lazy(&account_endpoint, &auth.credentials)?;
        let api = TransactionApi::new(
            self.store,
            accounts,
            hub,
            clock,
            requests.amount_limits(),
            intake.clone(),
        );
        let server = GrpcServer {
            name: "transaction",
            services: vec![GRPC_SERVICE],
            auth,
        };
        let result = server
            .serve(
                self.listener,
                Routes::new(TransactionServiceServer::new(api)),
                intake.clone(),
            )
            .await;

        intake.cancel();
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "transaction service task panicked");
            }
        }
        relay.stop().await;
        result
    }
}

/// Forgets expired idempotency keys and old outbox and inbox rows.
async fn purge(store: TransactionStore, clock: SharedClock, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = clock.now();
                if let Err(error) = store.purge(now, now - MESSAGE_RETENTION).await {
                    tracing::warn!(%error, "purge of idempotency keys and old messages failed");
                }
            }
        }
    }
}
