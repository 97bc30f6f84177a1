//! One direction of one connection: read, apply the current fault, write.
//!
//! Chunks wait in a queue stamped with the instant they may leave, so latency
//! delays traffic without cutting throughput, and a throttle paces it. The
//! pump watches the fault while it waits on either side, so a switch takes
//! effect at once, even in the middle of a delay or a blackholed read.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::fault::{CHUNK, Fault, sample_delay, transmit_time};
use crate::stats::add;

/// Stands in for "never" where an instant is required; a fault this long is
/// indistinguishable from a blackhole in any test.
const FAR_AWAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A chunk read from one side, waiting for the instant it may be written.
struct Chunk {
    due: Instant,
    bytes: Vec<u8>,
}

/// What one direction needs besides its two sockets.
pub(crate) struct Pump<'a> {
    pub(crate) faults: watch::Receiver<Fault>,
    pub(crate) rng: StdRng,
    /// Counts bytes written to the far side.
    pub(crate) forwarded: &'a AtomicU64,
    /// Counts bytes dropped by a blackhole.
    pub(crate) blackholed: &'a AtomicU64,
}

impl Pump<'_> {
    /// Copies `from` into `to` under the current fault until `from` ends and
    /// everything read has been written; then closes `to` for writing.
    ///
    /// Under a blackhole the end of `from` is held back like any data, and
    /// passed on once the blackhole lifts.
    pub(crate) async fn run<R, W>(mut self, mut from: R, mut to: W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut queue: VecDeque<Chunk> = VecDeque::new();
        let mut queued_bytes = 0usize;
        let mut next_free = Instant::now();
        let mut ended = false;
        let mut buf = vec![0u8; CHUNK];

        loop {
            let fault = *self.faults.borrow_and_update();
            let blackholed = fault == Fault::Blackhole;
            if blackholed && !queue.is_empty() {
                add(self.blackholed, queued_bytes);
                queue.clear();
                queued_bytes = 0;
            }
            let stalled = fault == Fault::Stall;
            if ended && queue.is_empty() && !blackholed && !stalled {
                return to.shutdown().await;
            }
            let may_read = !ended && !stalled && queued_bytes < fault.buffer_limit();
            let due = queue.front().map(|chunk| chunk.due);
            let read_size = fault.read_size();

            tokio::select! {
                biased;
                Ok(()) = self.faults.changed() => {
                    let switched_to = *self.faults.borrow();
                    if matches!(switched_to, Fault::Pass | Fault::Refuse) {
                        let now = Instant::now();
                        queue.iter_mut().for_each(|chunk| chunk.due = now);
                        next_free = now;
                    }
                }
                () = sleep_until(due.unwrap_or_else(far_away)), if due.is_some() && !stalled => {
                    if let Some(chunk) = queue.pop_front() {
                        queued_bytes -= chunk.bytes.len();
                        to.write_all(&chunk.bytes).await?;
                        add(self.forwarded, chunk.bytes.len());
                    }
                }
                read = from.read(&mut buf[..read_size]), if may_read => {
                    let read_bytes = read?;
                    if read_bytes == 0 {
                        ended = true;
                        continue;
                    }
                    if blackholed {
                        add(self.blackholed, read_bytes);
                        continue;
                    }
                    let now = Instant::now();
                    let due = match fault {
                        Fault::Latency { base, jitter } => {
                            let delay = sample_delay(base, jitter, &mut self.rng);
                            later(now, delay).max(next_free)
                        }
                        _ => now.max(next_free),
                    };
                    next_free = match fault {
                        Fault::Bandwidth { bytes_per_second } => {
                            later(due, transmit_time(read_bytes, bytes_per_second))
                        }
                        _ => due,
                    };
                    queued_bytes += read_bytes;
                    queue.push_back(Chunk {
                        due,
                        bytes: buf[..read_bytes].to_vec(),
                    });
                }
                // Only reachable once the proxy itself is gone.
                else => return Ok(()),
            }
        }
    }
}

/// `instant + delay`, saturating at a year from `instant` instead of panicking.
fn later(instant: Instant, delay: Duration) -> Instant {
    instant
        .checked_add(delay.min(FAR_AWAY))
        .unwrap_or_else(|| instant + FAR_AWAY)
}

fn far_away() -> Instant {
    later(Instant::now(), FAR_AWAY)
}
