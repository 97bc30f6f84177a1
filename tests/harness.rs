//! `TestApp`: one fresh PostgreSQL database, every schema provisioned with its
//! own role, the services served on port 0, and clients for each.

use std::str::FromStr;
use std::sync::Arc;

use chrono::Utc;
use corebank_platform::clock::{ManualClock, SharedClock};
use corebank_platform::config::RequestArgs;
use corebank_platform::db::{self, SchemaSpec};
use corebank_platform::messaging::{Broker, BrokerConfig, Namespace};
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

/// The password test roles log in with (trust auth ignores it locally).
pub const ROLE_PASSWORD: &str = "corebank-dev";

/// The broker every test uses, each under its own namespace.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A fresh namespace: every exchange and queue of one test lives under it.
pub fn fresh_namespace() -> Namespace {
    Namespace::new(format!("cbt{}", &Uuid::new_v4().simple().to_string()[..12]))
}

/// A lazily connecting broker handle in `namespace`.
pub fn broker(namespace: &Namespace, name: &str) -> Broker {
    Broker::new(BrokerConfig::new(
        SecretString::from(amqp_url()),
        namespace.clone(),
        format!("{}-{name}", namespace.as_str()),
    ))
}

/// The admin URL tests create databases with.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
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
            .max_connections(5)
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

/// Every service of the foundation, running on free ports against one fresh database.
#[derive(Debug)]
pub struct TestApp {
    pub db: TestDb,
    pub owner: PgPool,
    pub customer: CustomerServiceClient<Channel>,
    pub account: AccountServiceClient<Channel>,
    pub customer_addr: std::net::SocketAddr,
    pub account_addr: std::net::SocketAddr,
    pub clock: Arc<ManualClock>,
    pub namespace: Namespace,
    pub shutdown: CancellationToken,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(RequestArgs::default()).await
    }

    pub async fn spawn_with(requests: RequestArgs) -> TestApp {
        let db = TestDb::create(&[corebank_customer::SCHEMA, corebank_account::SCHEMA]).await;
        let clock = ManualClock::new(Utc::now());
        let shared: SharedClock = clock.clone();
        let shutdown = CancellationToken::new();
        let loopback = "127.0.0.1:0".parse().expect("loopback address");
        let namespace = fresh_namespace();

        let customer = corebank_customer::Application::build(
            corebank_customer::Settings {
                pool: db.service_pool(&corebank_customer::SCHEMA, 10).await,
                clock: shared.clone(),
                requests: requests.clone(),
                broker: broker(&namespace, "customer"),
            },
            loopback,
        )
        .await
        .expect("build customer service");
        let customer_addr = customer.local_addr();
        tokio::spawn(customer.run_until_stopped(shutdown.clone()));

        let account = corebank_account::Application::build(
            corebank_account::Settings {
                pool: db.service_pool(&corebank_account::SCHEMA, 20).await,
                clock: shared.clone(),
                requests,
                customer_endpoint: format!("http://{customer_addr}"),
            },
            loopback,
        )
        .await
        .expect("build account service");
        let account_addr = account.local_addr();
        tokio::spawn(account.run_until_stopped(shutdown.clone()));

        let owner = db.owner.clone();
        TestApp {
            db,
            owner,
            customer: CustomerServiceClient::new(channel(customer_addr).await),
            account: AccountServiceClient::new(channel(account_addr).await),
            customer_addr,
            account_addr,
            clock,
            namespace,
            shutdown,
        }
    }

    /// A valid create-customer request with a unique email.
    pub fn new_customer_request(&self) -> pb::CreateCustomerRequest {
        let unique = Uuid::new_v4().simple().to_string();
        pb::CreateCustomerRequest {
            idempotency_key: key(),
            legal_name: "Ada Lovelace".to_owned(),
            email: format!("ada.{}@example.com", &unique[..12]),
            phone: "+441234567890".to_owned(),
            date_of_birth: "1990-12-10".to_owned(),
            country: "GB".to_owned(),
            national_id: format!("AB{}", &unique[..8]).to_uppercase(),
        }
    }

    /// A customer in PENDING status.
    pub async fn pending_customer(&self) -> String {
        let request = self.new_customer_request();
        self.customer
            .clone()
            .create_customer(request)
            .await
            .expect("create customer")
            .into_inner()
            .customer_id
    }

    /// A customer in VERIFIED status.
    pub async fn verified_customer(&self) -> String {
        let customer_id = self.pending_customer().await;
        self.customer
            .clone()
            .verify_customer(pb::KycTransitionRequest {
                customer_id: customer_id.clone(),
                idempotency_key: key(),
                actor: "analyst-7".to_owned(),
                reason: "documents checked".to_owned(),
            })
            .await
            .expect("verify customer");
        customer_id
    }

    /// An open checking account with no overdraft.
    pub async fn open_account(&self, customer_id: &str, currency: &str) -> pb::Account {
        self.account
            .clone()
            .open_account(pb::OpenAccountRequest {
                idempotency_key: key(),
                customer_id: customer_id.to_owned(),
                currency: currency.to_owned(),
                product: pb::AccountProduct::Checking as i32,
                overdraft_limit: String::new(),
            })
            .await
            .expect("open account")
            .into_inner()
    }

    /// Credits `amount` (decimal string) from the settlement account.
    pub async fn deposit(&self, account_id: &str, amount: &str) -> pb::Journal {
        let currency = self
            .account
            .clone()
            .get_account(pb::GetAccountRequest {
                account_id: account_id.to_owned(),
            })
            .await
            .expect("get account")
            .into_inner()
            .currency;
        self.account
            .clone()
            .post_deposit(pb::PostDepositRequest {
                account_id: account_id.to_owned(),
                idempotency_key: key(),
                amount: Some(pb::Money {
                    currency,
                    amount: amount.to_owned(),
                }),
                reference: "test deposit".to_owned(),
            })
            .await
            .expect("deposit")
            .into_inner()
    }

    /// Rows in a table of the test database (schema-qualified name).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&self.owner)
            .await
            .expect("count rows")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to test server")
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
