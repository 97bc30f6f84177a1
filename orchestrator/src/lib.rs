//! corebank-orchestrator: runs every money movement as a saga. A saga type is
//! a declared list of steps (a command to a participant over RabbitMQ, its
//! compensation, the pivot); a generic engine drives them with timeouts,
//! retries with backoff and full jitter, compensation, and parking at a step
//! that answers "wait" (a fraud review), keeping all state
//! in PostgreSQL so any replica can resume any saga. Operators list, inspect,
//! retry and abort sagas through `corebank.v1.SagaAdminService`.

pub mod consumer;
pub mod domain;
pub mod grpc;
pub mod messages;
pub mod runtime;
pub mod store;
pub mod timer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corebank_platform::auth::ServiceAuth;
use corebank_platform::clock::SharedClock;
use corebank_platform::db::SchemaSpec;
use corebank_platform::grpc::GrpcServer;
use corebank_platform::idempotency::IdempotencyConfig;
use corebank_platform::messaging::{Broker, OutboxRelay, QueueConsumer, QueueSpec};
use corebank_platform::service::{Bound, Context, Service};
use corebank_proto::v1::saga_admin_service_server::SagaAdminServiceServer;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::consumer::{ReplyHandler, RequestHandler};
pub use crate::domain::EngineConfig;
use crate::grpc::SagaAdminApi;
use crate::store::SagaStore;

/// The schema's migrations (`migrations/orchestrator/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/orchestrator");

/// What the orchestrator owns in PostgreSQL.
pub const SCHEMA: SchemaSpec = SchemaSpec {
    schema: "orchestrator",
    role: "corebank_orchestrator",
    append_only: &["saga_log"],
    migrator: &MIGRATOR,
};

/// The fully qualified gRPC service name, as health reports it.
pub const GRPC_SERVICE: &str = "corebank.v1.SagaAdminService";

/// The queues the orchestrator consumes (for declaring and tearing down).
pub fn queue_specs() -> Vec<QueueSpec> {
    vec![consumer::requests_queue(), consumer::replies_queue()]
}

/// Flags of the orchestrator.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorArgs {
    /// gRPC listen address of the admin API.
    #[arg(
        id = "orchestrator_addr",
        long = "orchestrator-addr",
        env = "COREBANK_ORCHESTRATOR_ADDR",
        default_value = OrchestratorService::DEFAULT_ADDR
    )]
    pub addr: SocketAddr,
    /// How long a saga step waits for its reply before re-sending, in milliseconds.
    #[arg(
        long = "saga-step-timeout-ms",
        env = "COREBANK_SAGA_STEP_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub step_timeout_ms: u64,
    /// Backoff ceiling after the first timeout (doubles per attempt), in milliseconds.
    #[arg(
        long = "saga-backoff-base-ms",
        env = "COREBANK_SAGA_BACKOFF_BASE_MS",
        default_value_t = 500
    )]
    pub backoff_base_ms: u64,
    /// Largest backoff ceiling, in milliseconds; post-pivot steps retry at this interval forever.
    #[arg(
        long = "saga-backoff-cap-ms",
        env = "COREBANK_SAGA_BACKOFF_CAP_MS",
        default_value_t = 60_000
    )]
    pub backoff_cap_ms: u64,
    /// Sends of a step before giving up on it (before the pivot) or flagging
    /// the saga for an operator (after it, and while compensating).
    #[arg(long = "saga-max-attempts", env = "COREBANK_SAGA_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// How often the timer loop looks for due sagas, in milliseconds.
    #[arg(
        long = "saga-timer-tick-ms",
        env = "COREBANK_SAGA_TIMER_TICK_MS",
        default_value_t = 200
    )]
    pub timer_tick_ms: u64,
    /// How long past a parked step's deadline (a fraud review's) the saga
    /// still waits for the final answer before compensating, in milliseconds.
    #[arg(
        long = "saga-wait-grace-ms",
        env = "COREBANK_SAGA_WAIT_GRACE_MS",
        default_value_t = 300_000
    )]
    pub wait_grace_ms: u64,
}

impl OrchestratorArgs {
    /// The engine timings these flags describe.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            step_timeout: Duration::from_millis(self.step_timeout_ms),
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_cap: Duration::from_millis(self.backoff_cap_ms.max(self.backoff_base_ms)),
            max_attempts: self.max_attempts,
            tick: Duration::from_millis(self.timer_tick_ms.max(1)),
            wait_grace: Duration::from_millis(self.wait_grace_ms),
            ..EngineConfig::default()
        }
    }
}

/// The orchestrator as `corebank up`, `serve` and the test harness run it.
/// Of the request rules it takes only how long idempotency keys are kept: it
/// serves no money-carrying requests of its own.
#[derive(Debug, Clone, Copy)]
pub struct OrchestratorService;

impl Service for OrchestratorService {
    const NAME: &'static str = "orchestrator";
    const SCHEMA: SchemaSpec = SCHEMA;
    const DEFAULT_ADDR: &'static str = "127.0.0.1:50054";
    type Args = OrchestratorArgs;
    type Settings = Settings;

    fn queues() -> Vec<QueueSpec> {
        queue_specs()
    }

    fn listen_addr(args: &OrchestratorArgs) -> SocketAddr {
        args.addr
    }

    fn settings(context: Context, args: &OrchestratorArgs) -> anyhow::Result<Settings> {
        Ok(Settings {
            auth: context.auth,
            pool: context.pool,
            clock: context.clock,
            broker: context.broker,
            engine: args.engine(),
            idempotency: context.requests.idempotency(),
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

/// What the orchestrator needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A pool logged in as `corebank_orchestrator`, search path `orchestrator`.
    pub pool: PgPool,
    pub clock: SharedClock,
    /// The broker handle; the caller owns (and eventually closes) it.
    pub broker: Broker,
    pub engine: EngineConfig,
    /// How long the keys of operator actions are kept.
    pub idempotency: IdempotencyConfig,
    /// Who it trusts, what it presents to its peers, and its TLS.
    pub auth: ServiceAuth,
}

/// A bound, ready-to-run orchestrator.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    settings: Settings,
}

impl Application {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn build(settings: Settings, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = corebank_platform::listen::bind(addr).await?;
        Ok(Self { listener, settings })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Runs the admin API, the outbox relay, both consumers, the timer loop
    /// and the purge of old messages and idempotency keys until `shutdown` is
    /// cancelled (or one of them fails), then waits for all of them to stop.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Settings {
            pool,
            clock,
            broker,
            engine,
            idempotency,
            auth,
        } = self.settings;
        let config = Arc::new(engine);
        let stop = shutdown.child_token();
        let store = SagaStore::new(pool.clone(), idempotency);

        let relay = OutboxRelay::new(pool.clone(), broker.clone()).spawn();
        let purge =
            corebank_platform::messaging::spawn_purge(pool.clone(), clock.clone(), stop.clone());
        let key_purge =
            corebank_platform::idempotency::spawn_purge(pool.clone(), clock.clone(), stop.clone());
        let requests = QueueConsumer::new(
            broker.clone(),
            pool.clone(),
            consumer::requests_queue(),
            RequestHandler {
                config: config.clone(),
                clock: clock.clone(),
            },
        );
        let replies = QueueConsumer::new(
            broker.clone(),
            pool.clone(),
            consumer::replies_queue(),
            ReplyHandler {
                config: config.clone(),
                clock: clock.clone(),
            },
        );
        let requests = tokio::spawn(requests.run(stop.clone()));
        let replies = tokio::spawn(replies.run(stop.clone()));
        let timers = tokio::spawn(timer::run(
            store.clone(),
            config.clone(),
            clock.clone(),
            stop.clone(),
        ));

        let api = SagaAdminApi::new(store, config, clock);
        let server = GrpcServer {
            name: "orchestrator",
            services: vec![GRPC_SERVICE],
            auth,
        };
        let served = server
            .serve(
                self.listener,
                Routes::new(SagaAdminServiceServer::new(api)),
                stop.clone(),
            )
            .await;
        stop.cancel();
        purge.abort();
        key_purge.abort();

        // The consumers finish their batch and the timers their round; the
        // relay then flushes what they wrote.
        let (requests, replies, timers) = tokio::join!(requests, replies, timers);
        relay.stop().await;
        requests?;
        replies?;
        timers?;
        tracing::info!("orchestrator stopped");
        served
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        orchestrator: OrchestratorArgs,
    }

    #[test]
    fn the_flags_default_to_port_50054_and_production_timings() {
        let cli = Cli::parse_from(["corebank"]);
        assert_eq!(cli.orchestrator.addr.port(), 50054);
        assert_eq!(
            cli.orchestrator.engine().step_timeout,
            Duration::from_secs(10)
        );
        let fast = Cli::parse_from([
            "corebank",
            "--saga-step-timeout-ms",
            "300",
            "--saga-max-attempts",
            "2",
        ]);
        assert_eq!(
            fast.orchestrator.engine().step_timeout,
            Duration::from_millis(300)
        );
        assert_eq!(fast.orchestrator.engine().max_attempts, 2);
        assert_eq!(
            cli.orchestrator.engine().wait_grace,
            Duration::from_secs(300)
        );
        let graceful = Cli::parse_from(["corebank", "--saga-wait-grace-ms", "1500"]);
        assert_eq!(
            graceful.orchestrator.engine().wait_grace,
            Duration::from_millis(1500)
        );
        assert!(Cli::try_parse_from(["corebank", "--saga-max-attempts", "0"]).is_err());
    }

    #[test]
    fn the_migration_creates_the_platform_outbox_and_inbox() {
        let migration = include_str!("../../migrations/orchestrator/0001_orchestrator.sql");
        assert!(migration.contains(corebank_platform::messaging::OUTBOX_INBOX_DDL.trim()));
    }
}
