//! corebank-fraud: screens every money movement as a saga step, from local
//! state only (features kept from events and from the screen commands
//! themselves), with a versioned rule set, and keeps the analyst's review
//! queue, alerts and watchlist, served as `corebank.v1.FraudService`.
//!
//! A screen answers APPROVE, DECLINE (`FRAUD_DECLINED` with the rules that
//! fired) or REVIEW: the saga parks until an analyst decides or the review's
//! deadline passes, when the rule's timeout policy decides and the decision is
//! recorded as automatic. Every decision keeps the rule-set version and the
//! feature snapshot it used, so it re-evaluates to the same outcome.

pub mod consumer;
pub mod domain;
pub mod grpc;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use corebank_platform::auth::ServiceAuth;
use corebank_platform::clock::SharedClock;
use corebank_platform::config::RequestArgs;
use corebank_platform::db::SchemaSpec;
use corebank_platform::grpc::GrpcServer;
use corebank_platform::messaging::{self, Broker, OutboxRelay, QueueConsumer, QueueSpec};
use corebank_platform::service::{Bound, Context, Service};
use corebank_proto::v1::fraud_service_server::FraudServiceServer;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::consumer::{EventHandler, ScreenHandler};
use crate::grpc::FraudApi;
use crate::store::FraudStore;

/// The schema's migrations (`migrations/fraud/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/fraud");

/// What the fraud service owns in PostgreSQL. Decisions, rule-set versions
/// and the analysts' action log are never edited.
pub const SCHEMA: SchemaSpec = SchemaSpec {
    schema: "fraud",
    role: "corebank_fraud",
    append_only: &["decision", "rule_set", "analyst_action"],
    migrator: &MIGRATOR,
};

/// The fully qualified gRPC service name, as health reports it.
pub const GRPC_SERVICE: &str = "corebank.v1.FraudService";

/// How often open reviews past their deadline are decided.
pub const REVIEW_SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// Every queue the fraud service consumes.
pub fn queue_specs() -> Vec<QueueSpec> {
    vec![consumer::command_queue(), consumer::event_queue()]
}

/// Flags of the fraud service.
#[derive(Debug, Clone, clap::Args)]
pub struct FraudArgs {
    /// gRPC listen address of the analyst API.
    #[arg(
        id = "fraud_addr",
        long = "fraud-addr",
        env = "COREBANK_FRAUD_ADDR",
        default_value = FraudService::DEFAULT_ADDR
    )]
    pub addr: SocketAddr,
    /// How long an analyst has to decide a review, unless its rule says
    /// otherwise (e.g. `24h`, `90m`, `3600s`); at most 7 days, so a review
    /// always ends long before the source's hold could expire (30 days).
    #[arg(
        long = "review-deadline",
        env = "COREBANK_REVIEW_DEADLINE",
        default_value = "24h",
        value_parser = parse_review_deadline
    )]
    pub review_deadline: Duration,
}

/// A duration like `24h`, `90m`, `45s` or `2d`, between 1 minute and 7 days.
pub fn parse_review_deadline(text: &str) -> Result<Duration, String> {
    let deadline = corebank_platform::config::parse_duration(text)?;
    if !domain::validate::REVIEW_DEADLINE.contains(&deadline) {
        return Err(format!("{text:?}: must be between 1 minute and 7 days"));
    }
    Ok(deadline)
}

/// The fraud service as `corebank up`, `serve` and the test harness run it.
#[derive(Debug, Clone, Copy)]
pub struct FraudService;

impl Service for FraudService {
    const NAME: &'static str = "fraud";
    const SCHEMA: SchemaSpec = SCHEMA;
    const DEFAULT_ADDR: &'static str = "127.0.0.1:50055";
    type Args = FraudArgs;
    type Settings = Settings;

    fn queues() -> Vec<QueueSpec> {
        queue_specs()
    }

    fn listen_addr(args: &FraudArgs) -> SocketAddr {
        args.addr
    }

    fn settings(context: Context, args: &FraudArgs) -> anyhow::Result<Settings> {
        Ok(Settings {
            auth: context.auth,
            pool: context.pool,
            clock: context.clock,
            requests: context.requests,
            broker: context.broker,
            review_deadline: args.review_deadline,
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
    /// A pool logged in as `corebank_fraud`, search path `fraud`.
    pub pool: PgPool,
    pub clock: SharedClock,
    pub requests: RequestArgs,
    /// Screen commands and events in, replies and events out (through the outbox).
    pub broker: Broker,
    /// The review deadline when the rule that asked for a review sets none.
    pub review_deadline: Duration,
    /// Who it trusts, what it presents to its peers, and its TLS.
    pub auth: ServiceAuth,
}

/// A bound, ready-to-run fraud service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    store: FraudStore,
    api: FraudApi,
    clock: SharedClock,
    pool: PgPool,
    broker: Broker,
    review_deadline: Duration,
    auth: ServiceAuth,
}

impl Application {
    /// Binds `addr` (port 0 picks a free port) and makes sure a rule set exists.
    pub async fn build(settings: Settings, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = corebank_platform::listen::bind(addr).await?;
        let store = FraudStore::new(settings.pool.clone(), settings.requests.idempotency());
        store.ensure_rule_set(settings.clock.now()).await?;
        let api = FraudApi::new(store.clone(), settings.clock.clone());
        Ok(Self {
            auth: settings.auth,
            listener,
            store,
            api,
            clock: settings.clock,
            pool: settings.pool,
            broker: settings.broker,
            review_deadline: settings.review_deadline,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled: screens commands, keeps features
    /// from events, and decides reviews whose deadline passed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let purge = corebank_platform::idempotency::spawn_purge(
            self.pool.clone(),
            self.clock.clone(),
            shutdown.clone(),
        );
        let message_purge =
            messaging::spawn_purge(self.pool.clone(), self.clock.clone(), shutdown.clone());
        let sweep = tokio::spawn(expire_reviews(
            self.store.clone(),
            self.clock.clone(),
            shutdown.clone(),
        ));
        let commands = QueueConsumer::new(
            self.broker.clone(),
            self.pool.clone(),
            consumer::command_queue(),
            ScreenHandler::new(self.clock.clone(), self.review_deadline),
        );
        let commands = tokio::spawn(commands.run(shutdown.clone()));
        let events = QueueConsumer::new(
            self.broker.clone(),
            self.pool.clone(),
            consumer::event_queue(),
            EventHandler::new(self.clock.clone()),
        );
        let events = tokio::spawn(events.run(shutdown.clone()));
        let relay = OutboxRelay::new(self.pool.clone(), self.broker.clone()).spawn();
        let server = GrpcServer {
            name: "fraud",
            services: vec![GRPC_SERVICE],
            auth: self.auth,
        };
        let result = server
            .serve(
                self.listener,
                Routes::new(FraudServiceServer::new(self.api)),
                shutdown,
            )
            .await;
        purge.abort();
        message_purge.abort();
        sweep.abort();
        // Consumers finish their batch first; the relay then flushes what they wrote.
        let _ = commands.await;
        let _ = events.await;
        relay.stop().await;
        result
    }
}

/// How often the review queue's gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// Sets `corebank_fraud_reviews_open` and
/// `corebank_fraud_review_oldest_open_seconds` (every replica reports the
/// same figures: they share the table).
async fn sample_review_queue(store: &FraudStore, clock: &SharedClock) {
    let summary = match store.conn().await {
        Ok(mut conn) => store::reviews::open_summary(&mut conn, clock.now())
            .await
            .map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match summary {
        Ok((open, oldest)) => {
            metrics::gauge!("corebank_fraud_reviews_open").set(open as f64);
            metrics::gauge!("corebank_fraud_review_oldest_open_seconds").set(oldest);
        }
        Err(error) => tracing::debug!(%error, "review queue gauges not refreshed"),
    }
}

/// Decides open reviews past their deadline by their timeout policy, as the
/// injected clock tells time; a full batch is followed at once by the next.
async fn expire_reviews(store: FraudStore, clock: SharedClock, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REVIEW_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauges = corebank_platform::telemetry::Every::new(GAUGES_EVERY);
    loop {
        if gauges.due() {
            sample_review_queue(&store, &clock).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                match consumer::expire_reviews(&store, clock.now()).await {
                    Ok(0) => {}
                    Ok(expired) => {
                        tracing::info!(expired, "reviews decided at their deadline");
                        if expired >= store::EXPIRY_BATCH {
                            tick.reset_immediately();
                        }
                    }
                    Err(error) => tracing::warn!(%error, "review expiry sweep failed"),
                }
            }
        }
    }
}
