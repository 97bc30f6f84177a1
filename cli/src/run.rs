//! `up`, `serve` and `migrate`: provisioning and running the services.

use std::str::FromStr;

use corebank_platform::clock;
use corebank_platform::config::{AmqpArgs, DatabaseArgs, RequestArgs, TelemetryArgs};
use corebank_platform::db::{self, SchemaSpec};
use corebank_platform::{shutdown, telemetry};
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const SCHEMAS: [SchemaSpec; 2] = [corebank_customer::SCHEMA, corebank_account::SCHEMA];

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    db: DatabaseArgs,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
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
    /// Skip provisioning and migrations (they ran already).
    #[arg(long, env = "COREBANK_SKIP_MIGRATE")]
    skip_migrate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Customer,
    Account,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Which service to run.
    service: Service,
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
        if let Err(error) = sqlx::query(sqlx::AssertSqlSafe(format!("create database {quoted}")))
            .execute(&mut conn)
            .await
        {
            // 42P04: created meanwhile by another process.
            if corebank_platform::error::sqlstate(&error).as_deref() != Some("42P04") {
                return Err(error.into());
            }
        }
        tracing::info!(database = %name, "database created");
    }
    Ok(())
}

async fn provision_all(args: &DatabaseArgs) -> anyhow::Result<PgConnectOptions> {
    let owner = db::options(&args.database_url)?;
    ensure_database(&owner).await?;
    for spec in &SCHEMAS {
        db::provision(&owner, spec, &args.db_password).await?;
        tracing::info!(schema = spec.schema, role = spec.role, "schema migrated");
    }
    Ok(owner)
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let owner = provision_all(&args.db).await?;
    for spec in &SCHEMAS {
        println!("migrated schema {} (role {})", spec.schema, spec.role);
    }
    println!("database {}", owner.get_database().unwrap_or("postgres"));
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

async fn start_customer(
    owner: &PgConnectOptions,
    amqp: &AmqpArgs,
    db_args: &DatabaseArgs,
    requests: &RequestArgs,
    args: &corebank_customer::CustomerArgs,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let app = corebank_customer::Application::build(
        corebank_customer::Settings {
            pool: pool(owner, &corebank_customer::SCHEMA, db_args).await?,
            clock: clock::system(),
            requests: requests.clone(),
            broker: amqp.broker("customer"),
        },
        args.addr,
    )
    .await?;
    println!("customer     grpc://{}", app.local_addr());
    tasks.spawn(app.run_until_stopped(shutdown.clone()));
    Ok(())
}

async fn start_account(
    owner: &PgConnectOptions,
    db_args: &DatabaseArgs,
    requests: &RequestArgs,
    args: &corebank_account::AccountArgs,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let app = corebank_account::Application::build(
        corebank_account::Settings {
            pool: pool(owner, &corebank_account::SCHEMA, db_args).await?,
            clock: clock::system(),
            requests: requests.clone(),
            customer_endpoint: args.customer_endpoint.clone(),
        },
        args.addr,
    )
    .await?;
    println!("account      grpc://{}", app.local_addr());
    tasks.spawn(app.run_until_stopped(shutdown.clone()));
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
    telemetry::init_logging(&args.telemetry);
    let owner = if args.skip_migrate {
        db::options(&args.db.database_url)?
    } else {
        provision_all(&args.db).await?
    };
    let shutdown = shutdown::on_signal();
    if let Some(addr) =
        telemetry::spawn_metrics(args.telemetry.metrics_addr, shutdown.clone()).await
    {
        println!("metrics      http://{addr}/metrics");
    }
    let mut tasks = JoinSet::new();
    start_customer(
        &owner,
        &args.amqp,
        &args.db,
        &args.requests,
        &args.customer,
        &mut tasks,
        &shutdown,
    )
    .await?;
    start_account(
        &owner,
        &args.db,
        &args.requests,
        &args.account,
        &mut tasks,
        &shutdown,
    )
    .await?;
    println!(
        "corebank is up (database {}); ctrl-c stops it",
        redact(&args.db)
    );
    wait(tasks, shutdown).await
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init_logging(&args.telemetry);
    let owner = db::options(&args.db.database_url)?;
    let shutdown = shutdown::on_signal();
    telemetry::spawn_metrics(args.telemetry.metrics_addr, shutdown.clone()).await;
    let mut tasks = JoinSet::new();
    match args.service {
        Service::Customer => {
            start_customer(
                &owner,
                &args.amqp,
                &args.db,
                &args.requests,
                &args.customer,
                &mut tasks,
                &shutdown,
            )
            .await?
        }
        Service::Account => {
            start_account(
                &owner,
                &args.db,
                &args.requests,
                &args.account,
                &mut tasks,
                &shutdown,
            )
            .await?
        }
    }
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
