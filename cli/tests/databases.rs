//! A service in a database of its own: the account service keeps the ledger
//! in one PostgreSQL database, every other service its schema in another,
//! and money moves as it does with one database for all.

use std::time::Duration;

use corebank_proto::v1 as pb;
use corebank_tests::harness::{TestDb, key, lease_namespace};
use rust_decimal::Decimal;
use sqlx::PgPool;

#[path = "common/mod.rs"]
mod common;
use common::workload::{
    Clients, Load, open_funded_accounts, operator, until_every_transaction_ends,
};
use common::{Launch, database_url, free_port, free_ports};

const ACCOUNTS: usize = 4;
const FUNDING: &str = "500.00";

/// The schemas of corebank's services in the database `pool` is on.
async fn schemas(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select schema_name::text from information_schema.schemata
          where schema_name in ('customer', 'account', 'transaction', 'fraud',
                                'orchestrator', 'reporting', 'gateway')
          order by 1",
    )
    .fetch_all(pool)
    .await
    .expect("list schemas")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_in_a_database_of_its_own_moves_money_as_with_one_database() {
    let shared = TestDb::create(&[]).await;
    let ledger = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let ports = free_ports();
    let key_path = std::env::temp_dir().join(format!("corebank-databases-{}.key.pem", key()));
    let operator = operator(&key_path);
    let shared_url = database_url(&shared.name);
    let ledger_url = format!("account={}", database_url(&ledger.name));
    let amqp_url = corebank_tests::harness::amqp_url();
    let _corebank = Launch {
        database_url: &shared_url,
        broker_url: &amqp_url,
        namespace: lease.namespace().as_str(),
        ports: &ports,
        key: &key_path,
        env: &[("COREBANK_SERVICE_DATABASE_URLS", &ledger_url)],
        metrics: free_port(),
    }
    .spawn(&["up"]);
    let clients = Clients::connect(&ports, &operator).await;
    let accounts = open_funded_accounts(&clients, ACCOUNTS, FUNDING).await;
    let load = Load::start(
        &clients,
        accounts,
        40,
        4,
        Duration::ZERO,
        Duration::from_secs(60),
    );
    let accepted = load.finish().await;
    until_every_transaction_ends(&shared.owner, Duration::from_secs(60))
        .await
        .expect("every transaction ends");
    let _ = std::fs::remove_file(&key_path);

    assert_eq!(schemas(&ledger.owner).await, ["account"]);
    assert_eq!(
        schemas(&shared.owner).await,
        [
            "customer",
            "fraud",
            "gateway",
            "orchestrator",
            "reporting",
            "transaction"
        ]
    );

    let (transfers, completed): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where kind = 'transfer'),
                count(*) filter (where status = 'completed')
           from transaction.transaction",
    )
    .fetch_one(&shared.owner)
    .await
    .expect("count transactions");
    assert_eq!(transfers, accepted, "each accepted transfer stored once");
    let (journals, unbalanced, active_holds, held): (i64, i64, i64, Decimal) = sqlx::query_as(
        "select (select count(*) from account.journal),
                (select count(*) from (select journal_id from account.entry group by journal_id
                                        having sum(case when direction = 'debit' then amount
                                                        else -amount end) <> 0) as off),
                (select count(*) from account.hold where status = 'active'),
                (select sum(ledger_balance) from account.account where product <> 'settlement')",
    )
    .fetch_one(&ledger.owner)
    .await
    .expect("read the ledger");
    assert_eq!(journals, completed, "one journal per completed movement");
    assert_eq!(unbalanced, 0, "journals that do not balance");
    assert_eq!(active_holds, 0, "holds left active");
    let funded = FUNDING.parse::<Decimal>().expect("an amount") * Decimal::from(ACCOUNTS as i64);
    assert_eq!(held, funded, "customer money conserved");

    // Reporting, in the other database, reads the ledger over gRPC.
    let mut reporting = clients.reporting.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = reporting
            .reconcile(pb::ReconcileRequest {
                as_of_ledger_seq: 0,
                idempotency_key: key(),
            })
            .await
            .expect("reconcile")
            .into_inner();
        if report.clean || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        report.clean,
        "reporting differs from the ledger: {:#?}",
        report.mismatches
    );
}
