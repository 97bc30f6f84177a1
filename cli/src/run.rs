//! `up`, `serve` and `migrate`: provisioning and running the services.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use corebank_cli::services::{self, EveryServiceArgs, SERVICES};
use corebank_platform::auth::AuthArgs;
use corebank_platform::clock;
use corebank_platform::config::{AmqpArgs, DatabaseArgs, RequestArgs, TelemetryArgs};
use corebank_platform::db;
use corebank_platform::messaging::{declare_exchanges, declare_queue};
use corebank_platform::service::{AnyService, Context, ErasedArgs, Peers};
use corebank_platform::{shutdown, telemetry};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::output::outln;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    databases: ServiceDatabases,
    #[command(flatten)]
    amqp: AmqpArgs,
}

/// The databases of the services that keep their schema somewhere other than
/// `--database-url`'s database.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceDatabases {
    /// `SERVICE=URL`: the owner login of the database `SERVICE` keeps its
    /// schema in, when not `--database-url`'s (repeatable; comma-separated
    /// in the environment variable). `migrate` and `up` make the database,
    /// the role and the schema there.
    #[arg(
        long = "service-database-url",
        env = "COREBANK_SERVICE_DATABASE_URLS",
        value_name = "SERVICE=URL",
        value_delimiter = ',',
        value_parser = parse_service_database,
        hide_env_values = true
    )]
    each: Vec<(&'static str, SecretString)>,
}

impl ServiceDatabases {
    /// The owner login of `service`'s database: its own, or `shared`.
    fn owner(&self, service: &str, shared: &PgConnectOptions) -> anyhow::Result<PgConnectOptions> {
        match self.each.iter().find(|(name, _)| *name == service) {
            Some((_, url)) => db::options(url),
            None => Ok(shared.clone()),
        }
    }
}

fn parse_service_database(text: &str) -> Result<(&'static str, SecretString), String> {
    let (name, url) = text
        .split_once('=')
        .ok_or_else(|| "expected SERVICE=URL".to_owned())?;
    let service = services::find(name.trim()).ok_or_else(|| {
        let known: Vec<&str> = SERVICES.iter().map(|service| service.name()).collect();
        format!("unknown service {name:?} (one of {})", known.join(", "))
    })?;
    let url = SecretString::from(url.trim().to_owned());
    db::options(&url).map_err(|error| format!("the URL for {}: {error}", service.name()))?;
    Ok((service.name(), url))
}

/// Flags of every service: the shared ones, then each service's own.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    databases: ServiceDatabases,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    requests: RequestArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    each: EveryServiceArgs,
}

impl ServiceArgs {
    /// The flags of `service` alone.
    fn of(&self, service: &dyn AnyService) -> anyhow::Result<&ErasedArgs> {
        let name = service.name();
        self.each
            .of(name)
            .ok_or_else(|| anyhow::anyhow!("no flags parsed for service {name}"))
    }
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    services: ServiceArgs,
    /// Skip provisioning and migrations (they ran already).
    #[arg(long, env = "COREBANK_SKIP_MIGRATE")]
    skip_migrate: bool,
    /// A service not to run in this process (repeatable): it runs beside it,
    /// on this machine, with `corebank serve`, and the services that call it
    /// reach it at its `--<service>-addr`.
    #[arg(long, value_name = "SERVICE", value_parser = services::parser())]
    except: Vec<&'static dyn AnyService>,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Which service to run.
    #[arg(value_parser = services::parser())]
    service: &'static dyn AnyService,
    #[command(flatten)]
    services: ServiceArgs,
}

/// Creates the database named in the owner URL if it does not exist yet.
async fn ensure_database(owner: &PgConnectOptions) -> anyhow::Result<()> {
    let name = owner.get_database().unwrap_or("postgres").to_owned();
    let mut conn = PgConnection::connect_with(&owner.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("create database {quoted}")))
            .execute(&mut conn)
            .await;
        // 42P04: created meanwhile by another process.
        if let Err(error) = created
            && corebank_platform::error::sqlstate(&error).as_deref() != Some("42P04")
        {
            return Err(error.into());
        }
        tracing::info!(database = %name, "database created");
    }
    Ok(())
}

/// Schemas, roles, grants and migrations, then the broker topology. Idempotent.
async fn provision_all(
    db_args: &DatabaseArgs,
    databases: &ServiceDatabases,
    amqp: &AmqpArgs,
) -> anyhow::Result<PgConnectOptions> {
    let shared = db::options(&db_args.database_url)?;
    ensure_database(&shared).await?;
    for service in SERVICES {
        let spec = service.schema();
        let owner = databases.owner(service.name(), &shared)?;
        if databases
            .each
            .iter()
            .any(|(name, _)| *name == service.name())
        {
            ensure_database(&owner).await?;
        }
        db::provision(&owner, &spec, &db_args.db_password).await?;
        let database = owner.get_database().unwrap_or("postgres");
        tracing::info!(
            schema = spec.schema,
            role = spec.role,
            database,
            "schema migrated"
        );
    }
    let owner = shared;
    let broker = amqp.broker("migrate");
    let token = CancellationToken::new();
    let connect = tokio::time::timeout(std::time::Duration::from_secs(30), broker.channel(&token));
    let channel = connect
        .await
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("cannot reach RabbitMQ (AMQP_URL) within 30 s"))?;
    let namespace = broker.namespace().clone();
    declare_exchanges(&channel, &namespace).await?;
    for spec in services::queues() {
        declare_queue(&channel, &namespace, &spec).await?;
    }
    token.cancel();
    broker.close().await;
    tracing::info!(namespace = namespace.as_str(), "broker topology declared");
    Ok(owner)
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let owner = provision_all(&args.db, &args.databases, &args.amqp).await?;
    for spec in services::schemas() {
        outln!("migrated schema {} (role {})", spec.schema, spec.role)?;
    }
    outln!(
        "database {}, broker namespace {}",
        owner.get_database().unwrap_or("postgres"),
        args.amqp.namespace
    )?;
    Ok(())
}

/// Where a service run beside this process listens: its `--<service>-addr`,
/// on the loopback interface when that address is unspecified.
fn beside(service: &dyn AnyService, args: &ServiceArgs) -> anyhow::Result<SocketAddr> {
    let mut addr = service.listen_addr(args.of(service)?)?;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr)
}

/// Binds the listen address of every service of `services` before the
/// process connects anywhere (see `listen::reserve`): otherwise one of its
/// connections, opened by a service started earlier, can take a later
/// service's port, which lies in Linux's range for connections' local ports.
async fn reserve_ports<'a>(
    services: impl IntoIterator<Item = &'a &'static dyn AnyService>,
    args: &ServiceArgs,
) -> anyhow::Result<()> {
    let mut addrs = Vec::new();
    for service in services {
        addrs.push(service.listen_addr(args.of(*service)?)?);
    }
    corebank_platform::listen::reserve(addrs).await
}

/// Builds one service and spawns it; prints where it listens.
async fn start(
    service: &dyn AnyService,
    owner: &PgConnectOptions,
    args: &ServiceArgs,
    peers: &mut Peers,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let name = service.name();
    let own_args = args.of(service)?;
    let spec = service.schema();
    let owner = args.databases.owner(name, owner)?;
    let options = db::service_options(&owner, &spec, &args.db.db_password);
    let context = Context {
        pool: db::connect(options, spec.schema, args.db.db_pool_size).await?,
        clock: clock::system(),
        requests: args.requests.clone(),
        broker: args.amqp.broker(name),
        // Callees start first and are told to their callers; a callee this
        // process does not run is found through the endpoint flags.
        peers: peers.clone(),
        auth: args.auth.service_auth(name)?,
    };
    let settings = service.settings(context, own_args)?;
    let addr = service.listen_addr(own_args)?;
    let bound = service.start(settings, addr, shutdown.clone()).await?;
    let scheme = if name == "gateway" { "http" } else { "grpc" };
    // A server keeps serving whether or not anyone reads its stdout.
    let _ = outln!("{name:<13} {scheme}://{}", bound.local_addr);
    peers.insert(name, bound.local_addr);
    tasks.spawn(bound.run);
    Ok(())
}

async fn wait(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(finished) = tasks.join_next().await {
        let outcome = finished
            .map_err(anyhow::Error::from)
            .and_then(|result| result);
        if let Err(error) = outcome {
            tracing::error!(error = ?error, "service stopped with an error");
            first_error.get_or_insert(error);
        }
        // One service down takes the process down: a supervisor restarts it whole.
        shutdown.cancel();
    }
    first_error.map_or(Ok(()), Err)
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let flags = &args.services;
    let running = SERVICES
        .iter()
        .filter(|service| !args.except.iter().any(|e| e.name() == service.name()));
    reserve_ports(running, flags).await?;
    let traces = telemetry::init_telemetry(&flags.telemetry, "corebank")?;
    let owner = if args.skip_migrate {
        db::options(&flags.db.database_url)?
    } else {
        provision_all(&flags.db, &flags.databases, &flags.amqp).await?
    };
    let shutdown = shutdown::on_signal();
    if let Some(addr) =
        telemetry::spawn_metrics(flags.telemetry.metrics_addr, shutdown.clone()).await
    {
        let _ = outln!("metrics       http://{addr}/metrics");
    }
    let mut tasks = JoinSet::new();
    let mut peers = Peers::default();
    for service in SERVICES {
        if args.except.iter().any(|e| e.name() == service.name()) {
            peers.insert(service.name(), beside(*service, flags)?);
        } else {
            start(*service, &owner, flags, &mut peers, &mut tasks, &shutdown).await?;
        }
    }
    let _ = outln!(
        "corebank is up (database {}, broker namespace {}); ctrl-c stops it",
        redact(&flags.db),
        flags.amqp.namespace
    );
    let stopped = wait(tasks, shutdown).await;
    // The spans still buffered are exported before the process exits.
    traces.shutdown().await;
    stopped
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let flags = &args.services;
    reserve_ports([&args.service], flags).await?;
    let traces = telemetry::init_telemetry(&flags.telemetry, args.service.name())?;
    let owner = db::options(&flags.db.database_url)?;
    let shutdown = shutdown::on_signal();
    telemetry::spawn_metrics(flags.telemetry.metrics_addr, shutdown.clone()).await;
    let mut tasks = JoinSet::new();
    start(
        args.service,
        &owner,
        flags,
        &mut Peers::default(),
        &mut tasks,
        &shutdown,
    )
    .await?;
    let stopped = wait(tasks, shutdown).await;
    traces.shutdown().await;
    stopped
}

/// The database URL without its password, for printing.
fn redact(args: &DatabaseArgs) -> String {
    match PgConnectOptions::from_str(args.database_url.expose_secret()) {
        Ok(options) => format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("postgres")
        ),
        Err(_) => "<unparsable url>".to_owned(),
    }
}
