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
//! anywhere, and [`bind`] hands each service the listener reserved for its
//! address: while a port is bound, no connection gets it as its local port.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a port held by a socket that does not listen is waited for: a
/// little longer than Linux keeps a closed connection in TIME_WAIT (60 s).
pub const PORT_WAIT: Duration = Duration::from_secs(75);

/// Listeners bound by [`reserve`] and not handed out yet, by address.
static RESERVED: LazyLock<Mutex<HashMap<SocketAddr, std::net::TcpListener>>> =
    LazyLock::new(Mutex::default);

/// Binds each address of `addrs` that names a port (port 0 is left to
/// [`bind`], which picks a free one) as [`bind`] would, and keeps the
/// listener until [`bind`] is called with that address. Call it before the
/// process connects anywhere. Fails as [`bind`] does, naming the address.
pub async fn reserve(addrs: impl IntoIterator<Item = SocketAddr>) -> anyhow::Result<()> {
    for addr in addrs {
        if addr.port() == 0 || reserved().contains_key(&addr) {
            continue;
        }
        let listener = bind_waiting(addr, PORT_WAIT).await?.into_std()?;
        reserved().insert(addr, listener);
    }
    Ok(())
}

fn reserved() -> std::sync::MutexGuard<'static, HashMap<SocketAddr, std::net::TcpListener>> {
    RESERVED.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The listener [`reserve`]d for `addr` if there is one; otherwise binds
/// `addr` (port 0 picks a free port), waiting up to [`PORT_WAIT`] while the
/// port is held by a socket that does not listen.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    bind_waiting(addr, PORT_WAIT).await
}

/// [`bind`] with its wait given.
pub async fn bind_waiting(addr: SocketAddr, wait: Duration) -> anyhow::Result<TcpListener> {
    let kept = reserved().remove(&addr);
    if let Some(listener) = kept {
        return Ok(TcpListener::from_std(listener)?);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut warned = false;
    loop {
        let error = match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
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
    async fn a_reserved_port_is_kept_from_connections_and_handed_to_its_service() {
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
        let started = std::time::Instant::now();
        let listener = bind_waiting(addr, Duration::from_secs(30))
            .await
            .expect("the service gets the reserved listener");
        assert!(started.elapsed() < Duration::from_secs(5), "no wait");
        assert_eq!(listener.local_addr().unwrap(), addr);
        let client = TcpStream::connect(addr).await.expect("it accepts");
        let (_accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(!reserved().contains_key(&addr), "handed out once");
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
