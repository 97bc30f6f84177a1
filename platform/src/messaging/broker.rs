//! A reconnecting handle on one RabbitMQ connection.
//!
//! lapin's own auto-recovery is opt-in and replays only part of the state, so we
//! recover explicitly: whoever finds the connection dead asks [`Broker::channel`]
//! for a new channel, which reconnects with capped exponential backoff (one
//! caller reconnects, the others wait for it), re-declares the exchanges and
//! returns. Each relay and consumer then re-declares its own queues and restarts.
//! Messages unacknowledged on the dead connection are redelivered by the broker;
//! the inbox makes that harmless.
//!
//! The URL may be a comma-separated list, one URL per node of a RabbitMQ
//! cluster. Each attempt to connect tries them in turn until one answers, and
//! starts one further along the list than the attempt before, from a random
//! place for each process: the processes of a deployment spread over the
//! nodes, and one that lost its node reconnects to another without waiting on
//! the lost one first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::topology::{Namespace, declare_exchanges};

/// How long opening a connection (with its topology) or a channel may take.
/// A broker that accepts TCP but never answers, or answers one channel and
/// not the next, would otherwise hold every caller waiting for a connection.
/// Seconds between AMQP heartbeats unless configured otherwise: short enough
/// that a partitioned link is replaced within half a minute, long enough
/// that a busy process never misses one.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The error of a broker call that outlived [`BROKER_CALL_TIMEOUT`].
fn timed_out(what: &str) -> lapin::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} got no answer within {BROKER_CALL_TIMEOUT:?}"),
    )
    .into()
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:5672/%2f` (an empty vhost is not `/`), or a
    /// comma-separated list of such URLs, one per node of a cluster.
    pub url: SecretString,
    /// Which URL of the list the first attempt to connect tries first (taken
    /// modulo the list's length); each later attempt starts one further on.
    /// [`BrokerConfig::new`] picks it at random, so processes spread over the
    /// nodes.
    pub first_url: usize,
    /// Prefix of every exchange and queue.
    pub namespace: Namespace,
    /// Shown by `rabbitmqctl list_connections client_properties`, e.g. `account-7f3a`.
    pub connection_name: String,
    /// First reconnect delay.
    pub min_backoff: Duration,
    /// Reconnect delay cap.
    pub max_backoff: Duration,
    /// Seconds between heartbeats, unless the URL sets `heartbeat=`: a link
    /// silent for two of them is taken for dead, by this side and by the
    /// broker, and replaced. 0 takes the broker's (60 s by default).
    pub heartbeat_secs: u16,
}

impl BrokerConfig {
    /// A configuration with reconnect backoff from 100 ms to 10 s.
    pub fn new(
        url: SecretString,
        namespace: Namespace,
        connection_name: impl Into<String>,
    ) -> Self {
        Self {
            url,
            first_url: rand::random_range(0..1024),
            namespace,
            connection_name: connection_name.into(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            heartbeat_secs: DEFAULT_HEARTBEAT_SECS,
        }
    }
}

/// A cheaply cloneable handle on the process's broker connection.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    current: Mutex<Option<Arc<Connection>>>,
    connections: AtomicU64,
    /// Where in the URL list the next attempt to connect starts.
    next_url: AtomicUsize,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("namespace", &self.inner.config.namespace)
            .field("connection_name", &self.inner.config.connection_name)
            .field("connections", &self.connections_opened())
            .finish()
    }
}

impl Broker {
    /// A handle that connects lazily, on first use.
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: Mutex::new(None),
                connections: AtomicU64::new(0),
                next_url: AtomicUsize::new(config.first_url),
                config,
            }),
        }
    }

    /// Connects now and declares the exchanges, failing instead of retrying:
    /// for startup, so a wrong URL stops the process with a clear error.
    pub async fn connect(config: BrokerConfig) -> Result<Self, lapin::Error> {
        let broker = Self::new(config);
        let connection = broker.open().await?;
        *broker.inner.current.lock().await = Some(connection);
        Ok(broker)
    }

    /// The namespace every name is prefixed with.
    pub fn namespace(&self) -> &Namespace {
        &self.inner.config.namespace
    }

    /// The connection name given to the broker.
    pub fn connection_name(&self) -> &str {
        &self.inner.config.connection_name
    }

    /// How many connections were opened so far; more than one means the
    /// handle recovered from a lost connection.
    pub fn connections_opened(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// A live connection, reconnecting with backoff if needed; `None` once
    /// `shutdown` is cancelled.
    pub async fn connection(&self, shutdown: &CancellationToken) -> Option<Arc<Connection>> {
        let mut current = tokio::select! {
            _ = shutdown.cancelled() => return None,
            guard = self.inner.current.lock() => guard,
        };
        if let Some(connection) = current.as_ref()
            && connection.status().connected()
        {
            return Some(connection.clone());
        }
        if current.take().is_some() {
            tracing::warn!(connection_name = %self.inner.config.connection_name, "broker connection lost, reconnecting");
        }

        let mut backoff = self.inner.config.min_backoff;
        loop {
            // With a list, each URL has its own bound inside `open`.
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return None,
                opened = self.open() => opened,
            };
            match opened {
                Ok(connection) => {
                    *current = Some(connection.clone());
                    return Some(connection);
                }
                Err(error) => {
                    metrics::counter!("corebank_messaging_broker_connect_failures_total")
                        .increment(1);
                    let jittered = jitter(backoff);
                    tracing::warn!(%error, retry_in_ms = jittered.as_millis() as u64, "broker connect failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(jittered) => {}
                    }
                    backoff = (backoff * 2).min(self.inner.config.max_backoff);
                }
            }
        }
    }

    /// A new channel on a live connection, reconnecting if needed; `None` once
    /// `shutdown` is cancelled. The caller owns the channel (and its consumers
    /// and confirm mode).
    pub async fn channel(&self, shutdown: &CancellationToken) -> Option<Channel> {
        let mut backoff = self.inner.config.min_backoff;
        loop {
            let connection = self.connection(shutdown).await?;
            let opened = tokio::time::timeout(BROKER_CALL_TIMEOUT, connection.create_channel())
                .await
                .unwrap_or_else(|_| Err(timed_out("opening a channel")));
            match opened {
                Ok(channel) => return Some(channel),
                Err(error) => {
                    // The connection may have died between the check and here; the
                    // next `connection()` call sees it and reconnects.
                    tracing::warn!(%error, "opening a broker channel failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(jitter(backoff)) => {}
                    }
                    backoff = (backoff * 2).min(self.inner.config.max_backoff);
                }
            }
        }
    }

    /// Closes the connection, if any; relays and consumers must be stopped first.
    pub async fn close(&self) {
        let connection = self.inner.current.lock().await.take();
        if let Some(connection) = connection
            && let Err(error) = connection.close(200, "shutdown".into()).await
        {
            tracing::debug!(%error, "closing broker connection failed");
        }
    }

    /// Opens a connection to the first URL of the list that answers,
    /// starting one further along the list than the previous attempt. A
    /// single URL gets [`BROKER_CALL_TIMEOUT`] as before; with a list, so
    /// does each URL, so a node that accepts TCP and never answers delays
    /// the next by that much and no more.
    async fn open(&self) -> Result<Arc<Connection>, lapin::Error> {
        let config = &self.inner.config;
        let list = config.url.expose_secret();
        let urls = url_list(list);
        let start = self.inner.next_url.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for index in attempt_order(urls.len(), start) {
            let url = urls[index];
            let opened = tokio::time::timeout(BROKER_CALL_TIMEOUT, self.open_one(url))
                .await
                .unwrap_or_else(|_| Err(timed_out("opening a connection")));
            match opened {
                Ok(connection) => return Ok(connection),
                Err(error) => {
                    if urls.len() > 1 {
                        tracing::warn!(%error, node = %authority(url), "broker node did not answer, trying the next");
                    }
                    last_error = Some(error);
                }
            }
        }
        // An empty list: lapin says why the text is no URL.
        match last_error {
            Some(error) => Err(error),
            None => self.open_one(list).await,
        }
    }

    async fn open_one(&self, url: &str) -> Result<Arc<Connection>, lapin::Error> {
        let config = &self.inner.config;
        let properties = ConnectionProperties::default()
            .with_connection_name(config.connection_name.clone().into());
        let connection = match url.parse::<AMQPUri>() {
            Ok(mut uri) => {
                if uri.query.heartbeat.is_none() && config.heartbeat_secs > 0 {
                    uri.query.heartbeat = Some(config.heartbeat_secs);
                }
                Connection::connect_uri(uri, properties).await?
            }
            // Unparsable: lapin says why.
            Err(_) => Connection::connect(url, properties).await?,
        };
        let channel = connection.create_channel().await?;
        declare_exchanges(&channel, &config.namespace).await?;
        channel.close(200, "topology declared".into()).await?;
        let opened = self.inner.connections.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::counter!("corebank_messaging_broker_connections_total").increment(1);
        tracing::info!(connection_name = %config.connection_name, namespace = %config.namespace, node = %authority(url), opened, "broker connected");
        Ok(Arc::new(connection))
    }
}

/// The URLs of a comma-separated list, trimmed, empty entries left out.
fn url_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// The indices of a list of `len` URLs in the order one attempt tries them:
/// every one once, from `start` (modulo `len`) on, wrapping around.
fn attempt_order(len: usize, start: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |step| (start + step) % len)
}

/// `host:port` of an AMQP URL, without its credentials, for logs.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}

/// Spreads reconnects of many processes after a broker restart: 50–100 % of `delay`.
fn jitter(delay: Duration) -> Duration {
    let millis = delay.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_url_is_a_list_of_one() {
        let url = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=5";
        assert_eq!(url_list(url), vec![url]);
    }

    #[test]
    fn a_list_is_split_on_commas_trimmed_and_empty_entries_dropped() {
        let list = " amqp://u:p@a:5672/%2f , amqp://u:p@b:5673/%2f,,amqp://u:p@c:5674/%2f, ";
        assert_eq!(
            url_list(list),
            vec![
                "amqp://u:p@a:5672/%2f",
                "amqp://u:p@b:5673/%2f",
                "amqp://u:p@c:5674/%2f"
            ]
        );
        assert!(url_list(" , ").is_empty());
    }

    #[test]
    fn an_attempt_tries_every_url_once_from_its_start_wrapping_around() {
        assert_eq!(attempt_order(3, 0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(attempt_order(3, 4).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(attempt_order(1, 7).collect::<Vec<_>>(), vec![0]);
        assert_eq!(attempt_order(0, 7).count(), 0);
    }

    #[test]
    fn logs_name_a_node_without_its_credentials() {
        assert_eq!(
            authority("amqp://guest:s3cret@10.0.0.7:5673/%2f?heartbeat=5"),
            "10.0.0.7:5673"
        );
        assert_eq!(authority("amqp://rabbit-1"), "rabbit-1");
    }
}
