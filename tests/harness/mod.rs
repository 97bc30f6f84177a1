//! Test support: a fresh PostgreSQL database per test (`TestDb`), a fresh
//! broker namespace (`broker`), and every service running in-process
//! (`TestApp`).

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use corebank_cli::services::{self, SERVICES};
use corebank_orchestrator::EngineConfig;
use corebank_platform::auth::{AuthedChannel, Credentials, DevKey, ServiceAuth};
use corebank_platform::clock::{ManualClock, SharedClock};
use corebank_platform::config::RequestArgs;
use corebank_platform::db::{self, SchemaSpec};
use corebank_platform::messaging::{
    Broker, BrokerConfig, Namespace, OutgoingMessage, QueueSpec, declare_exchanges, declare_queue,
    delete_topology,
};
// The trait as `_`: the harness's own `Service` names a service under test.
use corebank_platform::service::Service as _;
use corebank_platform::service::{AnyService, Context, Peers};
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use corebank_proto::v1::fraud_service_client::FraudServiceClient;
use corebank_proto::v1::reporting_service_client::ReportingServiceClient;
use corebank_proto::v1::saga_admin_service_client::SagaAdminServiceClient;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_types::StatusExt;
use uuid::Uuid;

mod app;
mod auth;
mod broker;
mod commands;
mod fixtures;
mod tap;

pub use app::*;
pub use auth::*;
pub use broker::*;
pub use commands::*;
pub use tap::*;

/// The password test roles log in with (trust auth ignores it locally).
pub const ROLE_PASSWORD: &str = "corebank-dev";

/// The admin login tests create their databases with: `DATABASE_URL`'s
/// server and credentials (or the local default), on database `postgres`.
pub fn admin_url() -> String {
    corebank_platform::config::with_database(
        &corebank_platform::config::database_url_from_env(),
        "postgres",
    )
}

/// Runs `cleanup` to the end on a thread and runtime of its own, for `Drop`
/// impls that cannot await. The test's runtime is not blocked meanwhile (the
/// tests run on the multi-thread runtime): its tasks keep running, so a
/// connection half-way through a password login finishes it instead of
/// stalling the server's `drop database` until the login times out.
pub fn finish_off_runtime<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let worker = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    });
    let join = move || {
        let _ = worker.join();
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(join)
        }
        _ => join(),
    }
}

/// A fresh database, provisioned for every service.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub owner_options: PgConnectOptions,
    /// Superuser pool on the test database (default search path).
    pub owner: PgPool,
}

impl TestDb {
    pub async fn create(schemas: &[SchemaSpec]) -> TestDb {
        let admin = PgConnectOptions::from_str(&admin_url()).expect("DATABASE_URL parses");
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("connect to PostgreSQL as admin");
        drop_stale_databases(&mut conn).await;
        let name = format!("cbt_{}_{}", Utc::now().timestamp(), Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let owner_options = admin.database(&name);
        let password = SecretString::from(ROLE_PASSWORD);
        for spec in schemas {
            db::provision(&owner_options, spec, &password)
                .await
                .expect("provision schema");
        }
        let owner = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(owner_options.clone())
            .await
            .expect("owner pool");
        TestDb {
            name,
            owner_options,
            owner,
        }
    }

    /// A pool logged in as the service's own role, as the service would be.
    pub async fn service_pool(&self, spec: &SchemaSpec, max_connections: u32) -> PgPool {
        let options = db::service_options(
            &self.owner_options,
            spec,
            &SecretString::from(ROLE_PASSWORD),
        );
        db::connect(options, spec.schema, max_connections)
            .await
            .expect("service pool")
    }
}

impl Drop for TestDb {
    /// Drops the database (closing whatever still uses it), off the test's
    /// runtime since Drop cannot await; a leftover is dropped by a later run.
    fn drop(&mut self) {
        let name = self.name.clone();
        finish_off_runtime(async move {
            let Ok(admin) = PgConnectOptions::from_str(&admin_url()) else {
                return;
            };
            if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "drop database if exists {name} with (force)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

/// Test databases are named `cbt_<unix time>_<uuid>`; drop those older than
/// two hours so repeated runs do not pile them up.
async fn drop_stale_databases(conn: &mut PgConnection) {
    let cutoff = Utc::now().timestamp() - 2 * 3600;
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like 'cbt\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name
            .split('_')
            .nth(1)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(i64::MAX);
        if created < cutoff {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {name} with (force)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

/// A fresh idempotency key.
pub fn key() -> String {
    Uuid::now_v7().to_string()
}

/// The fields named in a status's `BadRequest`.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// US dollars.
pub fn usd(amount: &str) -> pb::Money {
    pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    }
}
