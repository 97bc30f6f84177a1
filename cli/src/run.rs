//! `up`, `serve` and `migrate`: provisioning and running the services.

use std::str::FromStr;

use corebank_platform::clock;
use corebank_platform::config::{AmqpArgs, DatabaseArgs, RequestArgs, TelemetryArgs};
use corebank_platform::db::{self, SchemaSpec};
use corebank_platform::messaging::{QueueSpec, declare_exchanges, declare_queue};
use corebank_platform::{shutdown, telemetry};
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const SCHEMAS: [SchemaSpec; 5] = [
    corebank_customer::SCHEMA,
    corebank_account::SCHEMA,
    corebank_transaction::SCHEMA,
    corebank_orchestrator::SCHEMA,
    corebank_fraud::SCHEMA,
];

/// Every queue of the system: declared at migration time, like the schemas,
/// so no event is unroutable because its consumer has not started yet.
fn queues() -> Vec<QueueSpec> {
    let mut specs = vec![
        corebank_account::consumer::command_queue(),
        corebank_account::consumer::kyc_queue(),
        corebank_transaction::consumer::queue_spec(),
    ];
    specs.extend(corebank_orchestrator::queue_specs());
    specs.extend(corebank_fraud::queue_specs());
    specs
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    amqp: AmqpArgs,
}

/// Flags of every service.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    amqp: AmqpArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    requests: RequestArgs,
    #[command(flatten)]
    customer: corebank_customer::CustomerArgs,
    #[command(flatten)]
    account: corebank_account::AccountArgs,
    #[command(flatten)]
    transaction: corebank_transaction::TransactionArgs,
    #[command(flatten)]
    orchestrator: corebank_orchestrator::OrchestratorArgs,
    #[command(flatten)]
    fraud: corebank_fraud::FraudArgs,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    services: ServiceArgs,
    /// Skip provisioning and migrations (they ran already).
    #[arg(long, env = "COREBANK_SKIP_MIGRATE")]
    skip_migrate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Customer,
    Account,
    Transaction,
    Orchestrator,
    Fraud,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Which service to run.
    service: Service,
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
    amqp: &AmqpArgs,
) -> anyhow::Result<PgConnectOptions> {
    let owner = db::options(&db_args.database_url)?;
    ensure_database(&owner).await?;
    for spec in &SCHEMAS {
        db::provision(&owner, spec, &db_args.db_password).await?;
        tracing::info!(schema = spec.schema, role = spec.role, "schema migrated");
    }
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
    for spec in queues() {
        declare_queue(&channel, &namespace, &spec).await?;
    }
    token.cancel();
    broker.close().await;
    tracing::info!(namespace = namespace.as_str(), "broker topology declared");
    Ok(owner)
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let owner = provision_all(&args.db, &args.amqp).await?;
    for spec in &SCHEMAS {
        println!("migrated schema {} (role {})", spec.schema, spec.role);
    }
    println!(
        "database {}, broker namespace {}",
        owner.get_database().unwrap_or("postgres"),
        args.amqp.namespace
    );
    Ok(())
}

async fn pool(
    owner: &PgConnectOptions,
    spec: &SchemaSpec,
    args: &DatabaseArgs,
) -> anyhow::Result<sqlx::PgPool> {
    let options = db::service_options(owner, spec, &args.db_password);
    Ok(db::connect(options, spec.schema, args.db_pool_size).await?)
}

/// Builds one service and spawns it; prints where it listens.
async fn start(
    service: Service,
    owner: &PgConnectOptions,
    args: &ServiceArgs,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let requests = args.requests.clone();
    let stop = shutdown.clone();
    match service {
        Service::Customer => {
            let settings = corebank_customer::Settings {
                pool: pool(owner, &corebank_customer::SCHEMA, &args.db).await?,
                clock: clock::system(),
                requests,
                broker: args.amqp.broker("customer"),
            };
            let app = corebank_customer::Application::build(settings, args.customer.addr).await?;
            println!("customer      grpc://{}", app.local_addr());
            tasks.spawn(app.run_until_stopped(stop));
        }
        Service::Account => {
            let settings = corebank_account::Settings {
                pool: pool(owner, &corebank_account::SCHEMA, &args.db).await?,
                clock: clock::system(),
                requests,
                customer_endpoint: args.account.customer_endpoint.clone(),
                broker: args.amqp.broker("account"),
            };
            let app = corebank_account::Application::build(settings, args.account.addr).await?;
            println!("account       grpc://{}", app.local_addr());
            tasks.spawn(app.run_until_stopped(stop));
        }
        Service::Transaction => {
            let settings = corebank_transaction::Settings {
                pool: pool(owner, &corebank_transaction::SCHEMA, &args.db).await?,
                clock: clock::system(),
                requests,
                broker: args.amqp.broker("transaction"),
            };
            let app =
                corebank_transaction::Application::build(settings, args.transaction.addr).await?;
            println!("transaction   grpc://{}", app.local_addr());
            tasks.spawn(app.run_until_stopped(stop));
        }
        Service::Orchestrator => {
            let settings = corebank_orchestrator::Settings {
                pool: pool(owner, &corebank_orchestrator::SCHEMA, &args.db).await?,
                clock: clock::system(),
                broker: args.amqp.broker("orchestrator"),
                engine: args.orchestrator.engine(),
            };
            let app =
                corebank_orchestrator::Application::build(settings, args.orchestrator.addr).await?;
            println!("orchestrator  grpc://{}", app.local_addr());
            tasks.spawn(app.run_until_stopped(stop));
        }
        Service::Fraud => {
            let settings = corebank_fraud::Settings {
                pool: pool(owner, &corebank_fraud::SCHEMA, &args.db).await?,
                clock: clock::system(),
                requests,
                broker: args.amqp.broker("fraud"),
                review_deadline: args.fraud.review_deadline,
            };
            let app = corebank_fraud::Application::build(settings, args.fraud.addr).await?;
            println!("fraud         grpc://{}", app.local_addr());
            tasks.spawn(app.run_until_stopped(stop));
        }
    }
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
    let services = &args.services;
    telemetry::init_logging(&services.telemetry);
    let owner = if args.skip_migrate {
        db::options(&services.db.database_url)?
    } else {
        provision_all(&services.db, &services.amqp).await?
    };
    let shutdown = shutdown::on_signal();
    if let Some(addr) =
        telemetry::spawn_metrics(services.telemetry.metrics_addr, shutdown.clone()).await
    {
        println!("metrics       http://{addr}/metrics");
    }
    let mut tasks = JoinSet::new();
    for service in [
        Service::Customer,
        Service::Account,
        Service::Transaction,
        Service::Fraud,
        Service::Orchestrator,
    ] {
        start(service, &owner, services, &mut tasks, &shutdown).await?;
    }
    println!(
        "corebank is up (database {}, broker namespace {}); ctrl-c stops it",
        redact(&services.db),
        services.amqp.namespace
    );
    wait(tasks, shutdown).await
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let services = &args.services;
    telemetry::init_logging(&services.telemetry);
    let owner = db::options(&services.db.database_url)?;
    let shutdown = shutdown::on_signal();
    telemetry::spawn_metrics(services.telemetry.metrics_addr, shutdown.clone()).await;
    let mut tasks = JoinSet::new();
    start(args.service, &owner, services, &mut tasks, &shutdown).await?;
    wait(tasks, shutdown).await
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
