//! One row of the matrix: a whole corebank with funded accounts and
//! transfers in flight, the fault's helpers, and the checks after the heal.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_faults::FaultProxy;
use corebank_platform::service::Peers;
use corebank_tests::harness::{NamespaceLease, TestDb, amqp_url, lease_namespace};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio::process::Child;
use tokio::time::{Instant, sleep};

use crate::common::workload::{
    Clients, Load, assert_invariants, assert_nothing_parked, open_funded_accounts, operator,
    unfinished, until_every_transaction_ends,
};
use crate::common::{
    Launch, connect, counter, database_url, free_port, free_ports, port, signal, through_proxy,
};

/// Customer accounts the transfers move money among.
pub const ACCOUNTS: usize = 6;
/// What each of them is funded with before the load starts.
pub const FUNDING: &str = "500.00";
/// The burst of transfers sent just before the fault, as fast as
/// [`SENDERS`] senders can: more than the system completes at once, so that
/// sagas queue up, about 200 in flight with the trickle when the fault
/// strikes (the mix skips an account paying itself, about one in eight here).
pub const BURST: usize = 200;
/// How many senders send the burst at once.
pub const SENDERS: usize = 4;
/// The trickle of transfers sent one by one from the moment the fault
/// begins, [`TRICKLE_PACE`] apart: through the fault and past it.
pub const TRICKLE: usize = 40;
pub const TRICKLE_PACE: Duration = Duration::from_millis(100);
/// How long a fault lasts once in force.
pub const FAULT_HELD: Duration = Duration::from_secs(3);
/// How long after the heal every transaction must have ended; also how long
/// a transfer sent during the fault may take to be accepted.
pub const BOUND: Duration = Duration::from_secs(120);
/// What a row's corebank runs with besides the usual.
#[derive(Default)]
pub struct Setup<'a> {
    /// Environment for the `corebank up` process.
    pub env: &'a [(&'a str, &'a str)],
    /// Services of which a second replica (`corebank serve`) runs beside it.
    pub replicas: &'a [&'static str],
    /// Environment for the second replicas.
    pub replica_env: &'a [(&'a str, &'a str)],
    /// A service run as a process of its own (`up --except` beside `serve`)
    /// with one of its links through a fault proxy.
    pub apart: Option<(&'static str, Link)>,
}

/// A link of a service to one of the servers.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    Broker,
    Database,
}

/// A service running as a process of its own, one of its links through a
/// fault proxy.
pub struct Apart {
    pub service: &'static str,
    pub proxy: FaultProxy,
    /// Where it serves its metrics.
    pub metrics: SocketAddr,
    pub process: Child,
}

/// The signal a failpoint kills its process with.
pub const SIGKILL: i32 = 9;
/// The broker namespace of a row on a private RabbitMQ, which it has alone.
pub const PRIVATE_NAMESPACE: &str = "corebank";

/// A whole corebank with funded accounts and transfers in flight, ready for
/// a fault.
pub struct Row {
    pub name: &'static str,
    pub database_url: String,
    pub ports: Peers,
    pub amqp_url: String,
    pub namespace: String,
    pub owner: PgPool,
    pub key: KeyFile,
    /// Where the `corebank up` process serves its metrics.
    pub metrics: SocketAddr,
    pub corebank: Child,
    /// Extra `corebank serve` processes: the service, where each serves its
    /// metrics, and the process.
    pub replicas: Vec<(&'static str, SocketAddr, Child)>,
    pub apart: Option<Apart>,
    /// How the corebank process is run: `up`, and which services it leaves out.
    pub run: Vec<&'static str>,
    pub clients: Clients,
    /// The burst and the trickle, until [`Row::check_recovery`] awaits them.
    pub burst: Option<Load>,
    pub trickle: Option<Load>,
    /// The database and broker namespace a row on the shared servers made
    /// for itself; dropped last, after the processes.
    pub shared: Option<(TestDb, NamespaceLease)>,
}

impl Row {
    /// Starts `corebank up` on the database at `database_url` (an owner
    /// login, reached by `owner` too) and the broker at `broker_url`, funds
    /// the accounts, sends the burst and starts the trickle, and returns with
    /// transactions in flight: the moment for the fault. The corebank
    /// process gets `setup.env` besides its usual environment, and a second
    /// replica of each of `setup.replicas` runs beside it from the start.
    pub async fn start(
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
        let mut run = vec!["up"];
        let mut apart = None;
        let corebank = if let Some((service, link)) = setup.apart {
            run.extend(["--except", service]);
            let corebank = launch.spawn(&run);
            // It provisioned every service's login and schema once it listens.
            let first = SERVICES.iter().map(|s| s.name()).find(|s| *s != service);
            connect(port(&ports, first.expect("another service"))).await;
            let server = match link {
                Link::Broker => broker_url.as_str(),
                Link::Database => database_url,
            };
            let (proxied, proxy) = through_proxy(server).await;
            let metrics = free_port();
            let process = match link {
                Link::Broker => Launch {
                    broker_url: &proxied,
                    metrics,
                    ..launch
                },
                Link::Database => Launch {
                    database_url: &proxied,
                    metrics,
                    ..launch
                },
            }
            .spawn(&["serve", service]);
            apart = Some(Apart {
                service,
                proxy,
                metrics,
                process,
            });
            corebank
        } else {
            launch.spawn(&run)
        };
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
            apart,
            run,
            clients,
            burst: Some(burst),
            trickle: Some(trickle),
            shared: None,
        }
    }

    /// [`Row::start`] on a fresh database of the shared PostgreSQL and a
    /// leased namespace of the shared RabbitMQ, reached at `broker_url` (the
    /// shared broker's own by default).
    pub async fn on_shared_servers(
        name: &'static str,
        broker_url: Option<String>,
        setup: Setup<'_>,
    ) -> Row {
        let db = TestDb::create(&[]).await;
        let lease = lease_namespace().await;
        let mut row = Row::start(
            name,
            &database_url(&db.name),
            db.owner.clone(),
            broker_url.unwrap_or_else(amqp_url),
            lease.namespace().as_str().to_owned(),
            setup,
        )
        .await;
        row.shared = Some((db, lease));
        row
    }

    /// Arms the failpoint the row's corebank was started with (SIGUSR1),
    /// waits until the failpoint kills the process, and starts corebank
    /// again without it. Returns the moment the new process was started.
    pub async fn crash_at_failpoint(&mut self) -> Instant {
        let name = self.name;
        signal(&self.corebank, "-USR1");
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
    pub fn restart(&mut self) -> Instant {
        self.corebank = Launch {
            database_url: &self.database_url,
            broker_url: &self.amqp_url,
            namespace: &self.namespace,
            ports: &self.ports,
            key: &self.key.0,
            env: &[],
            metrics: self.metrics,
        }
        .spawn(&self.run);
        Instant::now()
    }

    /// Stops corebank with SIGTERM while transfers are in flight, expects it
    /// to exit cleanly with every outbox flushed, and starts it again.
    /// Returns the moment the new process was started.
    pub async fn stop_gracefully_and_restart(&mut self) -> Instant {
        let name = self.name;
        let in_flight = unfinished(&self.owner)
            .await
            .expect("count unfinished transactions");
        signal(&self.corebank, "-TERM");
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
    pub async fn assert_held_back(&self) {
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
    pub async fn check_recovery(&mut self, healed: Instant) -> f64 {
        let name = self.name;
        let burst = self.burst.take().expect("the burst was sent");
        let trickle = self.trickle.take().expect("the trickle was sent");
        let accepted = burst.finish().await + trickle.finish().await;
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
        if let Some(apart) = &mut self.apart {
            let service = apart.service;
            assert_eq!(
                process_state(&mut apart.process),
                "running",
                "{name}: {service}, running apart, stopped"
            );
            let handled = counter(apart.metrics, "corebank_messaging_handled_total", "").await;
            let absorbed = counter(apart.metrics, "corebank_messaging_duplicates_total", "").await;
            eprintln!(
                "{name}: {service}, running apart, handled {handled} messages and absorbed \
                 {absorbed} duplicate deliveries; its proxy: {:?}",
                apart.proxy.stats()
            );
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
pub async fn outcome(owner: &PgPool) -> String {
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
pub async fn unsent(owner: &PgPool) -> i64 {
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
pub fn process_state(corebank: &mut Child) -> String {
    match corebank.try_wait() {
        Ok(None) => "running".to_owned(),
        Ok(Some(status)) => format!("exited: {status}"),
        Err(error) => format!("unknown: {error}"),
    }
}

/// The row's token signing key, removed with the row.
pub struct KeyFile(pub PathBuf);

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Holds a fault that is already in force, then says how long it lasted.
pub async fn hold(name: &str, since: Instant) {
    sleep(FAULT_HELD).await;
    eprintln!(
        "{name}: fault in force for {:.1} s",
        since.elapsed().as_secs_f64()
    );
}
