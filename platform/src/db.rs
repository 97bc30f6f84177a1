//! PostgreSQL: pools bound to one schema, per-schema migrations, and the
//! provisioning of one role per service with privileges on its own schema only.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// Statements that look rows up by an array of keys (`= any($1)`, a join
/// with `unnest`) are planned afresh on each call rather than prepared once.
/// A prepared statement soon runs on a cached generic plan, and one chosen
/// while the table was small is a sequential scan (or a hash join over one),
/// kept for good while nothing re-plans it (PostgreSQL re-plans on new
/// statistics, which a table without autovacuum never gets): the statement
/// then reads the whole table on every call, slower as the table grows. A
/// fresh plan sees the array and probes the index.
pub trait PlannedPerCall {
    /// This statement, planned afresh on each call (an unnamed statement).
    fn planned_per_call(self) -> Self;
}

impl<A> PlannedPerCall for sqlx::query::Query<'_, sqlx::Postgres, A> {
    fn planned_per_call(self) -> Self {
        self.persistent(false)
    }
}

impl<O, A> PlannedPerCall for sqlx::query::QueryAs<'_, sqlx::Postgres, O, A> {
    fn planned_per_call(self) -> Self {
        self.persistent(false)
    }
}

impl<O, A> PlannedPerCall for sqlx::query::QueryScalar<'_, sqlx::Postgres, O, A> {
    fn planned_per_call(self) -> Self {
        self.persistent(false)
    }
}

/// What a service owns in the database.
#[derive(Debug, Clone, Copy)]
pub struct SchemaSpec {
    /// Schema name, e.g. `account`.
    pub schema: &'static str,
    /// The login role the service connects as, e.g. `corebank_account`.
    pub role: &'static str,
    /// Tables the service may only read and append to (no UPDATE, DELETE or TRUNCATE).
    pub append_only: &'static [&'static str],
    /// The service's migrations.
    pub migrator: &'static Migrator,
}

/// Parses a PostgreSQL URL.
pub fn options(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url.expose_secret())
        .map_err(|error| anyhow::anyhow!("invalid database url: {error}"))
}

/// The options a service connects with: the owner URL's host and database,
/// the service's own role and password.
pub fn service_options(
    owner: &PgConnectOptions,
    spec: &SchemaSpec,
    password: &SecretString,
) -> PgConnectOptions {
    owner
        .clone()
        .username(spec.role)
        .password(password.expose_secret())
}

/// How long the server lets a session of a service sit idle inside a
/// transaction before it ends the session. A client that lost its link (a
/// partition) leaves its backend waiting mid-transaction with its row locks
/// held; the server then frees them instead of letting every later
/// transaction on those rows wait. Longer than any wait a service makes
/// inside a transaction (the relay awaits publisher confirms for 30 s).
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "45s";

/// A pool whose connections resolve unqualified names in `schema` only.
pub async fn connect(
    options: PgConnectOptions,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.options([
            ("search_path", schema),
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            ),
        ]))
        .await
}

/// Creates the role and schema of `spec` if missing, migrates the schema and
/// grants the role exactly what it needs. Idempotent; run with an owner
/// (superuser or database owner) connection.
pub async fn provision(
    owner: &PgConnectOptions,
    spec: &SchemaSpec,
    password: &SecretString,
) -> anyhow::Result<()> {
    let mut conn =
        PgConnection::connect_with(&owner.clone().options([("search_path", spec.schema)])).await?;
    create_role(&mut conn, spec.role, password).await?;
    let schema = quote_ident(spec.schema);
    let role = quote_ident(spec.role);
    sqlx::query(AssertSqlSafe(format!(
        "create schema if not exists {schema}"
    )))
    .execute(&mut conn)
    .await
    .or_else(ignore_duplicate)?;
    sqlx::query(AssertSqlSafe(format!(
        "revoke all on schema {schema} from public"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "grant usage on schema {schema} to {role}"
    )))
    .execute(&mut conn)
    .await?;

    let migrator = Migrator {
        migrations: spec.migrator.migrations.clone(),
        table_name: format!("{}._sqlx_migrations", spec.schema).into(),
        ..Migrator::DEFAULT
    };
    migrator.run(&mut conn).await?;

    for statement in [
        format!("grant select, insert, update, delete on all tables in schema {schema} to {role}"),
        format!("grant usage, select on all sequences in schema {schema} to {role}"),
        format!("revoke insert, update, delete on {schema}._sqlx_migrations from {role}"),
    ] {
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut conn)
            .await?;
    }
    for table in spec.append_only {
        sqlx::query(AssertSqlSafe(format!(
            "revoke update, delete, truncate on {schema}.{} from {role}",
            quote_ident(table)
        )))
        .execute(&mut conn)
        .await?;
    }
    conn.close().await?;
    Ok(())
}

async fn create_role(
    conn: &mut PgConnection,
    role: &str,
    password: &SecretString,
) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_roles where rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    if exists {
        return Ok(());
    }
    let statement = format!(
        "create role {} login password {}",
        quote_ident(role),
        quote_literal(password.expose_secret())
    );
    // Another process may create it between the check and here.
    sqlx::query(AssertSqlSafe(statement))
        .execute(&mut *conn)
        .await
        .or_else(ignore_duplicate)?;
    Ok(())
}

/// Two provisioners racing on one cluster-wide object: the loser's
/// duplicate-object (42710), duplicate-schema (42P06) or unique violation (23505)
/// is success.
fn ignore_duplicate(error: sqlx::Error) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    match crate::error::sqlstate(&error).as_deref() {
        Some("42710" | "42P06" | "23505") => Ok(Default::default()),
        _ => Err(error),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
