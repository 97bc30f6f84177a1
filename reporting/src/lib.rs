//! corebank-reporting: the read side (CQRS). It projects the ledger's events
//! into read models (statements, daily totals, and the context they are
//! described with), makes signed auditor exports that verify offline with
//! only the files and a public key, and reconciles the read models against
//! the ledger, read over gRPC from the account service, never over SQL.
//!
//! The projection applies each account's entries strictly in the account's
//! sequence: a duplicate is a no-op and an entry that arrives before its
//! predecessor waits for it, so shuffled and duplicated deliveries build the
//! same read model, and a rebuild from the ledger builds it again.

pub mod consumer;
pub mod domain;
pub mod grpc;
pub mod ledger;
pub mod runs;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corebank_platform::auth::ServiceAuth;
use corebank_platform::clock::SharedClock;
use corebank_platform::config::RequestArgs;
use corebank_platform::db::SchemaSpec;
use corebank_platform::grpc::GrpcServer;
use corebank_platform::messaging::{self, Broker, ConsumerConfig, QueueConsumer, QueueSpec};
use corebank_platform::schedule;
use corebank_platform::service::{Bound, Context, Service};
use corebank_proto::v1::reporting_service_server::ReportingServiceServer;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::consumer::ProjectionHandler;
use crate::domain::export::{self, SigningKey};
use crate::grpc::ReportingApi;
use crate::ledger::Ledger;
use crate::runs::Signer;
use crate::store::ReportingStore;

/// The schema's migrations (`migrations/reporting/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/reporting");

/// What the reporting service owns in PostgreSQL. Exports and
/// reconciliation reports are never edited.
pub const SCHEMA: SchemaSpec = SchemaSpec {
    schema: "reporting",
    role: "corebank_reporting",
    append_only: &["export", "reconciliation", "reconciliation_mismatch"],
    migrator: &MIGRATOR,
};

/// The fully qualified gRPC service name, as health reports it.
pub const GRPC_SERVICE: &str = "corebank.v1.ReportingService";

/// How often the projection's lag is measured for the metrics.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Every queue the reporting service consumes.
pub fn queue_specs() -> Vec<QueueSpec> {
    vec![consumer::event_queue()]
}

/// Flags of the reporting service.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportingArgs {
    /// gRPC listen address.
    #[arg(
        id = "reporting_addr",
        long = "reporting-addr",
        env = "COREBANK_REPORTING_ADDR",
        default_value = "127.0.0.1:50056"
    )]
    pub addr: SocketAddr,
    /// Where the account service answers (the ledger, read for rebuilds and
    /// reconciliation).
    #[arg(
        id = "reporting_account_endpoint",
        long = "ledger-endpoint",
        env = "COREBANK_LEDGER_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub account_endpoint: String,
    /// The Ed25519 private key exports are signed with (PKCS#8 PEM, from
    /// `corebank keygen`). Unset: a development key, created on first use
    /// under the user's data directory.
    #[arg(long = "export-signing-key", env = "COREBANK_EXPORT_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// How often the read models are reconciled with the ledger (e.g. `24h`,
    /// `30m`); `0s` turns the schedule off.
    #[arg(
        long = "reconcile-every",
        env = "COREBANK_RECONCILE_EVERY",
        default_value = "24h",
        value_parser = corebank_platform::config::parse_duration
    )]
    pub reconcile_every: Duration,
    /// How long the projection waits, after an event arrives, for more to
    /// apply in the same transaction (at most 32), in milliseconds. The read
    /// models are that much staler at low load, and cost a transaction per
    /// batch instead of one per event; 0 applies each as it comes.
    #[arg(
        long = "projection-gather-ms",
        env = "COREBANK_PROJECTION_GATHER_MS",
        default_value_t = 100
    )]
    pub projection_gather_ms: u64,
}

/// The reporting service, as `corebank up`, `serve` and the test harness
/// run it.
#[derive(Debug, Clone, Copy)]
pub struct ReportingService;

impl Service for ReportingService {
    const NAME: &'static str = "reporting";
    const SCHEMA: SchemaSpec = SCHEMA;
    const DEFAULT_ADDR: &'static str = "127.0.0.1:50056";
    const CALLS: &'static [&'static str] = &["account"];
    type Args = ReportingArgs;
    type Settings = Settings;

    fn queues() -> Vec<QueueSpec> {
        queue_specs()
    }

    fn listen_addr(args: &ReportingArgs) -> SocketAddr {
        args.addr
    }

    fn settings(context: Context, args: &ReportingArgs) -> anyhow::Result<Settings> {
        let account_endpoint = context
            .peer_endpoint("account")
            .unwrap_or_else(|| args.account_endpoint.clone());
        Ok(Settings {
            auth: context.auth,
            pool: context.pool,
            clock: context.clock,
            requests: context.requests,
            broker: context.broker,
            account_endpoint,
            signing_key: match &args.signing_key {
                Some(path) => KeySource::File(path.clone()),
                None => KeySource::Development,
            },
            reconcile_every: args.reconcile_every,
            projection_gather: Duration::from_millis(args.projection_gather_ms),
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

/// The development signing key's file: `$XDG_DATA_HOME/corebank/` or
/// `~/.local/share/corebank/`.
pub fn development_key_path() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("corebank").join("export-signing.key.pem")
}

/// Loads the signing key from `path`, or the development key (made on
/// first use) when there is none.
pub fn load_signing_key(path: Option<&Path>) -> anyhow::Result<SigningKey> {
    if let Some(path) = path {
        let pem = std::fs::read_to_string(path).map_err(|error| {
            anyhow::anyhow!(
                "cannot read the export signing key {}: {error}",
                path.display()
            )
        })?;
        return Ok(export::parse_signing_key_pem(&pem)?);
    }
    let path = development_key_path();
    if let Ok(pem) = std::fs::read_to_string(&path) {
        return Ok(export::parse_signing_key_pem(&pem)?);
    }
    let key = export::generate_signing_key()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match write_private(&path, export::signing_key_pem(&key)?.as_bytes()) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "created a development export signing key: use --export-signing-key in production");
            Ok(key)
        }
        // Another process made it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(
            export::parse_signing_key_pem(&std::fs::read_to_string(&path)?)?,
        ),
        Err(error) => Err(error.into()),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Where the export signing key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A PKCS#8 PEM file (`--export-signing-key`).
    File(PathBuf),
    /// The development key, made on first use ([`development_key_path`]).
    Development,
    /// A key in hand (tests).
    Key(SigningKey),
}

impl KeySource {
    pub fn load(&self) -> anyhow::Result<SigningKey> {
        match self {
            Self::File(path) => load_signing_key(Some(path)),
            Self::Development => load_signing_key(None),
            Self::Key(key) => Ok(key.clone()),
        }
    }
}

/// What the service needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A pool logged in as `corebank_reporting`, search path `reporting`.
    pub pool: PgPool,
    pub clock: SharedClock,
    pub requests: RequestArgs,
    /// Events in.
    pub broker: Broker,
    /// The account service's gRPC endpoint, e.g. "http://127.0.0.1:50052".
    pub account_endpoint: String,
    pub signing_key: KeySource,
    /// Zero: no scheduled reconciliation.
    pub reconcile_every: Duration,
    /// How long a projection batch waits for more events (zero: not at all).
    pub projection_gather: Duration,
    /// Who it trusts, what it presents to its peers, and its TLS.
    pub auth: ServiceAuth,
}

/// A bound, ready-to-run reporting service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    store: ReportingStore,
    api: ReportingApi,
    ledger: Ledger,
    clock: SharedClock,
    pool: PgPool,
    broker: Broker,
    reconcile_every: Duration,
    projection_gather: Duration,
    auth: ServiceAuth,
}

impl Application {
    /// Binds `addr` (port 0 picks a free port) and publishes the signing key.
    pub async fn build(settings: Settings, addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = corebank_platform::listen::bind(addr).await?;
        let store = ReportingStore::new(settings.pool.clone(), settings.requests.idempotency());
        let signer = Signer::new(settings.signing_key.load()?)?;
        {
            let mut conn = store.conn().await?;
            store::exports::register_key(
                &mut conn,
                &signer.key_id,
                &signer.public_key_pem,
                settings.clock.now(),
            )
            .await?;
        }
        let ledger = Ledger::connect_lazy(&settings.account_endpoint, &settings.auth.credentials)?;
        let api = ReportingApi::new(
            store.clone(),
            ledger.clone(),
            settings.broker.clone(),
            signer,
            settings.clock.clone(),
        );
        Ok(Self {
            auth: settings.auth,
            listener,
            store,
            api,
            ledger,
            clock: settings.clock,
            pool: settings.pool,
            broker: settings.broker,
            reconcile_every: settings.reconcile_every,
            projection_gather: settings.projection_gather,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled: projects events, measures the
    /// lag, reconciles on schedule.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let purge = corebank_platform::idempotency::spawn_purge(
            self.pool.clone(),
            self.clock.clone(),
            shutdown.clone(),
        );
        let message_purge =
            messaging::spawn_purge(self.pool.clone(), self.clock.clone(), shutdown.clone());
        let lag = tokio::spawn(measure_lag(
            self.store.clone(),
            self.broker.clone(),
            self.clock.clone(),
            shutdown.clone(),
        ));
        let schedule = tokio::spawn(reconcile_on_schedule(
            self.store.clone(),
            self.ledger.clone(),
            self.broker.clone(),
            self.clock.clone(),
            self.reconcile_every,
            shutdown.clone(),
        ));
        let events = QueueConsumer::new(
            self.broker.clone(),
            self.pool.clone(),
            consumer::event_queue(),
            ProjectionHandler::new(self.clock.clone()),
        )
        .with_config(ConsumerConfig {
            gather: self.projection_gather,
            ..ConsumerConfig::default()
        });
        let events = tokio::spawn(events.run(shutdown.clone()));
        let server = GrpcServer {
            name: "reporting",
            services: vec![GRPC_SERVICE],
            auth: self.auth,
        };
        let result = server
            .serve(
                self.listener,
                Routes::new(ReportingServiceServer::new(self.api)),
                shutdown,
            )
            .await;
        purge.abort();
        message_purge.abort();
        lag.abort();
        schedule.abort();
        let _ = events.await;
        result
    }
}

/// Keeps the lag gauges current.
async fn measure_lag(
    store: ReportingStore,
    broker: Broker,
    clock: SharedClock,
    shutdown: CancellationToken,
) {
    schedule::every(Duration::ZERO, LAG_INTERVAL, shutdown, || async {
        if let Err(error) = runs::status(&store, &broker, clock.now()).await {
            tracing::debug!(%error, "projection lag not measured");
        }
    })
    .await;
}

/// Reconciles every `every` (never when zero); the first run waits a whole
/// interval, so a restart loop does not reconcile in a loop.
async fn reconcile_on_schedule(
    store: ReportingStore,
    ledger: Ledger,
    broker: Broker,
    clock: SharedClock,
    every: Duration,
    shutdown: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    schedule::every(every, every, shutdown, || async {
        if let Err(error) = runs::reconcile(&store, &ledger, &broker, &clock, 0, "schedule").await {
            tracing::warn!(%error, "scheduled reconciliation failed");
        }
    })
    .await;
}
