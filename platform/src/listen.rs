//! Binding a service's listen address.
//!
//! On Linux a fixed port inside the ephemeral range (32768–60999, which
//! holds the default 50051–50057) can be taken for a while by a socket that
//! does not listen: an outgoing connection that happened to get it as its
//! local port, or one closed in the last minute (TIME_WAIT). Such a port
//! frees itself, so the bind waits for it; a port another server listens
//! on does not, so that fails at once, naming the address.
//!
//! A process that runs several services opens connections (to PostgreSQL,
//! RabbitMQ, its peers) before the later ones bind, and a connection that
//! lives as long as its pool can take a later service's port for good. So
//! a runner [`reserve`]s every fixed port first, before it connects
//! anywhere: a socket bound to the address, not listening (a client
//! connecting meanwhile is refused, as by a port nobody serves, rather than
//! left waiting on a server that is still starting), and [`bind`] has that
//! socket listen when its service starts. While a port is bound, no
//! connection gets it as its local port.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long a port held by a socket that does not listen is waited for: a
/// little longer than Linux keeps a closed connection in TIME_WAIT (60 s).
pub const PORT_WAIT: Duration = Duration::from_secs(75);

/// Sockets bound by [`reserve`], not listening yet, by address.
static RESERVED: LazyLock<Mutex<HashMap<SocketAddr, TcpSocket>>> = LazyLock::new(Mutex::default);

/// How many connections a listener queues before it accepts them (what
/// `TcpListener::bind` sets).
const BACKLOG: u32 = 1024;

/// Binds a socket to each address of `addrs` that names a port (port 0 is
/// left to [`bind`], which picks a free one), without listening, and keeps
/// it until [`bind`] is called with that address. Call it before the
/// process connects anywhere. A port held by a socket that does not listen
/// is waited for as [`bind`] waits; one another server listens on fails at
/// once, naming the address.
pub async fn reserve(addrs: impl IntoIterator<Item = SocketAddr>) -> anyhow::Result<()> {
    for addr in addrs {
        if addr.port() == 0 || reserved().contains_key(&addr) {
            continue;
        }
        let socket = waiting_for(addr, PORT_WAIT, bound_socket).await?;
        reserved().insert(addr, socket);
    }
    Ok(())
}

fn reserved() -> std::sync::MutexGuard<'static, HashMap<SocketAddr, TcpSocket>> {
    RESERVED.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A socket bound to `addr` as a listener is (`SO_REUSEADDR`, so that the
/// connections a server left in TIME_WAIT do not hold its port), not
/// listening.
fn bound_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// The socket [`reserve`]d for `addr`, listening, if there is one;
/// otherwise binds `addr` (port 0 picks a free port), waiting up to
/// [`PORT_WAIT`] while the port is held by a socket that does not listen.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    bind_waiting(addr, PORT_WAIT).await
}

/// [`bind`] with its wait given.
pub async fn bind_waiting(addr: SocketAddr, wait: Duration) -> anyhow::Result<TcpListener> {
    let kept = reserved().remove(&addr);
    match kept {
        // Another socket bound with `SO_REUSEADDR` (another corebank's
        // reservation) may have started listening first.
        Some(socket) => socket.listen(BACKLOG).map_err(|error| match error.kind() {
            ErrorKind::AddrInUse => {
                anyhow::anyhow!("cannot listen on {addr}: another process listens there ({error})")
            }
            _ => anyhow::anyhow!("cannot listen on {addr}: {error}"),
        }),
        None => waiting_for(addr, wait, |addr| bound_socket(addr)?.listen(BACKLOG)).await,
    }
}

/// `bind` of `addr`, retried while the port is held by a socket that does
/// not listen, for up to `wait`.
async fn waiting_for<T>(
    addr: SocketAddr,
    wait: Duration,
    bind: impl Fn(SocketAddr) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut warned = false;
    loop {
        let error = match bind(addr) {
            Ok(bound) => return Ok(bound),
            Err(error) if error.kind() == ErrorKind::AddrInUse => error,
            Err(error) => anyhow::bail!("cannot listen on {addr}: {error}"),
        };
        if listening(addr).await {
            anyhow::bail!("cannot listen on {addr}: another process listens there ({error})");
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "cannot listen on {addr}: a connection has held the port for {} s ({error}); \
                 choose another port",
                wait.as_secs()
            );
        }
        if !warned {
            tracing::warn!(%addr, "port held by a connection, not a server: waiting for it to close");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether a server accepts connections on `addr`'s port.
async fn listening(addr: SocketAddr) -> bool {
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(probe)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpSocket;

    use super::*;

    /// A socket bound to a free loopback port that does not listen, as an
    /// outgoing connection's local port is.
    fn holder() -> (TcpSocket, SocketAddr) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let addr = socket.local_addr().unwrap();
        (socket, addr)
    }

    #[tokio::test]
    async fn a_port_held_by_a_socket_that_does_not_listen_is_bound_once_it_is_released() {
        let (socket, addr) = holder();
        let bound = tokio::spawn(bind_waiting(addr, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            !bound.is_finished(),
            "the bind waits while the port is held"
        );
        drop(socket);
        let listener = bound.await.unwrap().expect("bound once released");
        assert_eq!(listener.local_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn a_port_another_server_listens_on_fails_at_once_naming_the_address() {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = server.local_addr().unwrap();
        let started = std::time::Instant::now();
        let error = bind_waiting(addr, Duration::from_secs(30))
            .await
            .expect_err("the port is taken");
        assert!(started.elapsed() < Duration::from_secs(10), "no wait");
        let text = error.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("another process listens there"), "{text}");
    }

    #[tokio::test]
    async fn a_reserved_port_is_kept_from_connections_and_listens_when_its_service_binds() {
        let (socket, addr) = holder();
        drop(socket);
        reserve([addr]).await.expect("a free port is reserved");
        reserve([addr])
            .await
            .expect("reserving it again changes nothing");
        // What an outgoing connection's local port would need: the port
        // free. It is not, from the reservation on.
        let connection = TcpSocket::new_v4().unwrap();
        let taken = connection
            .bind(addr)
            .expect_err("the reservation holds the port");
        assert_eq!(taken.kind(), ErrorKind::AddrInUse);
        // Nobody serves it yet: a client is refused, not left waiting.
        let refused = TcpStream::connect(addr)
            .await
            .expect_err("not listening yet");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        let started = std::time::Instant::now();
        let listener = bind_waiting(addr, Duration::from_secs(30))
            .await
            .expect("the service gets the reserved socket");
        assert!(started.elapsed() < Duration::from_secs(5), "no wait");
        assert_eq!(listener.local_addr().unwrap(), addr);
        let client = TcpStream::connect(addr).await.expect("it accepts");
        let (_accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(!reserved().contains_key(&addr), "handed out once");
    }

    #[tokio::test]
    async fn a_reserved_port_another_process_started_listening_on_first_fails_naming_the_address() {
        let (socket, addr) = holder();
        drop(socket);
        reserve([addr]).await.expect("a free port is reserved");
        // Another process's reservation, bound the same way, listening first.
        let other = bound_socket(addr).expect("bound beside it, as SO_REUSEADDR allows");
        let _other = other.listen(BACKLOG).expect("the other listens");
        let error = bind_waiting(addr, Duration::from_secs(30))
            .await
            .expect_err("the port is served by the other");
        let text = error.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("another process listens there"), "{text}");
    }

    #[tokio::test]
    async fn reserving_a_port_another_server_listens_on_fails_naming_the_address() {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = server.local_addr().unwrap();
        let error = reserve([addr]).await.expect_err("the port is taken");
        let text = error.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(!reserved().contains_key(&addr));
    }

    #[tokio::test]
    async fn a_port_held_past_the_wait_fails_naming_the_address() {
        let (_socket, addr) = holder();
        let error = bind_waiting(addr, Duration::from_millis(300))
            .await
            .expect_err("still held");
        let text = error.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("held the port"), "{text}");
    }
}
