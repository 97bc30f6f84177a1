//! What the proxy does to traffic, and the arithmetic behind it: a fault is a
//! plain value so tests can switch it at any moment and pumps can read it
//! without locking.

use std::time::Duration;

use rand::Rng;

/// The read size when nothing limits it: large enough for bulk transfers,
/// small enough that a switch of fault takes effect within one chunk.
pub(crate) const CHUNK: usize = 16 * 1024;

/// How much one direction may hold in flight while delaying traffic. Under
/// latency this is the bandwidth-delay product the proxy can sustain.
const DELAY_BUFFER: usize = 1024 * 1024;

/// The behaviour of the proxy, switched with [`FaultProxy::set`](crate::FaultProxy::set).
///
/// A switch reaches connections that are already open as well as new ones,
/// except for [`Fault::Refuse`], which only concerns connections that have
/// not been accepted yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward every byte as soon as it arrives.
    #[default]
    Pass,
    /// Delay each forwarded chunk, in each direction, by `base` plus or minus
    /// a uniformly drawn amount up to `jitter`. Chunks never overtake one
    /// another: a chunk drawn a shorter delay waits for the one before it.
    /// Chunks already delayed when the proxy switches back to [`Fault::Pass`]
    /// are released at once.
    Latency {
        /// The delay every chunk gets.
        base: Duration,
        /// The largest amount added to or taken from `base`, drawn anew per chunk.
        jitter: Duration,
    },
    /// Accept each new connection and reset it at once (`SO_LINGER` of zero),
    /// so a client sees its connection reset before any data comes back.
    /// Connections already open keep working as under [`Fault::Pass`].
    Refuse,
    /// Accept connections and read from both sides, but forward nothing, not
    /// even a close: what a network partition looks like to both peers.
    /// Bytes read while blackholed are dropped, as are bytes still delayed by
    /// an earlier fault; the connections stay open, so after a switch back to
    /// [`Fault::Pass`] a fresh exchange on them works. A connection accepted
    /// while blackholed reaches the upstream only once the blackhole ends.
    Blackhole,
    /// Read nothing and forward nothing, but lose nothing: bytes wait in the
    /// peers' socket buffers and in chunks already read, and flow on once the
    /// proxy switches back to [`Fault::Pass`]. What a partition shorter than
    /// TCP's retransmission timeout looks like: the peers see silence, then
    /// every byte, in order. A connection accepted while stalled reaches the
    /// upstream once the stall ends.
    Stall,
    /// Throttle each direction to `bytes_per_second`, separately. A rate of
    /// zero is taken as one byte per second.
    Bandwidth {
        /// The rate each direction is held to.
        bytes_per_second: u64,
    },
}

impl Fault {
    /// How many bytes one read may take under this fault, so a throttled
    /// direction sends in small steps instead of one large burst.
    pub(crate) fn read_size(self) -> usize {
        match self {
            Fault::Bandwidth { bytes_per_second } => {
                let eighth_of_a_second = usize::try_from(bytes_per_second / 8).unwrap_or(CHUNK);
                eighth_of_a_second.clamp(1, CHUNK)
            }
            _ => CHUNK,
        }
    }

    /// How many bytes one direction may hold before it stops reading, which
    /// is what pushes back on the sender.
    pub(crate) fn buffer_limit(self) -> usize {
        match self {
            Fault::Bandwidth { .. } => self.read_size(),
            _ => DELAY_BUFFER,
        }
    }
}

/// Draws one delay uniformly from `base - jitter ..= base + jitter`, never
/// below zero.
pub(crate) fn sample_delay(base: Duration, jitter: Duration, rng: &mut impl Rng) -> Duration {
    if jitter.is_zero() {
        return base;
    }
    let jitter_nanos = u64::try_from(jitter.as_nanos())
        .unwrap_or(u64::MAX)
        .min(u64::MAX / 2);
    let offset = Duration::from_nanos(rng.random_range(0..=2 * jitter_nanos));
    base.checked_add(offset)
        .unwrap_or(Duration::MAX)
        .saturating_sub(Duration::from_nanos(jitter_nanos))
}

/// How long `bytes` occupy a link of `bytes_per_second`.
pub(crate) fn transmit_time(bytes: usize, bytes_per_second: u64) -> Duration {
    let nanos = (bytes as u128 * 1_000_000_000) / u128::from(bytes_per_second.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn delays_stay_within_base_plus_or_minus_jitter() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(100);
        let jitter = Duration::from_millis(30);
        for _ in 0..10_000 {
            let delay = sample_delay(base, jitter, &mut rng);
            assert!(delay >= Duration::from_millis(70), "{delay:?}");
            assert!(delay <= Duration::from_millis(130), "{delay:?}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_delays() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..100)
                .map(|_| {
                    sample_delay(
                        Duration::from_millis(50),
                        Duration::from_millis(50),
                        &mut rng,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn a_delay_never_goes_below_zero() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1_000 {
            let delay = sample_delay(Duration::from_millis(1), Duration::from_secs(1), &mut rng);
            assert!(delay <= Duration::from_millis(1001));
        }
    }

    #[test]
    fn transmit_time_is_bytes_over_rate() {
        assert_eq!(transmit_time(64 * 1024, 64 * 1024), Duration::from_secs(1));
        assert_eq!(transmit_time(512, 1024), Duration::from_millis(500));
        assert_eq!(transmit_time(1, 0), Duration::from_secs(1));
    }

    #[test]
    fn a_throttled_direction_reads_an_eighth_of_a_second_at_a_time() {
        let throttled = Fault::Bandwidth {
            bytes_per_second: 64 * 1024,
        };
        assert_eq!(throttled.read_size(), 8 * 1024);
        assert_eq!(throttled.buffer_limit(), 8 * 1024);
        let trickle = Fault::Bandwidth {
            bytes_per_second: 0,
        };
        assert_eq!(trickle.read_size(), 1);
        assert_eq!(Fault::Pass.read_size(), CHUNK);
    }
}
