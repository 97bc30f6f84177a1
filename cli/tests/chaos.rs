//! The chaos soak: an open-loop load of transfers at half the rate the
//! system just sustained, while a seeded scheduler injects faults of the
//! matrix at random and heals each; then the load drains and every
//! invariant is checked. It prints a table of the faults injected by kind,
//! the sagas started, completed and failed, the longest recovery and each
//! invariant's result, and the seed that replays the run.
//!
//! `CHAOS_SECONDS` sets how long faults are injected (default 120: the
//! suite's short form; `scripts/chaos` runs 600), `CHAOS_SEED` the seed
//! (default: a random one, printed). The faults: latency, a blackhole and a
//! reset on every broker link, latency and a reset on every database link
//! (each through the project's fault proxy), every database backend
//! terminated, corebank killed with SIGKILL, stopped with SIGTERM, and killed
//! at a random failpoint; each process stopped is started again at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use corebank_faults::{Fault, FaultProxy};
use corebank_tests::harness::{TestDb, amqp_url, key, lease_namespace};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio::process::Child;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

mod common;
use common::workload::{
    Clients, invariants, open_funded_accounts, operator, parked, send_transfer, transfer,
    until_every_transaction_ends,
};
use common::{Launch, database_url, free_port, free_ports, through_proxy};

const ACCOUNTS: usize = 8;
const FUNDING: &str = "1000.00";
/// How long the closed-loop run that finds the sustained rate lasts.
const CALIBRATION: Duration = Duration::from_secs(10);
/// Senders of the closed-loop run. More make bigger bursts, not more
/// throughput: a burst moves through the saga's steps in lockstep, one
/// consumer batch a step, and one of 64 can outlast the whole window.
const CALIBRATION_SENDERS: usize = 16;
/// How long a transfer sent during a fault may take to be accepted.
const PATIENCE: Duration = Duration::from_secs(300);
/// How long after the last heal every transaction must have ended.
const BOUND: Duration = Duration::from_secs(180);
/// How long after a heal the system must complete a transaction again.
const RECOVERY_BOUND: Duration = Duration::from_secs(120);
/// How long a failpoint may take to be reached once armed.
const FAILPOINT_BOUND: Duration = Duration::from_secs(30);
const FAILPOINTS: [&str; 3] = [
    "relay.before_publish:orchestrator:2",
    "consumer.before_ack:account.commands:2",
    "relay.before_mark_sent:transaction:2",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    BrokerLatency,
    BrokerBlackhole,
    BrokerReset,
    DatabaseLatency,
    DatabaseReset,
    BackendsTerminated,
    Killed,
    Terminated,
    Failpoint,
}

const KINDS: [Kind; 9] = [
    Kind::BrokerLatency,
    Kind::BrokerBlackhole,
    Kind::BrokerReset,
    Kind::DatabaseLatency,
    Kind::DatabaseReset,
    Kind::BackendsTerminated,
    Kind::Killed,
    Kind::Terminated,
    Kind::Failpoint,
];

/// How corebank is started: its database and broker (each through a fault
/// proxy), namespace, ports, signing key and metrics address.
struct Wiring {
    db: TestDb,
    namespace: String,
    database_url: String,
    broker_url: String,
    ports: corebank_platform::service::Peers,
    key_path: std::path::PathBuf,
    metrics: std::net::SocketAddr,
    broker_proxy: FaultProxy,
    database_proxy: FaultProxy,
}

impl Wiring {
    /// Starts `corebank up` with `env` besides the usual environment.
    fn spawn(&self, env: &[(&str, &str)]) -> Child {
        Launch {
            database_url: &self.database_url,
            broker_url: &self.broker_url,
            namespace: &self.namespace,
            ports: &self.ports,
            key: &self.key_path,
            env,
            metrics: self.metrics,
        }
        .spawn(&["up"])
    }
}

/// A whole corebank running, and how to start it again.
struct System {
    wiring: Wiring,
    corebank: Child,
}

impl System {
    fn spawn(&self, env: &[(&str, &str)]) -> Child {
        self.wiring.spawn(env)
    }

    fn signal(&self, signal: &str) {
        let pid = self.corebank.id().expect("corebank runs").to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// Waits up to `bound` for corebank to end; how it ended, if it did.
    async fn ended(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        timeout(bound, self.corebank.wait())
            .await
            .ok()
            .map(|status| status.expect("wait for corebank"))
    }

    /// Injects `kind`, holds it for `hold` when it lasts, and heals it.
    /// Returns what happened, for the log.
    async fn inject(&mut self, kind: Kind, hold: Duration, rng: &mut StdRng) -> String {
        match kind {
            Kind::BrokerLatency => {
                let latency = Fault::Latency {
                    base: Duration::from_millis(200),
                    jitter: Duration::from_millis(100),
                };
                held(&self.wiring.broker_proxy, latency, hold).await;
                format!("held {hold:?}")
            }
            Kind::BrokerBlackhole => {
                held(&self.wiring.broker_proxy, Fault::Blackhole, hold).await;
                // Bytes sent into the hole are lost: the links are dead.
                self.wiring.broker_proxy.reset_all();
                format!("held {hold:?}")
            }
            Kind::BrokerReset => {
                self.wiring.broker_proxy.reset_all();
                "every link reset".to_owned()
            }
            Kind::DatabaseLatency => {
                let latency = Fault::Latency {
                    base: Duration::from_millis(20),
                    jitter: Duration::from_millis(10),
                };
                held(&self.wiring.database_proxy, latency, hold).await;
                format!("held {hold:?}")
            }
            Kind::DatabaseReset => {
                self.wiring.database_proxy.reset_all();
                "every link reset".to_owned()
            }
            Kind::BackendsTerminated => {
                let terminated = terminate_backends(&self.wiring.db).await;
                format!("{terminated} backends terminated")
            }
            Kind::Killed => {
                self.signal("-KILL");
                let status = self.ended(BOUND).await.expect("a killed corebank ends");
                self.corebank = self.spawn(&[]);
                format!("ended {status}, started again")
            }
            Kind::Terminated => {
                let asked = Instant::now();
                self.signal("-TERM");
                let status = self.ended(BOUND).await.expect("corebank stops on SIGTERM");
                assert!(status.success(), "corebank exited with {status} on SIGTERM");
                let took = asked.elapsed();
                self.corebank = self.spawn(&[]);
                format!("stopped cleanly in {took:.1?}, started again")
            }
            Kind::Failpoint => {
                let failpoint = *FAILPOINTS.choose(rng).expect("a failpoint");
                // The clean process stops, and one with the failpoint takes
                // its place; armed once it serves.
                self.signal("-TERM");
                self.ended(BOUND).await.expect("corebank stops on SIGTERM");
                self.corebank = self.spawn(&[("COREBANK_FAILPOINT", failpoint)]);
                common::connect(common::port(&self.wiring.ports, "transaction")).await;
                self.signal("-USR1");
                let outcome = match self.ended(FAILPOINT_BOUND).await {
                    Some(status) => format!("{failpoint}: ended {status}"),
                    None => {
                        self.signal("-KILL");
                        self.ended(BOUND).await;
                        format!("{failpoint}: not reached in {FAILPOINT_BOUND:?}, killed")
                    }
                };
                self.corebank = self.spawn(&[]);
                format!("{outcome}, started again")
            }
        }
    }
}

/// Puts `fault` on `proxy` for `hold`, then lets traffic pass again.
async fn held(proxy: &FaultProxy, fault: Fault, hold: Duration) {
    proxy.set(fault);
    sleep(hold).await;
    proxy.set(Fault::Pass);
}

/// Terminates every backend of `db`'s database but the asker's.
async fn terminate_backends(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "with target as materialized (
             select pid from pg_stat_activity
              where datname = $1 and pid <> pg_backend_pid())
         select count(*) from target where pg_terminate_backend(pid)",
    )
    .bind(&db.name)
    .fetch_one(&db.owner)
    .await
    .expect("terminate backends")
}

/// Transactions completed so far; `None` while the database does not answer.
async fn completed(owner: &PgPool) -> Option<i64> {
    sqlx::query_scalar("select count(*) from transaction.transaction where status = 'completed'")
        .fetch_one(owner)
        .await
        .ok()
}

/// Transfers sent open-loop, each until accepted; counts the accepted ones.
struct OpenLoop {
    accepted: Arc<AtomicI64>,
    sends: JoinSet<()>,
    next: usize,
}

impl OpenLoop {
    fn send(&mut self, clients: &Clients, accounts: &Arc<Vec<String>>) {
        let i = self.next;
        self.next += 1;
        let Some(request) = transfer(accounts, i) else {
            return;
        };
        let mut transactions = clients.transactions.clone();
        let accepted = Arc::clone(&self.accepted);
        self.sends.spawn(async move {
            send_transfer(&mut transactions, &request, PATIENCE).await;
            accepted.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// The completion rate a closed loop of senders sustains for
/// [`CALIBRATION`], each waiting for the end of its transfer before sending
/// the next, in transfers a second; and how many transfers it sent.
async fn sustained_rate(
    clients: &Clients,
    accounts: &Arc<Vec<String>>,
    owner: &PgPool,
) -> (f64, i64) {
    let before = completed(owner).await.expect("count completed");
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for sender in 0..CALIBRATION_SENDERS {
        let mut transactions = clients.transactions.clone();
        let accounts = Arc::clone(accounts);
        senders.spawn(async move {
            let mut accepted = 0;
            let mut i = sender;
            while started.elapsed() < CALIBRATION {
                if let Some(mut request) = transfer(&accounts, i) {
                    // Each answer waits for the end of its saga: the loop
                    // measures completions, not how fast requests queue up.
                    request.wait = Some(prost_types::Duration {
                        seconds: 30,
                        nanos: 0,
                    });
                    send_transfer(&mut transactions, &request, PATIENCE).await;
                    accepted += 1;
                }
                i += CALIBRATION_SENDERS;
            }
            accepted
        });
    }
    sleep(CALIBRATION).await;
    let after = completed(owner).await.expect("count completed");
    let window = started.elapsed();
    let accepted: i64 = senders.join_all().await.into_iter().sum();
    let rate = (after - before) as f64 / window.as_secs_f64();
    (rate, accepted)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seeded_chaos_soak_under_open_loop_load_keeps_every_invariant() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .map(|value| value.parse().expect("CHAOS_SECONDS is a number of seconds"))
        .unwrap_or(120);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .map(|value| value.parse().expect("CHAOS_SEED is a number"))
        .unwrap_or_else(rand::random);
    eprintln!(
        "chaos: seed {seed}, {seconds} s of faults (replay: CHAOS_SEED={seed} scripts/chaos {seconds})"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let (broker_url, broker_proxy) = through_proxy(&amqp_url()).await;
    let (database_url, database_proxy) = through_proxy(&database_url(&db.name)).await;
    let key_path = std::env::temp_dir().join(format!("corebank-chaos-{}.key.pem", key()));
    let operator = operator(&key_path);
    let wiring = Wiring {
        namespace: lease.namespace().as_str().to_owned(),
        database_url,
        broker_url,
        ports: free_ports(),
        key_path,
        metrics: free_port(),
        broker_proxy,
        database_proxy,
        db,
    };
    let mut system = System {
        corebank: wiring.spawn(&[]),
        wiring,
    };
    let clients = Clients::connect(&system.wiring.ports, &operator).await;
    let accounts = Arc::new(open_funded_accounts(&clients, ACCOUNTS, FUNDING).await);
    let owner = system.wiring.db.owner.clone();

    let (max_rate, calibration_accepted) = sustained_rate(&clients, &accounts, &owner).await;
    until_every_transaction_ends(&owner, BOUND)
        .await
        .expect("the calibration load ends");
    let rate = (max_rate / 2.0).max(1.0);
    eprintln!("chaos: {max_rate:.1} transfers/s sustained; the load runs at {rate:.1}/s");

    // The open-loop load, paced on its own clock whatever the faults do.
    let mut load = OpenLoop {
        accepted: Arc::new(AtomicI64::new(0)),
        sends: JoinSet::new(),
        next: 1_000_000,
    };
    let interval = Duration::from_secs_f64(1.0 / rate);
    let soak = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut injected: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut longest_recovery = (Duration::ZERO, None);
    let mut next_fault = started + Duration::from_secs(rng.random_range(2..5));
    let mut next_send = started;
    let mut failures = Vec::new();
    while started.elapsed() < soak {
        if Instant::now() >= next_send {
            load.send(&clients, &accounts);
            next_send += interval;
            continue;
        }
        if Instant::now() < next_fault {
            sleep(
                next_send
                    .min(next_fault)
                    .saturating_duration_since(Instant::now()),
            )
            .await;
            continue;
        }
        let kind = *KINDS.choose(&mut rng).expect("a kind");
        let hold = Duration::from_millis(rng.random_range(2_000..5_000));
        let at = started.elapsed();
        // The load goes on while the fault is held.
        let mut inject = Box::pin(system.inject(kind, hold, &mut rng));
        let what = loop {
            tokio::select! {
                what = &mut inject => break what,
                _ = sleep(next_send.saturating_duration_since(Instant::now())) => {
                    load.send(&clients, &accounts);
                    next_send += interval;
                }
            }
        };
        drop(inject);
        *injected.entry(kind).or_default() += 1;
        let healed = Instant::now();
        let baseline = completed(&owner).await.unwrap_or(0);
        // Recovered once a transaction completes after the heal.
        let recovery = loop {
            if completed(&owner).await.is_some_and(|now| now > baseline) {
                break Some(healed.elapsed());
            }
            if healed.elapsed() > RECOVERY_BOUND {
                break None;
            }
            if Instant::now() >= next_send {
                load.send(&clients, &accounts);
                next_send += interval;
            }
            sleep(Duration::from_millis(100)).await;
        };
        eprintln!(
            "chaos: {:>6.1} s {kind:?}: {what}; recovered in {}",
            at.as_secs_f64(),
            recovery.map_or("-".to_owned(), |took| format!(
                "{:.1} s",
                took.as_secs_f64()
            ))
        );
        match recovery {
            Some(took) if took > longest_recovery.0 => longest_recovery = (took, Some(kind)),
            Some(_) => {}
            None => failures.push(format!(
                "no transaction completed within {RECOVERY_BOUND:?} of healing {kind:?} at {:.1} s",
                at.as_secs_f64()
            )),
        }
        next_fault = Instant::now() + Duration::from_secs(rng.random_range(2..6));
    }

    // Drain: every send accepted, every transaction ended.
    let sent_until = started.elapsed();
    while let Some(joined) = load.sends.join_next().await {
        joined.expect("every transfer accepted");
    }
    let chaos_accepted = load.accepted.load(Ordering::Relaxed);
    let drained = until_every_transaction_ends(&owner, BOUND).await;
    let (started_sagas, completed_sagas, failed_sagas): (i64, i64, i64) = sqlx::query_as(
        "select count(*),
                count(*) filter (where state = 'completed'),
                count(*) filter (where state = 'failed')
           from orchestrator.saga",
    )
    .fetch_one(&owner)
    .await
    .expect("count sagas");

    let mut results = vec![(
        "every transaction ended within the bound after the last heal",
        drained
            .map(|_| ())
            .map_err(|left| format!("{left} unfinished {BOUND:?} after the last heal")),
    )];
    if results[0].1.is_ok() {
        let customer_money =
            FUNDING.parse::<Decimal>().expect("an amount") * Decimal::from(ACCOUNTS);
        results.extend(
            invariants(
                &owner,
                &clients,
                calibration_accepted + chaos_accepted,
                customer_money,
            )
            .await,
        );
        let parked = parked(&amqp_url(), &system.wiring.namespace).await;
        results.push((
            "no message parked",
            if parked.is_empty() {
                Ok(())
            } else {
                Err(format!("{parked:#?}"))
            },
        ));
    }
    results.push((
        "the system recovered after every fault",
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        },
    ));

    println!(
        "chaos soak: seed {seed}, {:.0} s of faults, load {rate:.1} transfers/s (half of {max_rate:.1})",
        sent_until.as_secs_f64()
    );
    println!("| fault | injected |");
    println!("| --- | --- |");
    for (kind, count) in &injected {
        println!("| {kind:?} | {count} |");
    }
    println!(
        "sagas (the calibration run included): {started_sagas} started, {completed_sagas} \
         completed, {failed_sagas} failed; \
         {chaos_accepted} transfers accepted during the soak"
    );
    match longest_recovery {
        (took, Some(kind)) => println!(
            "longest recovery: {:.1} s, after {kind:?}",
            took.as_secs_f64()
        ),
        _ => println!("longest recovery: -"),
    }
    println!("| invariant | result |");
    println!("| --- | --- |");
    for (name, result) in &results {
        match result {
            Ok(()) => println!("| {name} | ok |"),
            Err(why) => println!("| {name} | VIOLATED: {why} |"),
        }
    }
    let violated = results.iter().filter(|(_, result)| result.is_err()).count();
    let _ = std::fs::remove_file(&system.wiring.key_path);
    assert_eq!(
        violated, 0,
        "{violated} invariants violated; replay with CHAOS_SEED={seed} scripts/chaos {seconds}"
    );
}
