//! The whole system as a real process, killed with SIGKILL while sagas are in
//! flight and started again: every saga ends and no money is lost or made.

use std::time::Duration;

use corebank_tests::harness::{TestDb, amqp_url, lease_namespace};
use rust_decimal::Decimal;

mod common;
use common::workload::{
    Clients, Load, assert_invariants, assert_nothing_parked, open_funded_accounts, operator,
    unfinished, until_every_transaction_ends,
};
use common::{database_url, free_ports, spawn_corebank};

#[tokio::test(flavor = "multi_thread")]
async fn a_corebank_killed_mid_saga_finishes_every_saga_after_a_restart_and_loses_no_money() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let namespace = lease.namespace();
    let database_url = database_url(&db.name);
    let ports = free_ports();
    let key_path = std::env::temp_dir().join(format!("{}-signing.key.pem", db.name));
    let operator = operator(&key_path);
    let mut corebank = spawn_corebank(&database_url, namespace.as_str(), &ports, &key_path);
    let clients = Clients::connect(&ports, &operator).await;
    let accounts = open_funded_accounts(&clients, 6, "500.00").await;

    // Many transfers in flight, then the whole process dies without warning.
    let load = Load::start(
        &clients,
        accounts,
        150,
        1,
        Duration::ZERO,
        Duration::from_secs(30),
    );
    let accepted = load.finish().await;
    corebank.start_kill().unwrap();
    corebank.wait().await.unwrap();
    let in_flight = unfinished(&db.owner).await.unwrap();
    assert!(in_flight > 0, "the kill should catch sagas in flight");

    let _corebank = spawn_corebank(&database_url, namespace.as_str(), &ports, &key_path);
    if let Err(left) = until_every_transaction_ends(&db.owner, Duration::from_secs(120)).await {
        panic!("{left} transactions never ended");
    }
    assert_invariants(&db.owner, &clients, accepted, Decimal::from(3000)).await;
    assert_nothing_parked(&amqp_url(), namespace.as_str()).await;
    drop(_corebank);
    let _ = std::fs::remove_file(&key_path);
}
