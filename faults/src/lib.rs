//! A TCP fault proxy and private server instances for fault-injection tests.
//!
//! Network faults come from this proxy rather than from `tc netem` or
//! containers, so a test needs neither root nor extra tools: put it in front
//! of PostgreSQL, RabbitMQ or a gRPC port, point the code under test at
//! [`FaultProxy::addr`], and switch the [`Fault`] while the test runs.
//! Latency with jitter, refused connections, a blackhole and a bandwidth limit
//! are modes set with [`FaultProxy::set`]; resetting every open connection is
//! the one-shot [`FaultProxy::reset_all`]. A switch reaches connections that
//! are already open, including ones waiting in a delay or a blackholed read.
//!
//! ```no_run
//! # async fn demo(postgres: std::net::SocketAddr) -> std::io::Result<()> {
//! use std::time::Duration;
//!
//! use corebank_faults::{Fault, FaultProxy};
//!
//! let proxy = FaultProxy::start(postgres).await?;
//! // connect the code under test to proxy.addr() ...
//! proxy.set(Fault::Latency {
//!     base: Duration::from_millis(50),
//!     jitter: Duration::from_millis(10),
//! });
//! proxy.set(Fault::Blackhole);
//! proxy.set(Fault::Pass);
//! proxy.reset_all();
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A test that stops, kills or restarts a server rather than cutting the
//! network in front of it starts a private one of its own: [`PrivatePostgres`]
//! or [`PrivateRabbit`] (or a [`PrivateRabbitCluster`] of them), removed with
//! everything they wrote when dropped. The
//! servers every other test shares are never touched.

mod connection;
mod fault;
mod instances;
mod pump;
mod stats;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::connection::Rngs;
use crate::stats::{Counters, OpenConnection};

pub use crate::fault::Fault;
pub use crate::instances::{
    PrivatePostgres, PrivateRabbit, PrivateRabbitCluster, QueueMembers, StopMode,
};
pub use crate::stats::Stats;

/// The pause after a failed accept, so a lasting failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What the accept loop and every connection task share.
pub(crate) struct Shared {
    upstream: SocketAddr,
    faults: watch::Sender<Fault>,
    resets: watch::Sender<u64>,
    counters: Arc<Counters>,
}

/// A running proxy on `127.0.0.1`, forwarding every accepted connection to
/// one upstream address under the current [`Fault`].
///
/// Dropping it stops the listener and closes every proxied connection; so
/// does [`FaultProxy::shutdown`], which also waits until they are closed.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and starts forwarding to `upstream`, passing
    /// traffic untouched until told otherwise. Jitter is drawn from a random
    /// seed; use [`FaultProxy::start_seeded`] to repeat a run exactly.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        Self::start_seeded(upstream, rand::random()).await
    }

    /// Like [`FaultProxy::start`], with jitter drawn from `seed`: the n-th
    /// connection gets the same delays in every run with the same seed.
    pub async fn start_seeded(upstream: SocketAddr, seed: u64) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: watch::Sender::new(Fault::Pass),
            resets: watch::Sender::new(0),
            counters: Arc::default(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            StdRng::seed_from_u64(seed),
            shutdown_rx,
        ));
        debug!(%addr, %upstream, seed, "fault proxy started");
        Ok(FaultProxy {
            addr,
            shared,
            shutdown,
            accept_loop: Some(accept_loop),
        })
    }

    /// The address clients should connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Switches the behaviour of the proxy, for open and new connections alike.
    pub fn set(&self, fault: Fault) {
        debug!(?fault, "fault switched");
        self.shared.faults.send_replace(fault);
    }

    /// The behaviour currently in force.
    pub fn fault(&self) -> Fault {
        *self.shared.faults.borrow()
    }

    /// Resets every open connection at once: both the client and the upstream
    /// see a connection reset, even mid-delay or mid-blackhole. The current
    /// [`Fault`] is left as it is, so new connections behave as before.
    ///
    /// Returns before the resets are done; [`Stats::resets`] counts them.
    pub fn reset_all(&self) {
        debug!("resetting every connection");
        self.shared
            .resets
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// How many proxied connections are open right now.
    pub fn connections(&self) -> usize {
        self.shared.counters.open.load(Ordering::Relaxed)
    }

    /// What the proxy has done since it started.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Stops the listener, closes every proxied connection and waits until
    /// all of them are gone.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(accept_loop) = self.accept_loop.take()
            && let Err(error) = accept_loop.await
            && error.is_panic()
        {
            warn!(%error, "fault proxy accept loop panicked");
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        // Aborting the accept loop drops its `JoinSet`, which aborts every
        // connection task and so closes their sockets.
        if let Some(accept_loop) = self.accept_loop.take() {
            accept_loop.abort();
        }
    }
}

/// Accepts clients until shut down, then closes every connection it started.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut seeds: StdRng,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // A dropped sender means the proxy is gone: stop as well.
            () = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    // Drawn for every client, refused or not, so the n-th
                    // connection's delays depend only on the seed.
                    let rngs = Rngs {
                        to_upstream: StdRng::seed_from_u64(seeds.next_u64()),
                        to_client: StdRng::seed_from_u64(seeds.next_u64()),
                    };
                    if *shared.faults.borrow() == Fault::Refuse {
                        refuse(&client, &shared);
                        debug!(%peer, "connection refused");
                        continue;
                    }
                    if let Err(error) = client.set_nodelay(true) {
                        debug!(%peer, %error, "could not disable nagle");
                    }
                    let open = OpenConnection::new(Arc::clone(&shared.counters));
                    let resets = shared.resets.subscribe();
                    debug!(%peer, "connection accepted");
                    connections.spawn(connection::serve(
                        client,
                        Arc::clone(&shared),
                        resets,
                        rngs,
                        open,
                    ));
                }
                // Running out of descriptors and the like pass; keep serving,
                // without spinning while they last.
                Err(error) => {
                    warn!(%error, "fault proxy accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
    debug!("fault proxy stopped");
}

/// Resolves once the proxy asks to stop, or is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The borrowed value is not `Send`: drop it before the accept loop awaits.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resets a client the moment it arrives.
fn refuse(client: &TcpStream, shared: &Shared) {
    if let Err(error) = client.set_zero_linger() {
        debug!(%error, "could not arm a reset");
    }
    shared.counters.refused.fetch_add(1, Ordering::Relaxed);
}
