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
//! reset on every broker link, the broker (a private RabbitMQ node) killed or
//! stopped and started again, latency, a stall and a reset on every database
//! link (each link through the project's fault proxy), every database backend
//! terminated, corebank killed with SIGKILL, stopped with SIGTERM, and killed
//! at a random failpoint; each process stopped is started again at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corebank_faults::PrivateRabbit;
use corebank_tests::harness::{TestDb, key};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

#[path = "../common/mod.rs"]
mod common;
mod system;

use common::workload::{
    Clients, invariants, open_funded_accounts, operator, parked, send_transfer, transfer,
    until_every_transaction_ends,
};
use common::{database_url, free_port, free_ports, through_proxy};
use system::{BOUND, KINDS, Kind, System, Wiring};

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
/// How long after a heal the system must complete a transaction again.
const RECOVERY_BOUND: Duration = Duration::from_secs(120);
/// Transactions completed so far; `None` while the database does not answer.
async fn completed(owner: &PgPool) -> Option<i64> {
    sqlx::query_scalar("select count(*) from transaction.transaction where status = 'completed'")
        .fetch_one(owner)
        .await
        .ok()
}

/// Transfers sent open-loop by a task of their own, paced on its own clock
/// whatever the faults do, each sent until accepted.
struct OpenLoop {
    stop: CancellationToken,
    task: JoinHandle<i64>,
}

impl OpenLoop {
    /// Sends one transfer of the mix every `interval` until [`OpenLoop::finish`].
    fn start(clients: &Clients, accounts: Arc<Vec<String>>, interval: Duration) -> OpenLoop {
        let stop = CancellationToken::new();
        let transactions = clients.transactions.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut sends = JoinSet::new();
                let mut sent = 0;
                let mut tick = tokio::time::interval(interval);
                // Numbered apart from the calibration's transfers.
                for i in 1_000_000.. {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    if let Some(request) = transfer(&accounts, i) {
                        let mut transactions = transactions.clone();
                        sends.spawn(async move {
                            send_transfer(&mut transactions, &request, PATIENCE).await;
                        });
                        sent += 1;
                    }
                }
                while let Some(joined) = sends.join_next().await {
                    joined.expect("every transfer accepted");
                }
                sent
            }
        });
        OpenLoop { stop, task }
    }

    /// Stops sending and waits until every transfer sent was accepted; how
    /// many there were.
    async fn finish(self) -> i64 {
        self.stop.cancel();
        self.task.await.expect("the open-loop load ran")
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
    // A broker of its own, which the soak stops and kills.
    let rabbit = PrivateRabbit::start().await.expect("a private rabbitmq");
    let (broker_url, broker_proxy) = through_proxy(&rabbit.url()).await;
    let (database_url, database_proxy) = through_proxy(&database_url(&db.name)).await;
    let key_path = std::env::temp_dir().join(format!("corebank-chaos-{}.key.pem", key()));
    let operator = operator(&key_path);
    let wiring = Wiring {
        namespace: "corebank".to_owned(),
        database_url,
        broker_url,
        ports: free_ports(),
        key_path,
        metrics: free_port(),
        broker_proxy,
        database_proxy,
        db,
        rabbit,
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

    let interval = Duration::from_secs_f64(1.0 / rate);
    let load = OpenLoop::start(&clients, Arc::clone(&accounts), interval);
    let soak = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut injected: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut longest_recovery = (Duration::ZERO, None);
    let mut failures = Vec::new();
    let mut gap = Duration::from_secs(rng.random_range(2..5));
    loop {
        sleep(gap).await;
        if started.elapsed() >= soak {
            break;
        }
        let kind = *KINDS.choose(&mut rng).expect("a kind");
        let hold = Duration::from_millis(rng.random_range(2_000..5_000));
        let at = started.elapsed();
        let what = system.inject(kind, hold, &mut rng).await;
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
        gap = Duration::from_secs(rng.random_range(2..6));
    }

    // Drain: every send accepted, every transaction ended.
    let sent_until = started.elapsed();
    let chaos_accepted = load.finish().await;
    let drained = until_every_transaction_ends(&owner, BOUND).await;
    let (started_sagas, completed_sagas, failed_sagas): (i64, i64, i64) = sqlx::query_as(
        "select count(*),
                count(*) filter (where state = 'completed'),
                count(*) filter (where state in ('failed', 'compensated'))
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
        let parked = parked(&system.wiring.rabbit.url(), &system.wiring.namespace).await;
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
