//! Failpoints: named hooks at the spots where a crash is most dangerous for
//! exactly-once delivery, so that a test can kill a process precisely there.
//!
//! They are compiled in only with the `failpoints` cargo feature, which only
//! the test build enables; without it [`hit`] is empty and every hook
//! vanishes. With it, a process started with
//! `COREBANK_FAILPOINT=<point>:<where>:<n>` (say
//! `consumer.before_ack:account.commands:3`) kills itself with SIGKILL at the
//! `n`th time it passes `<point>` in `<where>` (a schema for the relay, a
//! queue for a consumer) once it has received SIGUSR1. The signal arms it,
//! so that the test's own setup (customers, accounts, funding) runs first.
//!
//! The same build reads `COREBANK_CLOCK_SKEW_MS` (signed): the process's
//! wall clock runs that far ahead of the machine's, so a test can run
//! replicas whose clocks disagree.

use std::fmt;

/// A dangerous spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The relay claimed committed outbox rows and has not published them.
    RelayBeforePublish,
    /// The broker confirmed the relay's publishes; the rows are not yet
    /// marked sent, so a restart publishes them again.
    RelayBeforeMarkSent,
    /// A consumer committed a batch's effects and has not acknowledged its
    /// deliveries, so the broker delivers them again.
    ConsumerBeforeAck,
}

impl Point {
    /// The name a failpoint specification uses.
    pub const fn name(self) -> &'static str {
        match self {
            Point::RelayBeforePublish => "relay.before_publish",
            Point::RelayBeforeMarkSent => "relay.before_mark_sent",
            Point::ConsumerBeforeAck => "consumer.before_ack",
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The process passes `point` in `place` (a schema or a queue name).
#[inline(always)]
pub fn hit(point: Point, place: &str) {
    #[cfg(feature = "failpoints")]
    armed::hit(point, place);
    #[cfg(not(feature = "failpoints"))]
    let _ = (point, place);
}

/// Starts listening for the SIGUSR1 that arms the failpoint named in
/// `COREBANK_FAILPOINT`, if any. Without the `failpoints` feature, nothing.
pub fn listen() {
    #[cfg(feature = "failpoints")]
    armed::listen();
}

/// How far the process's clock runs ahead of the machine's (behind, when
/// negative): `COREBANK_CLOCK_SKEW_MS` in a test build, none otherwise.
pub fn clock_skew() -> Option<chrono::Duration> {
    #[cfg(feature = "failpoints")]
    {
        let value = std::env::var("COREBANK_CLOCK_SKEW_MS").ok()?;
        let millis: i64 = value
            .parse()
            .unwrap_or_else(|_| panic!("COREBANK_CLOCK_SKEW_MS={value:?}: expected milliseconds"));
        Some(chrono::Duration::milliseconds(millis))
    }
    #[cfg(not(feature = "failpoints"))]
    None
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::Point;

    /// The environment variable naming the failpoint.
    const VARIABLE: &str = "COREBANK_FAILPOINT";

    struct Spec {
        point: String,
        place: String,
        nth: u64,
    }

    static SPEC: LazyLock<Option<Spec>> = LazyLock::new(|| {
        let value = std::env::var(VARIABLE).ok()?;
        let mut parts = value.splitn(3, ':');
        let (Some(point), Some(place), Some(Ok(nth @ 1..))) = (
            parts.next(),
            parts.next(),
            parts.next().map(str::parse::<u64>),
        ) else {
            panic!("{VARIABLE}={value:?}: expected <point>:<where>:<n>, n ≥ 1");
        };
        Some(Spec {
            point: point.to_owned(),
            place: place.to_owned(),
            nth,
        })
    });
    static ARMED: AtomicBool = AtomicBool::new(false);
    static PASSES: AtomicU64 = AtomicU64::new(0);

    pub fn listen() {
        if SPEC.is_none() {
            return;
        }
        use tokio::signal::unix::{SignalKind, signal};
        let mut armer = signal(SignalKind::user_defined1()).expect("listen for SIGUSR1");
        tokio::spawn(async move {
            armer.recv().await;
            ARMED.store(true, Ordering::SeqCst);
            eprintln!("failpoint armed");
        });
    }

    pub fn hit(point: Point, place: &str) {
        let Some(spec) = SPEC.as_ref() else { return };
        if !ARMED.load(Ordering::SeqCst) || spec.point != point.name() || spec.place != place {
            return;
        }
        if PASSES.fetch_add(1, Ordering::SeqCst) + 1 == spec.nth {
            eprintln!("failpoint {point} in {place}: killing the process");
            // SIGKILL, as an operator's `kill -9` or the OOM killer would:
            // nothing is flushed, closed or acknowledged on the way out.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
    }
}
