//! Servers and links: RabbitMQ stopped and killed, PostgreSQL stopped
//! immediately, every backend terminated, latency and a blackhole on every
//! broker link.

use std::time::Duration;

use corebank_faults::{Fault, PrivatePostgres, PrivateRabbit, StopMode};
use corebank_platform::config::with_database;
use corebank_tests::harness::{TestDb, amqp_url, lease_namespace};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use tokio::time::{Instant, sleep};

use crate::common::{database_url, terminate_backends, through_proxy};
use crate::row::{FAULT_HELD, PRIVATE_NAMESPACE, Row, Setup, hold};

/// How a row takes its private RabbitMQ down.
#[derive(Clone, Copy)]
enum BrokerDown {
    Stopped,
    Killed,
}

/// A row on a private RabbitMQ: taken down under load, held down, started again.
async fn broker_down_row(name: &'static str, down: BrokerDown) {
    let mut rabbit = PrivateRabbit::start().await.expect("a private rabbitmq");
    let db = TestDb::create(&[]).await;
    let mut row = Row::start(
        name,
        &database_url(&db.name),
        db.owner.clone(),
        rabbit.url(),
        PRIVATE_NAMESPACE.to_owned(),
        Setup::default(),
    )
    .await;

    let fault = Instant::now();
    match down {
        BrokerDown::Stopped => rabbit.stop_gracefully().await.expect("stop rabbitmq"),
        BrokerDown::Killed => rabbit.kill().await.expect("kill rabbitmq"),
    }
    hold(name, fault).await;
    row.assert_held_back().await;
    rabbit.start_again().await.expect("start rabbitmq again");

    row.check_recovery(Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_stopped_gracefully_and_restarted_under_load_ends_every_saga_and_loses_nothing() {
    broker_down_row("rabbitmq stopped gracefully", BrokerDown::Stopped).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_killed_and_restarted_under_load_ends_every_saga_and_loses_nothing() {
    broker_down_row("rabbitmq killed", BrokerDown::Killed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_stopped_immediately_and_restarted_under_load_ends_every_saga_and_loses_nothing()
{
    let mut postgres = PrivatePostgres::start()
        .await
        .expect("a private postgresql");
    let database_url = with_database(&postgres.url(), "corebank");
    let mut admin = PgConnection::connect(&postgres.url())
        .await
        .expect("connect to the private postgresql");
    sqlx::query("create database corebank")
        .execute(&mut admin)
        .await
        .expect("create the database");
    admin.close().await.expect("close the admin connection");
    let owner = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await
        .expect("owner pool");
    let lease = lease_namespace().await;
    let name = "postgresql stopped immediately";
    let mut row = Row::start(
        name,
        &database_url,
        owner,
        amqp_url(),
        lease.namespace().as_str().to_owned(),
        Setup::default(),
    )
    .await;

    let fault = Instant::now();
    postgres
        .stop(StopMode::Immediate)
        .await
        .expect("stop postgresql");
    hold(name, fault).await;
    postgres
        .start_again()
        .await
        .expect("start postgresql again");

    row.check_recovery(Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_backend_terminated_under_load_ends_every_saga_and_loses_nothing() {
    let name = "every backend terminated";
    let mut row = Row::on_shared_servers(name, None, Setup::default()).await;

    // Every connection to the row's database but the one asking, again and
    // again while the fault lasts, so reconnections die as well.
    let fault = Instant::now();
    let mut terminated = 0;
    while fault.elapsed() < FAULT_HELD {
        let round = terminate_backends(&row.owner).await;
        terminated += round;
        sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{name}: {terminated} backends terminated");
    assert!(terminated > 0, "{name}: no backend to terminate");

    row.check_recovery(Instant::now()).await;
}

/// A row whose every broker link goes through a fault proxy: `fault` is put
/// on it under load, held, then lifted. Returns the proxy's counters.
async fn proxied_row(name: &'static str, fault: Fault) -> corebank_faults::Stats {
    let (amqp_url, proxy) = through_proxy(&amqp_url()).await;
    let mut row = Row::on_shared_servers(name, Some(amqp_url), Setup::default()).await;

    let since = Instant::now();
    proxy.set(fault);
    hold(name, since).await;
    row.assert_held_back().await;
    proxy.set(Fault::Pass);

    row.check_recovery(Instant::now()).await;
    proxy.stats()
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_on_every_broker_link_slows_sagas_and_loses_nothing() {
    let latency = Fault::Latency {
        base: Duration::from_millis(200),
        jitter: Duration::from_millis(100),
    };
    let stats = proxied_row("200 ms ± 100 ms on every broker link", latency).await;
    assert!(
        stats.bytes_to_upstream > 0 && stats.bytes_to_client > 0,
        "{stats:?}"
    );
}

// Bytes sent into a blackhole are lost, as after a partition that outlasted
// TCP's retransmissions: the links come back unusable, and only new
// connections work.

#[tokio::test(flavor = "multi_thread")]
async fn every_broker_link_blackholed_then_healed_ends_every_saga_and_loses_nothing() {
    let stats = proxied_row("every broker link blackholed", Fault::Blackhole).await;
    assert!(stats.bytes_blackholed > 0, "{stats:?}");
}
