//! Counters the proxy keeps so tests can assert what happened on the wire,
//! not only what the client saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of what a [`FaultProxy`](crate::FaultProxy) has done since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections accepted and proxied (refused ones are not counted here).
    pub accepted: u64,
    /// Connections reset on arrival under [`Fault::Refuse`](crate::Fault::Refuse).
    pub refused: u64,
    /// Bytes forwarded from clients to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded from the upstream to clients.
    pub bytes_to_client: u64,
    /// Bytes read and dropped under [`Fault::Blackhole`](crate::Fault::Blackhole),
    /// in both directions, including delayed bytes dropped by the switch.
    pub bytes_blackholed: u64,
    /// Connections torn down by [`FaultProxy::reset_all`](crate::FaultProxy::reset_all).
    pub resets: u64,
}

/// The live counters behind [`Stats`], shared by every task of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) open: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) bytes_to_upstream: AtomicU64,
    pub(crate) bytes_to_client: AtomicU64,
    pub(crate) bytes_blackholed: AtomicU64,
    pub(crate) resets: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            bytes_to_upstream: self.bytes_to_upstream.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
            bytes_blackholed: self.bytes_blackholed.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }
}

/// Adds `amount` to a counter.
pub(crate) fn add(counter: &AtomicU64, amount: usize) {
    counter.fetch_add(amount as u64, Ordering::Relaxed);
}

/// Holds one open connection in the count for as long as its task lives,
/// including when the task is aborted by a shutdown.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    counters: Arc<Counters>,
}

impl OpenConnection {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        Self { counters }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}
