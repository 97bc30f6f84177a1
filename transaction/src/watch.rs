//! Waiting for status changes, whichever replica applies them.
//!
//! Each change is announced with `pg_notify` in the transaction that makes it.
//! One [`StatusHub::listen`] task per process holds the LISTEN connection and
//! fans the transaction ids out over a tokio broadcast; waiters subscribe
//! before they read, and also re-read every [`FALLBACK_POLL`], so a
//! notification lost to a dropped connection or a lagging receiver delays them
//! by at most that, and never hangs them.

use std::time::Duration;

use corebank_platform::ApiError;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::Transaction;
use crate::store::TransactionStore;

/// How often a waiter re-reads without a notification.
pub const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// Notified transaction ids buffered per subscriber before it lags (and
/// then simply re-reads).
const CAPACITY: usize = 1024;

/// The process-wide fan-out of status-change notifications.
#[derive(Debug, Clone)]
pub struct StatusHub {
    sender: broadcast::Sender<Uuid>,
}

impl Default for StatusHub {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusHub {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    /// Interest in one transaction; take it before reading the state it guards.
    pub fn subscribe(&self, transaction_id: Uuid) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
            transaction_id,
        }
    }

    /// Relays notifications until `shutdown`, reconnecting when the LISTEN
    /// connection is lost (waiters poll meanwhile).
    pub async fn listen(self, store: TransactionStore, shutdown: CancellationToken) {
        let mut retry_in = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut listener = match store.status_listener().await {
                Ok(listener) => {
                    tracing::debug!("status listener connected");
                    retry_in = Duration::from_millis(100);
                    listener
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = retry_in.as_millis() as u64, "status listener unavailable, waiters poll");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(retry_in) => {}
                    }
                    retry_in = (retry_in * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            loop {
                let notification = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    notification = listener.recv() => notification,
                };
                match notification {
                    Ok(notification) => match Uuid::parse_str(notification.payload()) {
                        // No receiver is not an error: nobody is waiting.
                        Ok(transaction_id) => drop(self.sender.send(transaction_id)),
                        Err(_) => tracing::warn!(
                            payload = notification.payload(),
                            "status notification without a transaction id"
                        ),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "status listener lost its connection, reconnecting");
                        break;
                    }
                }
            }
        }
        tracing::debug!("status listener stopped");
    }
}

/// A waiter's view of the hub.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Uuid>,
    transaction_id: Uuid,
}

impl Subscription {
    /// Resolves when the transaction may have changed: it was notified,
    /// notifications were dropped, or the fallback poll interval passed.
    pub async fn changed(&mut self) {
        let transaction_id = self.transaction_id;
        let receiver = &mut self.receiver;
        let notified = async move {
            loop {
                match receiver.recv().await {
                    Ok(id) if id == transaction_id => return,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(FALLBACK_POLL) => {}
        }
    }
}

/// Waits up to `wait` for the transaction to become terminal and returns its
/// latest state either way. Holds no database transaction while waiting.
pub async fn wait_for_terminal(
    store: &TransactionStore,
    hub: &StatusHub,
    transaction_id: Uuid,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<Transaction, ApiError> {
    let deadline = Instant::now() + wait;
    let mut subscription = hub.subscribe(transaction_id);
    loop {
        let current = store.get(transaction_id).await?;
        if current.status.is_terminal() || Instant::now() >= deadline {
            return Ok(current);
        }
        tokio::select! {
            _ = subscription.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.cancelled() => return Ok(current),
        }
    }
}

/// The current state, then one item per status change until a terminal one,
/// replayed from the append-only history so a quick succession of changes is
/// not collapsed into its last one. Fails at once if the transaction is unknown.
pub async fn follow(
    store: TransactionStore,
    hub: &StatusHub,
    transaction_id: Uuid,
    shutdown: CancellationToken,
) -> Result<impl Stream<Item = Result<Transaction, ApiError>> + Send + 'static, ApiError> {
    let mut subscription = hub.subscribe(transaction_id);
    let (current, mut cursor) = store.snapshot(transaction_id).await?;
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let terminal = current.status.is_terminal();
        if sender.send(Ok(current)).await.is_err() || terminal {
            return;
        }
        loop {
            tokio::select! {
                _ = subscription.changed() => {}
                _ = sender.closed() => return,
                _ = shutdown.cancelled() => {
                    let _ = sender.send(Err(ApiError::unavailable("server shutting down, watch again"))).await;
                    return;
                }
            }
            let (changes, latest) = match store.changes_after(transaction_id, cursor).await {
                Ok(found) => found,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            for change in changes {
                cursor = change.change_id;
                let snapshot = latest.as_of(change.to_status, change.created_at);
                let terminal = snapshot.status.is_terminal();
                if sender.send(Ok(snapshot)).await.is_err() || terminal {
                    return;
                }
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}
