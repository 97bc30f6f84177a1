//! Waiting for status changes, whichever replica applies them.
//!
//! Each change is announced with `pg_notify` in the transaction that makes it.
//! One [`StatusHub::listen`] task per process holds the LISTEN connection and
//! fans the transaction ids out over a tokio broadcast; waiters subscribe
//! before they read. When the connection is lost, and again once it is back,
//! the hub tells every waiter to re-read (a notification sent meanwhile is
//! lost), and while it is down waiters re-read every [`FALLBACK_POLL`]. A
//! lagging receiver re-reads at once. With the listener up, a waiter re-reads
//! only every [`SAFETY_POLL`], so a waiting client costs a read per change,
//! not one per half second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use corebank_platform::ApiError;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{Transaction, TransactionStatus};
use crate::store::TransactionStore;

/// How often a waiter re-reads while the hub has no LISTEN connection.
pub const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// How often a waiter re-reads while the hub listens: a safety net only.
pub const SAFETY_POLL: Duration = Duration::from_secs(5);

/// Notified transaction ids buffered per subscriber before it lags (and
/// then simply re-reads).
const CAPACITY: usize = 1024;

/// The process-wide fan-out of status-change notifications.
#[derive(Debug, Clone)]
pub struct StatusHub {
    sender: broadcast::Sender<Notice>,
    /// Whether the LISTEN connection is up (notifications can be relied on).
    listening: Arc<AtomicBool>,
}

/// One notified change: the transaction, and whether its new status may be
/// terminal (true when the notification did not say).
#[derive(Debug, Clone, Copy)]
struct Notice {
    transaction_id: Uuid,
    maybe_terminal: bool,
}

impl Notice {
    /// Every waiter re-reads: notifications may have been lost.
    const RESYNC: Self = Self {
        transaction_id: Uuid::nil(),
        maybe_terminal: true,
    };

    fn concerns(&self, transaction_id: Uuid) -> bool {
        self.transaction_id == transaction_id || self.transaction_id.is_nil()
    }

    /// `<transaction id>` or `<transaction id> <new status>`.
    fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let transaction_id = Uuid::parse_str(parts.next()?).ok()?;
        let maybe_terminal = parts
            .next()
            .and_then(TransactionStatus::parse)
            .is_none_or(TransactionStatus::is_terminal);
        Some(Self {
            transaction_id,
            maybe_terminal,
        })
    }
}

impl Default for StatusHub {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusHub {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self {
            sender,
            listening: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Interest in one transaction; take it before reading the state it guards.
    pub fn subscribe(&self, transaction_id: Uuid) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
            transaction_id,
            listening: self.listening.clone(),
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
            // Whatever changed while nobody listened was not notified.
            self.listening.store(true, Ordering::SeqCst);
            drop(self.sender.send(Notice::RESYNC));
            loop {
                // `try_recv` reports a lost connection (`None`) instead of
                // reconnecting behind our back and losing notifications.
                let notification = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    notification = listener.try_recv() => notification,
                };
                match notification {
                    Ok(Some(notification)) => match Notice::parse(notification.payload()) {
                        // No receiver is not an error: nobody is waiting.
                        Some(notice) => drop(self.sender.send(notice)),
                        None => tracing::warn!(
                            payload = notification.payload(),
                            "status notification without a transaction id"
                        ),
                    },
                    Ok(None) => {
                        tracing::warn!("status listener lost its connection, reconnecting");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "status listener lost its connection, reconnecting");
                        break;
                    }
                }
            }
            self.listening.store(false, Ordering::SeqCst);
            drop(self.sender.send(Notice::RESYNC));
        }
        tracing::debug!("status listener stopped");
    }
}

/// A waiter's view of the hub.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Notice>,
    transaction_id: Uuid,
    listening: Arc<AtomicBool>,
}

impl Subscription {
    /// Resolves when the transaction may have changed: it was notified,
    /// notifications may have been lost, or the poll interval passed.
    pub async fn changed(&mut self) {
        self.notified(false).await
    }

    /// As [`Self::changed`], but a change to a status known not to be
    /// terminal does not count.
    pub async fn maybe_terminal(&mut self) {
        self.notified(true).await
    }

    async fn notified(&mut self, terminal_only: bool) {
        let transaction_id = self.transaction_id;
        let receiver = &mut self.receiver;
        let notified = async move {
            loop {
                match receiver.recv().await {
                    Ok(notice)
                        if notice.concerns(transaction_id)
                            && (notice.maybe_terminal || !terminal_only) =>
                    {
                        return;
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let poll = if self.listening.load(Ordering::SeqCst) {
            SAFETY_POLL
        } else {
            FALLBACK_POLL
        };
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Waits until `deadline` for the transaction to become terminal and returns
/// its latest state either way; `None` when nothing is newer than what the
/// caller already knows. `known` says the caller holds the state written
/// after `subscription` was taken (it created the transaction): any change
/// since is notified, so the first read is skipped. Holds no database
/// transaction while waiting.
pub async fn wait_for_terminal(
    store: &TransactionStore,
    mut subscription: Subscription,
    deadline: Instant,
    known: bool,
    shutdown: &CancellationToken,
) -> Result<Option<Transaction>, ApiError> {
    let transaction_id = subscription.transaction_id;
    let mut current = None;
    let mut read = !known;
    loop {
        if read {
            let latest = store.get(transaction_id).await?;
            if latest.status.is_terminal() || Instant::now() >= deadline {
                return Ok(Some(latest));
            }
            current = Some(latest);
        }
        read = true;
        tokio::select! {
            _ = subscription.maybe_terminal() => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_says_whether_the_new_status_may_be_terminal() {
        let id = Uuid::now_v7();
        let notice =
            |payload: String| Notice::parse(&payload).map(|n| (n.transaction_id, n.maybe_terminal));
        assert_eq!(notice(format!("{id} processing")), Some((id, false)));
        assert_eq!(notice(format!("{id} review")), Some((id, false)));
        assert_eq!(notice(format!("{id} completed")), Some((id, true)));
        assert_eq!(notice(format!("{id} failed")), Some((id, true)));
        // An older writer's bare id, or a status this build does not know:
        // the waiter re-reads rather than miss the end.
        assert_eq!(notice(id.to_string()), Some((id, true)));
        assert_eq!(notice(format!("{id} settled")), Some((id, true)));
        assert_eq!(notice("not-a-uuid completed".to_owned()), None);
    }

    /// Whether `wait` resolves within `within` of (paused, virtual) time.
    async fn resolves_within(
        wait: impl std::future::Future<Output = ()>,
        within: Duration,
    ) -> bool {
        tokio::time::timeout(within, wait).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_listener_up_a_waiter_relies_on_notifications_and_rereads_only_as_a_safety_net()
     {
        let hub = StatusHub::new();
        hub.listening.store(true, Ordering::SeqCst);
        let id = Uuid::now_v7();
        let mut subscription = hub.subscribe(id);
        let just_under = SAFETY_POLL - Duration::from_millis(1);
        assert!(!resolves_within(subscription.maybe_terminal(), just_under).await);
        assert!(resolves_within(subscription.maybe_terminal(), SAFETY_POLL + SAFETY_POLL).await);

        // Another transaction's notice, or a non-terminal one, does not wake it.
        hub.sender
            .send(Notice::parse(&format!("{} completed", Uuid::now_v7())).unwrap())
            .unwrap();
        hub.sender
            .send(Notice::parse(&format!("{id} processing")).unwrap())
            .unwrap();
        assert!(!resolves_within(subscription.maybe_terminal(), just_under).await);
        hub.sender
            .send(Notice::parse(&format!("{id} completed")).unwrap())
            .unwrap();
        assert!(resolves_within(subscription.maybe_terminal(), Duration::ZERO).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_listener_wakes_every_waiter_and_they_poll_until_it_is_back() {
        let hub = StatusHub::new();
        hub.listening.store(true, Ordering::SeqCst);
        let mut first = hub.subscribe(Uuid::now_v7());
        let mut second = hub.subscribe(Uuid::now_v7());

        // What the listener task does when its connection drops.
        hub.listening.store(false, Ordering::SeqCst);
        hub.sender.send(Notice::RESYNC).unwrap();
        assert!(resolves_within(first.maybe_terminal(), Duration::ZERO).await);
        assert!(resolves_within(second.maybe_terminal(), Duration::ZERO).await);

        // While it is down, waiters re-read at the fallback interval.
        let just_under = FALLBACK_POLL - Duration::from_millis(1);
        assert!(!resolves_within(first.maybe_terminal(), just_under).await);
        assert!(resolves_within(first.maybe_terminal(), FALLBACK_POLL).await);
    }
}
