//! RabbitMQ messaging shared by every service: topology, the message envelope,
//! the transactional outbox and its relay, the inbox-guarded consumer, dead-letter
//! queue operations and a reconnecting broker handle.
//!
//! The module is generic infrastructure: payloads are opaque protobuf bytes and a
//! message-type string; what they mean is the services' business.
//!
//! Delivery guarantees, end to end:
//! - a service writes its state change and its outgoing messages in one database
//!   transaction ([`enqueue`]); the [`OutboxRelay`] publishes committed rows with
//!   publisher confirms and marks them sent only once the broker confirmed them, so
//!   nothing is published before it is committed and nothing committed is lost;
//! - a [`QueueConsumer`] records each message id in the `inbox` table in the same
//!   transaction as the handler's effect and acknowledges only after commit, so a
//!   redelivery (at-least-once) never has a second effect;
//! - transient handler failures go through per-queue delay queues with growing
//!   delays; exhausted retries, permanent failures and malformed messages are parked
//!   in `<ns>.<queue>.dlq`, which [`dlq`] can list and replay.

mod batch;
mod broker;
mod consumer;
pub mod dlq;
mod envelope;
mod handler;
mod outbox;
mod relay;
mod topology;
mod wake;

pub use batch::{BATCH_MESSAGE_TYPE, unpack};
pub use broker::{Broker, BrokerConfig, DEFAULT_HEARTBEAT_SECS};
pub use consumer::{ConsumerConfig, QueueConsumer};
pub use envelope::{
    CONTENT_TYPE, IncomingMessage, MalformedMessage, OutgoingMessage, current_traceparent_or,
    headers, traceparent_for,
};
pub use handler::{BatchError, BatchHandler, Handler, HandlerError, message_span, one_by_one};
pub use outbox::{
    MESSAGE_RETENTION, OUTBOX_INBOX_DDL, OutboxRows, enqueue, enqueue_all, notify_channel,
    purge_inbox, purge_sent, spawn_purge,
};
pub use relay::{OutboxRelay, RelayConfig, RunningRelay};
pub use topology::{
    Binding, Exchange, Namespace, QueueSpec, RetryPolicy, declare_exchanges, declare_queue,
    delete_topology,
};
pub use wake::{OutboxKey, handover_key, outbox_key, waking_relay_after};

/// What can go wrong moving messages between PostgreSQL and RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The database refused or lost the connection.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The broker refused or lost the connection or channel.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker negatively acknowledged or returned a message we must not lose.
    #[error("broker did not accept the message: {0}")]
    NotConfirmed(String),
    /// The broker did not confirm in time; the outcome is unknown.
    #[error("timed out waiting for publisher confirms")]
    ConfirmTimeout,
    /// The broker cancelled our consumer (e.g. the queue was deleted).
    #[error("consumer cancelled by the broker")]
    ConsumerCancelled,
    /// A batch or relay round outlived its deadline: a database or broker
    /// link that swallowed a request answers never, and only dropping the
    /// connection (and starting afresh) ends the wait.
    #[error("{0} took longer than {1:?}")]
    Stalled(&'static str, std::time::Duration),
}

/// Runs `work` (`what`, for the error) for at most `limit`; past it the
/// work is dropped, with whatever connection it held, and the caller starts
/// afresh.
pub(crate) async fn within<T>(
    what: &'static str,
    limit: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, MessagingError>>,
) -> Result<T, MessagingError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(MessagingError::Stalled(what, limit)))
}
