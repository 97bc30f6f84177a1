//! The fault matrix: each row runs a whole `corebank up` under a load of
//! transfers (a burst that queues sagas up, then a trickle through the fault
//! and past it), breaks what it depends on while transfers are in flight,
//! holds the fault a few seconds, heals it, and then demands every
//! invariant: each transaction ends within a bound, none is lost or made
//! twice, money is conserved, no hold is left active, each completed
//! transfer has exactly one journal, reporting reconciles with the ledger
//! and no message is parked.
//!
//! A row that stops or kills a server runs the system on a private one of
//! its own; the shared PostgreSQL and RabbitMQ are never stopped. Each row
//! prints how long the system took, from the heal, until every transaction
//! had ended (run with `--no-capture` to see it).

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use corebank_faults::{Fault, PrivatePostgres, PrivateRabbit, StopMode};
use corebank_platform::config::with_database;
use corebank_platform::service::Peers;
use corebank_tests::harness::{TestDb, amqp_url, lease_namespace};
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::Child;
use tokio::time::{Instant, sleep};

mod common;
use common::workload::{
    Clients, Load, assert_invariants, assert_nothing_parked, open_funded_accounts, operator,
    unfinished, until_every_transaction_ends,
};
use common::{Launch, connect, counter, database_url, free_port, free_ports, port, through_proxy};

/// Customer accounts the transfers move money among.
const ACCOUNTS: usize = 6;
/// What each of them is funded with before the load starts.
const FUNDING: &str = "500.00";
/// The burst of transfers sent just before the fault, as fast as
/// [`SENDERS`] senders can: more than the system completes at once, so that
/// sagas queue up (the mix skips an account paying itself, about one in
/// eight here).
const BURST: usize = 100;
/// How many senders send the burst at once.
const SENDERS: usize = 4;
/// The trickle of transfers sent one by one from the moment the fault
/// begins, [`TRICKLE_PACE`] apart: through the fault and past it.
const TRICKLE: usize = 40;
const TRICKLE_PACE: Duration = Duration::from_millis(100);
/// How long a fault lasts once in force.
const FAULT_HELD: Duration = Duration::from_secs(3);
/// How long after the heal every transaction must have ended; also how long
/// a transfer sent during the fault may take to be accepted.
const BOUND: Duration = Duration::from_secs(120);
/// What a row's corebank runs with besides the usual.
#[derive(Default)]
struct Setup<'a> {
    /// Environment for the `corebank up` process.
    env: &'a [(&'a str, &'a str)],
    /// Services of which a second replica (`corebank serve`) runs beside it.
    replicas: &'a [&'static str],
    /// Environment for the second replicas.
    replica_env: &'a [(&'a str, &'a str)],
}

/// The signal a failpoint kills its process with.
const SIGKILL: i32 = 9;
/// The broker namespace of a row on a private RabbitMQ, which it has alone.
const PRIVATE_NAMESPACE: &str = "corebank";

/// A whole corebank with funded accounts and transfers in flight, ready for
/// a fault.
struct Row {
    name: &'static str,
    database_url: String,
    ports: Peers,
    amqp_url: String,
    namespace: String,
    owner: PgPool,
    key: KeyFile,
    /// Where the `corebank up` process serves its metrics.
    metrics: SocketAddr,
    corebank: Child,
    /// Extra `corebank serve` processes: the service, where each serves its
    /// metrics, and the process.
    replicas: Vec<(&'static str, SocketAddr, Child)>,
    clients: Clients,
    burst: Load,
    trickle: Load,
}

impl Row {
    /// Starts `corebank up` on the database at `database_url` (an owner
    /// login, reached by `owner` too) and the broker at `broker_url`, funds
    /// the accounts, sends the burst and starts the trickle, and returns with
    /// transactions in flight: the moment for the fault. The corebank
    /// process gets `setup.env` besides its usual environment, and a second
    /// replica of each of `setup.replicas` runs beside it from the start.
    async fn start(
        name: &'static str,
        database_url: &str,
        owner: PgPool,
        broker_url: String,
        namespace: String,
        setup: Setup<'_>,
    ) -> Row {
        let ports = free_ports();
        let key = KeyFile(std::env::temp_dir().join(format!(
            "corebank-faults-{}.key.pem",
            corebank_tests::harness::key()
        )));
        let operator = operator(&key.0);
        let metrics = free_port();
        let launch = Launch {
            database_url,
            broker_url: &broker_url,
            namespace: &namespace,
            ports: &ports,
            key: &key.0,
            env: setup.env,
            metrics,
        };
        let corebank = launch.spawn(&["up"]);
        let clients = Clients::connect(&ports, &operator).await;
        let mut replicas = Vec::new();
        for &service in setup.replicas {
            // Its own gRPC port; every other address is the system's.
            let mut own = ports.clone();
            own.insert(service, free_port());
            let metrics = free_port();
            let replica = Launch {
                ports: &own,
                metrics,
                env: setup.replica_env,
                ..launch
            }
            .spawn(&["serve", service]);
            connect(port(&own, service)).await;
            replicas.push((service, metrics, replica));
        }
        let accounts = open_funded_accounts(&clients, ACCOUNTS, FUNDING).await;
        let burst = Load::start(
            &clients,
            accounts.clone(),
            BURST,
            SENDERS,
            Duration::ZERO,
            BOUND,
        );
        burst.wait_until_sent(BURST).await;
        let trickle = Load::start(&clients, accounts, TRICKLE, 1, TRICKLE_PACE, BOUND);
        let in_flight = unfinished(&owner)
            .await
            .expect("count unfinished transactions");
        assert!(
            in_flight > 0,
            "{name}: the fault should catch transfers in flight"
        );
        eprintln!("{name}: fault injected with {in_flight} transactions in flight");
        Row {
            name,
            database_url: database_url.to_owned(),
            ports,
            amqp_url: broker_url,
            namespace,
            owner,
            key,
            metrics,
            corebank,
            replicas,
            clients,
            burst,
            trickle,
        }
    }

    /// Arms the failpoint the row's corebank was started with (SIGUSR1),
    /// waits until the failpoint kills the process, and starts corebank
    /// again without it. Returns the moment the new process was started.
    async fn crash_at_failpoint(&mut self) -> Instant {
        let name = self.name;
        let pid = self.corebank.id().expect("corebank runs").to_string();
        let armed = std::process::Command::new("kill")
            .args(["-USR1", &pid])
            .status()
            .expect("run kill");
        assert!(armed.success(), "{name}: arming the failpoint failed");
        let armed_at = Instant::now();
        let status = tokio::time::timeout(BOUND, self.corebank.wait())
            .await
            .unwrap_or_else(|_| panic!("{name}: the failpoint was not reached within {BOUND:?}"))
            .expect("wait for corebank");
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "{name}: corebank should have been killed by the failpoint, not {status}"
        );
        let in_flight = unfinished(&self.owner)
            .await
            .expect("count unfinished transactions");
        assert!(
            in_flight > 0,
            "{name}: the failpoint caught no transfer in flight"
        );
        eprintln!(
            "{name}: killed by the failpoint {:.1} s after arming it, with {in_flight} \
             transactions in flight and {} outbox rows unsent",
            armed_at.elapsed().as_secs_f64(),
            unsent(&self.owner).await
        );
        self.restart()
    }

    /// Starts `corebank up` again, without the environment of the first
    /// start; the moment it was started.
    fn restart(&mut self) -> Instant {
        self.corebank = Launch {
            database_url: &self.database_url,
            broker_url: &self.amqp_url,
            namespace: &self.namespace,
            ports: &self.ports,
            key: &self.key.0,
            env: &[],
            metrics: self.metrics,
        }
        .spawn(&["up"]);
        Instant::now()
    }

    /// Stops corebank with SIGTERM while transfers are in flight, expects it
    /// to exit cleanly with every outbox flushed, and starts it again.
    /// Returns the moment the new process was started.
    async fn stop_gracefully_and_restart(&mut self) -> Instant {
        let name = self.name;
        let pid = self.corebank.id().expect("corebank runs").to_string();
        let in_flight = unfinished(&self.owner)
            .await
            .expect("count unfinished transactions");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "{name}: sending SIGTERM failed");
        let asked = Instant::now();
        let status = tokio::time::timeout(BOUND, self.corebank.wait())
            .await
            .unwrap_or_else(|_| panic!("{name}: corebank did not stop within {BOUND:?}"))
            .expect("wait for corebank");
        assert!(status.success(), "{name}: corebank exited with {status}");
        let unsent = unsent(&self.owner).await;
        eprintln!(
            "{name}: stopped {:.1} s after SIGTERM with {in_flight} transactions in flight; \
             {unsent} outbox rows left unsent",
            asked.elapsed().as_secs_f64()
        );
        assert_eq!(unsent, 0, "{name}: the outboxes were not flushed");
        self.restart()
    }

    /// Some transactions are unfinished while the fault is in force, or
    /// the fault held nothing back and the row tested nothing.
    async fn assert_held_back(&self) {
        let held = unfinished(&self.owner)
            .await
            .expect("count unfinished transactions");
        assert!(
            held > 0,
            "{}: the fault held no transaction back",
            self.name
        );
        eprintln!(
            "{}: {held} transactions unfinished while the fault is in force",
            self.name
        );
    }

    /// Once the fault is healed (at `healed`): the rest of the load is
    /// accepted, every transaction ends within [`BOUND`] of the heal, the
    /// process never stopped, and every invariant holds.
    /// Returns how many duplicate deliveries the (last started) corebank's
    /// inboxes absorbed.
    async fn check_recovery(mut self, healed: Instant) -> f64 {
        let name = self.name;
        let accepted = self.burst.finish().await + self.trickle.finish().await;
        let load_done = healed.elapsed();
        let left = BOUND.saturating_sub(healed.elapsed());
        if let Err(unfinished) = until_every_transaction_ends(&self.owner, left).await {
            panic!(
                "{name}: {unfinished} transactions had not ended {BOUND:?} after the heal \
                 (corebank {})",
                process_state(&mut self.corebank)
            );
        }
        let recovery = healed.elapsed();
        eprintln!(
            "{name}: recovered: every transaction ended {:.1} s after the heal; the last of \
             the {accepted} transfers was accepted {:.1} s after the heal, {:.1} s before \
             every transaction had ended",
            recovery.as_secs_f64(),
            load_done.as_secs_f64(),
            recovery.saturating_sub(load_done).as_secs_f64()
        );
        eprintln!("{name}: {}", outcome(&self.owner).await);
        let duplicates = counter(self.metrics, "corebank_messaging_duplicates_total", "").await;
        eprintln!(
            "{name}: {duplicates} duplicate deliveries absorbed by the inboxes (since the last start)"
        );
        assert_eq!(
            process_state(&mut self.corebank),
            "running",
            "{name}: corebank stopped"
        );
        for (service, metrics, replica) in &mut self.replicas {
            assert_eq!(
                process_state(replica),
                "running",
                "{name}: the second {service} stopped"
            );
            let handled = counter(*metrics, "corebank_messaging_handled_total", "").await;
            eprintln!("{name}: the second {service} handled {handled} messages");
            assert!(handled > 0.0, "{name}: the second {service} did no work");
        }
        let customer_money =
            FUNDING.parse::<Decimal>().expect("an amount") * Decimal::from(ACCOUNTS);
        assert_invariants(&self.owner, &self.clients, accepted, customer_money).await;
        assert_nothing_parked(&self.amqp_url, &self.namespace).await;
        duplicates
    }
}

/// How the transfers ended, and how many sagas the fault made re-send a
/// command after a step timed out (or give up): evidence that it hit them.
async fn outcome(owner: &PgPool) -> String {
    let (completed, failed, timed_out): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from transaction.transaction
                  where kind = 'transfer' and status = 'completed'),
                (select count(*) from transaction.transaction
                  where kind = 'transfer' and status = 'failed'),
                (select count(distinct saga_id) from orchestrator.saga_log
                  where event in ('retried', 'timed_out'))",
    )
    .fetch_one(owner)
    .await
    .expect("count outcomes");
    format!(
        "{completed} transfers completed, {failed} failed; {timed_out} sagas saw a step time out \
         (re-sent or given up)"
    )
}

/// Outbox rows not yet marked sent, in every schema that has an outbox.
async fn unsent(owner: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select (select count(*) from customer.outbox where sent_at is null)
              + (select count(*) from account.outbox where sent_at is null)
              + (select count(*) from transaction.outbox where sent_at is null)
              + (select count(*) from orchestrator.outbox where sent_at is null)
              + (select count(*) from fraud.outbox where sent_at is null)
              + (select count(*) from reporting.outbox where sent_at is null)",
    )
    .fetch_one(owner)
    .await
    .expect("count unsent outbox rows")
}

/// Whether the corebank process still runs, or how it ended.
fn process_state(corebank: &mut Child) -> String {
    match corebank.try_wait() {
        Ok(None) => "running".to_owned(),
        Ok(Some(status)) => format!("exited: {status}"),
        Err(error) => format!("unknown: {error}"),
    }
}

/// The row's token signing key, removed with the row.
struct KeyFile(PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Holds a fault that is already in force, then says how long it lasted.
async fn hold(name: &str, since: Instant) {
    sleep(FAULT_HELD).await;
    eprintln!(
        "{name}: fault in force for {:.1} s",
        since.elapsed().as_secs_f64()
    );
}

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
    let row = Row::start(
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
    let row = Row::start(
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
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let name = "every backend terminated";
    let row = Row::start(
        name,
        &database_url(&db.name),
        db.owner.clone(),
        amqp_url(),
        lease.namespace().as_str().to_owned(),
        Setup::default(),
    )
    .await;

    // Every connection to the row's database but the one asking, again and
    // again while the fault lasts, so reconnections die as well.
    let fault = Instant::now();
    let mut terminated = 0;
    while fault.elapsed() < FAULT_HELD {
        let round: i64 = sqlx::query_scalar(
            // Materialized, so that no plan terminates a backend before
            // the filter has ruled out every other database's.
            "with target as materialized (
                 select pid from pg_stat_activity
                  where datname = $1 and pid <> pg_backend_pid())
             select count(*) from target where pg_terminate_backend(pid)",
        )
        .bind(&db.name)
        .fetch_one(&db.owner)
        .await
        .expect("terminate backends");
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
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let (amqp_url, proxy) = through_proxy(&amqp_url()).await;
    let row = Row::start(
        name,
        &database_url(&db.name),
        db.owner.clone(),
        amqp_url,
        lease.namespace().as_str().to_owned(),
        Setup::default(),
    )
    .await;

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

/// A row whose corebank kills itself at `failpoint` (see
/// `corebank_platform::failpoint`) under load and is started again.
async fn failpoint_row(name: &'static str, failpoint: &str) {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let mut row = Row::start(
        name,
        &database_url(&db.name),
        db.owner.clone(),
        amqp_url(),
        lease.namespace().as_str().to_owned(),
        Setup {
            env: &[("COREBANK_FAILPOINT", failpoint)],
            ..Setup::default()
        },
    )
    .await;
    let restarted = row.crash_at_failpoint().await;
    row.check_recovery(restarted).await;
}

// The orchestrator's commands go out through its outbox: the step's state and
// the next command commit together, and the relay publishes them after.

#[tokio::test(flavor = "multi_thread")]
async fn the_orchestrator_killed_between_its_commit_and_the_publish_of_the_next_command_loses_nothing()
 {
    failpoint_row(
        "orchestrator killed before publishing",
        "relay.before_publish:orchestrator:3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_participant_killed_after_its_effects_commit_before_the_ack_applies_them_once() {
    failpoint_row(
        "account service killed before acking",
        "consumer.before_ack:account.commands:3",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_killed_after_publishing_before_marking_its_outbox_sent_publishes_again_harmlessly()
 {
    failpoint_row(
        "account service killed before marking sent",
        "relay.before_mark_sent:account:3",
    )
    .await;
}

/// Two replicas of the orchestrator and two of the account service, side by
/// side for the whole load, competing for the same queues, outboxes and
/// timers: every saga is handled exactly once (every invariant holds), and
/// each second replica did its share of the work.
#[tokio::test(flavor = "multi_thread")]
async fn two_orchestrators_and_two_account_services_side_by_side_handle_every_saga_once() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let name = "replicas side by side";
    let row = Row::start(
        name,
        &database_url(&db.name),
        db.owner.clone(),
        amqp_url(),
        lease.namespace().as_str().to_owned(),
        Setup {
            replicas: &["orchestrator", "account"],
            ..Setup::default()
        },
    )
    .await;
    row.check_recovery(Instant::now()).await;
}

/// SIGTERM under load: corebank finishes the batches in hand, acknowledges
/// them and flushes every outbox before it exits, so after the restart no
/// message the stopped process handled is delivered again.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_and_flushes_so_nothing_is_handled_twice_after_the_restart() {
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let name = "sigterm under load";
    let mut row = Row::start(
        name,
        &database_url(&db.name),
        db.owner.clone(),
        amqp_url(),
        lease.namespace().as_str().to_owned(),
        Setup::default(),
    )
    .await;
    let restarted = row.stop_gracefully_and_restart().await;
    let duplicates = row.check_recovery(restarted).await;
    assert_eq!(
        duplicates, 0.0,
        "{name}: messages the stopped process had handled came again"
    );
}

/// Two orchestrators whose clocks are 2 s apart share the step timers for a
/// whole load. The second runs ahead, so it finds a deadline the first set
/// 2 s early: with a 2.1 s step timeout it re-sends every step still waiting
/// after 100 ms. Each timer fires once for each attempt (never once
/// per replica), the re-sends are absorbed, every transfer completes and
/// every invariant holds.
#[tokio::test(flavor = "multi_thread")]
async fn two_orchestrators_with_clocks_two_seconds_apart_share_the_timers_and_complete_every_saga()
{
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let name = "orchestrator clocks 2 s apart";
    let timeout = ("COREBANK_SAGA_STEP_TIMEOUT_MS", "2100");
    let row = Row::start(
        name,
        &database_url(&db.name),
        db.owner.clone(),
        amqp_url(),
        lease.namespace().as_str().to_owned(),
        Setup {
            env: &[timeout],
            replicas: &["orchestrator"],
            replica_env: &[timeout, ("COREBANK_CLOCK_SKEW_MS", "2000")],
        },
    )
    .await;
    let owner = row.owner.clone();
    row.check_recovery(Instant::now()).await;
    let failed: i64 =
        sqlx::query_scalar("select count(*) from transaction.transaction where status = 'failed'")
            .fetch_one(&owner)
            .await
            .expect("count failed transactions");
    assert_eq!(failed, 0, "{name}: transfers failed");
    let (timed_out, twice): (i64, i64) = sqlx::query_as(
        "select (select count(*) from orchestrator.saga_log
                  where event in ('retried', 'timed_out')),
                (select count(*) from (select 1 from orchestrator.saga_log
                                        where event in ('retried', 'timed_out')
                                        group by saga_id, step, direction, attempt
                                       having count(*) > 1) as fired_twice)",
    )
    .fetch_one(&owner)
    .await
    .expect("count timer firings");
    eprintln!("{name}: {timed_out} step timers fired, {twice} of them twice");
    assert!(
        timed_out > 0,
        "{name}: no timer fired: the skew tested nothing"
    );
    assert_eq!(twice, 0, "{name}: a timer fired once per replica");
}
