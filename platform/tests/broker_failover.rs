//! A broker URL list (`--amqp-url a,b,c`) against the machine's RabbitMQ:
//! a node that is down is passed over, every node of the list down is an
//! error, and a connection lost is replaced through the next node of the
//! list. The "nodes" are the shared broker behind small TCP forwarders of the
//! test's own, and a port nothing listens on.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corebank_platform::messaging::{Broker, BrokerConfig, Exchange, Namespace};
use lapin::options::ExchangeDeleteOptions;
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

fn shared_url() -> String {
    corebank_platform::config::amqp_url_from_env()
}

/// `url` with its host and port replaced by `addr`.
fn url_at(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (credentials, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
    let path = rest.split_once('/').map_or("", |(_, path)| path);
    let at = if credentials.is_empty() { "" } else { "@" };
    format!("{scheme}://{credentials}{at}{addr}/{path}")
}

/// The shared broker's address, from its URL.
async fn shared_addr() -> SocketAddr {
    let url = shared_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    tokio::net::lookup_host(authority)
        .await
        .expect("the broker's address resolves")
        .next()
        .expect("an address")
}

/// A port on loopback that nothing listens on: bound, then released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
    listener.local_addr().expect("its address")
}

/// Forwards every connection to `upstream`, counting them; [`Forwarder::cut`]
/// drops the open ones, as a node that dies would.
struct Forwarder {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    cut: CancellationToken,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(upstream: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a forwarder");
        let addr = listener.local_addr().expect("its address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let cut = CancellationToken::new();
        let accept_loop = tokio::spawn({
            let accepted = Arc::clone(&accepted);
            let cut = cut.clone();
            async move {
                let mut links = JoinSet::new();
                loop {
                    tokio::select! {
                        _ = cut.cancelled() => break,
                        Ok((mut client, _)) = listener.accept() => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            links.spawn(async move {
                                if let Ok(mut server) = TcpStream::connect(upstream).await {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                                }
                            });
                        }
                    }
                }
                // Dropping the set aborts every link: both ends see it closed.
                links.shutdown().await;
            }
        });
        Forwarder {
            addr,
            accepted,
            cut,
            accept_loop,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every forwarded connection and stops accepting new ones.
    async fn cut(self) {
        self.cut.cancel();
        self.accept_loop.await.expect("the forwarder stopped");
    }
}

/// A broker configuration for `list`, trying its `first` URL first, under a
/// namespace of its own.
fn config(list: String, first: usize) -> BrokerConfig {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let namespace = Namespace::new(format!("tfo{}", &suffix[..12]));
    BrokerConfig {
        first_url: first,
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..BrokerConfig::new(
            SecretString::from(list),
            namespace.clone(),
            format!("corebank-test-{namespace}"),
        )
    }
}

/// Removes the exchanges a connection declared under `namespace`.
async fn remove_exchanges(namespace: &Namespace) {
    let tools = lapin::Connection::connect(&shared_url(), lapin::ConnectionProperties::default())
        .await
        .expect("rabbitmq reachable");
    let channel = tools.create_channel().await.expect("a channel");
    for exchange in Exchange::ALL {
        channel
            .exchange_delete(
                namespace.exchange(exchange).into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .expect("delete an exchange");
    }
    tools.close(200, "done".into()).await.ok();
}

#[tokio::test]
async fn a_list_whose_first_node_is_down_connects_through_the_next() {
    let down = url_at(&shared_url(), closed_port());
    let config = config(format!("{down}, {}", shared_url()), 0);
    let namespace = config.namespace.clone();

    let broker = timeout(WAIT, Broker::connect(config))
        .await
        .expect("connecting hung")
        .expect("connected through the second URL");

    assert_eq!(broker.connections_opened(), 1);
    let channel = broker
        .channel(&CancellationToken::new())
        .await
        .expect("a channel");
    assert!(channel.status().connected());
    broker.close().await;
    remove_exchanges(&namespace).await;
}

#[tokio::test]
async fn a_list_with_every_node_down_fails_to_connect() {
    let list = format!(
        "{},{}",
        url_at(&shared_url(), closed_port()),
        url_at(&shared_url(), closed_port())
    );

    let connected = timeout(WAIT, Broker::connect(config(list, 0)))
        .await
        .expect("connecting hung");

    assert!(connected.is_err(), "connected with every node down");
}

#[tokio::test]
async fn a_lost_connection_is_replaced_through_the_next_node_of_the_list() {
    let upstream = shared_addr().await;
    let first = Forwarder::start(upstream).await;
    let second = Forwarder::start(upstream).await;
    let list = format!(
        "{},{}",
        url_at(&shared_url(), first.addr),
        url_at(&shared_url(), second.addr)
    );
    let config = config(list, 0);
    let namespace = config.namespace.clone();
    let broker = timeout(WAIT, Broker::connect(config))
        .await
        .expect("connecting hung")
        .expect("connected");
    assert_eq!((first.accepted(), second.accepted()), (1, 0));

    // The first node goes away with the connection to it.
    first.cut().await;
    let shutdown = CancellationToken::new();
    // A loaded machine may see the close late: then the heartbeat (10 s,
    // two missed) is what notices it, well within the bound.
    let bound = 3 * WAIT;
    let deadline = Instant::now() + bound;
    while broker.connections_opened() < 2 {
        assert!(
            Instant::now() < deadline,
            "no new connection within {bound:?}"
        );
        // Asking for a channel is what notices the loss and reconnects.
        let _ = timeout(Duration::from_secs(2), broker.channel(&shutdown)).await;
        sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        second.accepted(),
        1,
        "the reconnect went to the second node"
    );
    let channel = timeout(WAIT, broker.channel(&shutdown))
        .await
        .expect("a channel in time")
        .expect("a channel");
    assert!(channel.status().connected());
    broker.close().await;
    second.cut().await;
    remove_exchanges(&namespace).await;
}
