//! The system under chaos, and the faults the scheduler injects into it.

use std::time::Duration;

use corebank_faults::{Fault, FaultProxy, PrivateRabbit};
use corebank_tests::harness::TestDb;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use tokio::process::Child;
use tokio::time::{Instant, sleep, timeout};

use crate::common::{Launch, terminate_backends};

/// How long after the last heal every transaction must have ended; also how
/// long a stopped corebank may take to end.
pub const BOUND: Duration = Duration::from_secs(180);
/// How long a failpoint may take to be reached once armed.
pub const FAILPOINT_BOUND: Duration = Duration::from_secs(30);
pub const FAILPOINTS: [&str; 3] = [
    "relay.before_publish:orchestrator:2",
    "consumer.before_ack:account.commands:2",
    "relay.before_mark_sent:transaction:2",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    BrokerLatency,
    BrokerBlackhole,
    BrokerReset,
    BrokerKilled,
    BrokerStopped,
    DatabaseLatency,
    DatabaseStall,
    DatabaseReset,
    BackendsTerminated,
    Killed,
    Terminated,
    Failpoint,
}

pub const KINDS: [Kind; 12] = [
    Kind::BrokerLatency,
    Kind::BrokerBlackhole,
    Kind::BrokerReset,
    Kind::BrokerKilled,
    Kind::BrokerStopped,
    Kind::DatabaseLatency,
    Kind::DatabaseStall,
    Kind::DatabaseReset,
    Kind::BackendsTerminated,
    Kind::Killed,
    Kind::Terminated,
    Kind::Failpoint,
];

/// How corebank is started: its database and its private broker (each
/// through a fault proxy), namespace, ports, signing key and metrics address.
pub struct Wiring {
    pub db: TestDb,
    pub rabbit: PrivateRabbit,
    pub namespace: String,
    pub database_url: String,
    pub broker_url: String,
    pub ports: corebank_platform::service::Peers,
    pub key_path: std::path::PathBuf,
    pub metrics: std::net::SocketAddr,
    pub broker_proxy: FaultProxy,
    pub database_proxy: FaultProxy,
}

impl Wiring {
    /// Starts `corebank up` with `env` besides the usual environment. Its
    /// log says only errors: the soak's own lines are the report, and every
    /// fault it injects makes the services warn.
    pub fn spawn(&self, env: &[(&str, &str)]) -> Child {
        let env: Vec<(&str, &str)> = [("RUST_LOG", "error")]
            .into_iter()
            .chain(env.iter().copied())
            .collect();
        Launch {
            database_url: &self.database_url,
            broker_url: &self.broker_url,
            namespace: &self.namespace,
            ports: &self.ports,
            key: &self.key_path,
            env: &env,
            metrics: self.metrics,
        }
        .spawn(&["up"])
    }
}

/// A whole corebank running, and how to start it again.
pub struct System {
    pub wiring: Wiring,
    pub corebank: Child,
}

impl System {
    pub fn spawn(&self, env: &[(&str, &str)]) -> Child {
        self.wiring.spawn(env)
    }

    pub fn signal(&self, signal: &str) {
        crate::common::signal(&self.corebank, signal);
    }

    /// Waits up to `bound` for corebank to end; how it ended, if it did.
    pub async fn ended(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        timeout(bound, self.corebank.wait())
            .await
            .ok()
            .map(|status| status.expect("wait for corebank"))
    }

    /// Injects `kind`, holds it for `hold` when it lasts, and heals it.
    /// Returns what happened, for the log.
    pub async fn inject(&mut self, kind: Kind, hold: Duration, rng: &mut StdRng) -> String {
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
            Kind::BrokerKilled | Kind::BrokerStopped => {
                let rabbit = &mut self.wiring.rabbit;
                if kind == Kind::BrokerKilled {
                    rabbit.kill().await.expect("kill rabbitmq");
                } else {
                    rabbit.stop_gracefully().await.expect("stop rabbitmq");
                }
                sleep(hold).await;
                rabbit.start_again().await.expect("start rabbitmq again");
                format!("down {hold:?}, started again")
            }
            Kind::DatabaseLatency => {
                let latency = Fault::Latency {
                    base: Duration::from_millis(20),
                    jitter: Duration::from_millis(10),
                };
                held(&self.wiring.database_proxy, latency, hold).await;
                format!("held {hold:?}")
            }
            Kind::DatabaseStall => {
                held(&self.wiring.database_proxy, Fault::Stall, hold).await;
                format!("held {hold:?}")
            }
            Kind::DatabaseReset => {
                self.wiring.database_proxy.reset_all();
                "every link reset".to_owned()
            }
            Kind::BackendsTerminated => {
                let terminated = terminate_backends(&self.wiring.db.owner).await;
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
                crate::common::connect(crate::common::port(&self.wiring.ports, "transaction"))
                    .await;
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
pub async fn held(proxy: &FaultProxy, fault: Fault, hold: Duration) {
    proxy.set(fault);
    sleep(hold).await;
    proxy.set(Fault::Pass);
}
