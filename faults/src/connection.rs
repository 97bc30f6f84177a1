//! One proxied connection: reach the upstream, run both pumps, and tear the
//! pair down with a reset when asked to or when either side fails.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::rngs::StdRng;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use crate::Shared;
use crate::fault::{CHUNK, Fault};
use crate::pump::Pump;
use crate::stats::{OpenConnection, add};

/// How a connection came to an end.
enum Ending {
    /// Both directions closed cleanly, or the client left while blackholed.
    Closed,
    /// [`FaultProxy::reset_all`](crate::FaultProxy::reset_all) asked for it.
    Reset,
    /// A socket failed; the other side is reset so it learns of it.
    Failed(io::Error),
}

/// The random sources of the two directions, drawn per connection so a
/// seeded proxy gives every connection the same delays run after run.
pub(crate) struct Rngs {
    pub(crate) to_upstream: StdRng,
    pub(crate) to_client: StdRng,
}

/// Serves one accepted client until it ends, is reset, or the task is aborted
/// by a shutdown (which drops, and so closes, both sockets).
pub(crate) async fn serve(
    mut client: TcpStream,
    shared: Arc<Shared>,
    mut resets: watch::Receiver<u64>,
    rngs: Rngs,
    open: OpenConnection,
) {
    let _open = open;
    let mut upstream: Option<TcpStream> = None;
    let ending = tokio::select! {
        biased;
        Ok(()) = resets.changed() => Ending::Reset,
        relayed = relay(&mut client, &mut upstream, &shared, rngs) => match relayed {
            Ok(()) => Ending::Closed,
            Err(error) => Ending::Failed(error),
        },
    };
    match ending {
        Ending::Closed => debug!("proxied connection closed"),
        Ending::Reset => {
            abort(&client, upstream.as_ref());
            shared.counters.resets.fetch_add(1, Ordering::Relaxed);
            debug!("proxied connection reset");
        }
        Ending::Failed(error) => {
            abort(&client, upstream.as_ref());
            debug!(%error, "proxied connection failed");
        }
    }
}

/// Connects to the upstream once no blackhole is in the way, then copies
/// both directions until both have ended.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut Option<TcpStream>,
    shared: &Shared,
    rngs: Rngs,
) -> io::Result<()> {
    let mut faults = shared.faults.subscribe();
    if !hold_while_blackholed(client, &mut faults, shared).await? {
        return Ok(());
    }
    let upstream = upstream.insert(TcpStream::connect(shared.upstream).await?);
    upstream.set_nodelay(true)?;

    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let to_upstream = Pump {
        faults: faults.clone(),
        rng: rngs.to_upstream,
        forwarded: &shared.counters.bytes_to_upstream,
        blackholed: &shared.counters.bytes_blackholed,
    };
    let to_client = Pump {
        faults,
        rng: rngs.to_client,
        forwarded: &shared.counters.bytes_to_client,
        blackholed: &shared.counters.bytes_blackholed,
    };
    tokio::try_join!(
        to_upstream.run(client_read, upstream_write),
        to_client.run(upstream_read, client_write),
    )?;
    Ok(())
}

/// Reads and drops what the client sends for as long as the proxy is
/// blackholed, and reads nothing while it is stalled, so the upstream never
/// sees a connection during a partition. Returns whether the client is still
/// there (and the proxy too).
async fn hold_while_blackholed(
    client: &mut TcpStream,
    faults: &mut watch::Receiver<Fault>,
    shared: &Shared,
) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let fault = *faults.borrow_and_update();
        match fault {
            Fault::Blackhole => tokio::select! {
                biased;
                Ok(()) = faults.changed() => {}
                read = client.read(&mut buf) => match read? {
                    0 => return Ok(false),
                    read_bytes => add(&shared.counters.bytes_blackholed, read_bytes),
                },
            },
            Fault::Stall => {
                if faults.changed().await.is_err() {
                    return Ok(false);
                }
            }
            _ => return Ok(true),
        }
    }
}

/// Makes both sockets send a reset instead of a clean close when dropped.
fn abort(client: &TcpStream, upstream: Option<&TcpStream>) {
    for stream in std::iter::once(client).chain(upstream) {
        if let Err(error) = stream.set_zero_linger() {
            debug!(%error, "could not arm a reset");
        }
    }
}
