//! Waking an outbox relay that runs in the same process, without a NOTIFY.
//!
//! A NOTIFY is transactional, which is what makes it a safe wake-up: it
//! reaches the relay only once the rows it announces are committed. It is
//! also costly: PostgreSQL serializes the commits of every transaction that
//! notified on one lock, held through the commit's WAL flush, so with a
//! NOTIFY in every consumer batch of every service the commits queue behind
//! each other (on this project's bench machine a notifying commit halves
//! the commits a second the server takes).
//!
//! The writers that commit most (the consumers, and the transaction
//! service's creates) run in the process of the relay of their own schema. Such a writer runs its transaction inside
//! [`waking_relay_after`]: [`enqueue_all`](super::enqueue_all) then writes its
//! rows without a NOTIFY and notes their message ids, and once the scope's
//! work is done (committed, or rolled back) the ids are handed to the relay
//! in memory. The relay publishes them without a claim round: it reads the
//! rows by id, which finds only committed ones (a rolled-back write finds
//! nothing, so nothing uncommitted is ever published), and marks them sent
//! a batch at a time (see `relay`). A relay mid-round keeps the wake-up as a
//! permit and takes the ids when that round ends. A writer with no relay of
//! its schema in its process (another replica, a tool) is outside any scope
//! and notifies as before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

/// Which outbox a relay serves: the database and the schema of its pool.
pub type OutboxKey = String;

/// The outbox the pool's connections write to (`database/schema`).
pub async fn outbox_key(pool: &PgPool) -> Result<OutboxKey, sqlx::Error> {
    Ok(outbox_of(pool).await?.1)
}

/// The key of the outbox the pool's connections write to, for
/// [`waking_relay_after`]; `None` (and a warning naming `writers`) when it
/// cannot be read, in which case the writers notify their relay as any
/// other writer does.
pub async fn handover_key(pool: &PgPool, writers: &str) -> Option<OutboxKey> {
    match outbox_key(pool).await {
        Ok(key) => Some(key),
        Err(error) => {
            tracing::warn!(%error, writers, "outbox unknown: these writers will notify their relay");
            None
        }
    }
}

/// The schema of the pool's connections and the key of its outbox.
pub(super) async fn outbox_of(pool: &PgPool) -> Result<(String, OutboxKey), sqlx::Error> {
    sqlx::query_as("select current_schema(), current_database() || '/' || current_schema()")
        .fetch_one(pool)
        .await
}

/// What the writers of this process leave for the relay of one outbox.
#[derive(Default)]
pub(super) struct Mailbox {
    wake: Notify,
    /// Message ids written (and, unless rolled back, committed) by scoped
    /// writers, not yet taken by the relay.
    handed: Mutex<Vec<Uuid>>,
    /// Writers wrote rows whose ids could not be handed over (past
    /// [`HANDED_LIMIT`]): the relay should claim pending rows.
    claim: AtomicBool,
}

/// A relay's mailbox and how many relays of one outbox share it.
type Relays = HashMap<OutboxKey, (Arc<Mailbox>, usize)>;

/// The relays of this process, by outbox.
static RELAYS: LazyLock<Mutex<Relays>> = LazyLock::new(Mutex::default);

/// How many handed ids a relay may have waiting; past it they are dropped
/// and the relay claims their rows instead (say, after its broker was away
/// for a while).
const HANDED_LIMIT: usize = 10_000;

tokio::task_local! {
    /// Set inside [`waking_relay_after`]: the message ids of the outbox
    /// rows the work wrote.
    static WROTE: RefCell<Vec<Uuid>>;
}

/// A relay's registration; dropping it removes the relay.
pub(super) struct Registration {
    key: OutboxKey,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    /// Waits for a writer of this process to wake the relay (or returns at
    /// once if one did while the relay was busy).
    pub(super) async fn woken(&self) {
        self.mailbox.wake.notified().await
    }

    /// The message ids handed over since the last call, in the order they
    /// were written.
    pub(super) fn take_handed(&self) -> Vec<Uuid> {
        std::mem::take(&mut *lock(&self.mailbox.handed))
    }

    /// Whether writers handed over ids not taken yet.
    pub(super) fn has_handed(&self) -> bool {
        !lock(&self.mailbox.handed).is_empty()
    }

    /// Whether a writer asked for a claim round since the last call.
    pub(super) fn take_claim(&self) -> bool {
        self.mailbox.claim.swap(false, Ordering::AcqRel)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut relays = lock(&RELAYS);
        if let Some((_, count)) = relays.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                relays.remove(&self.key);
            }
        }
    }
}

/// Registers a relay of `key`'s outbox in this process.
pub(super) fn register(key: OutboxKey) -> Registration {
    let mut relays = lock(&RELAYS);
    let (mailbox, count) = relays.entry(key.clone()).or_default();
    *count += 1;
    Registration {
        key,
        mailbox: Arc::clone(mailbox),
    }
}

fn local_relay(key: &str) -> Option<Arc<Mailbox>> {
    lock(&RELAYS)
        .get(key)
        .map(|(mailbox, _)| Arc::clone(mailbox))
}

/// Runs `work`, a database transaction that may enqueue outbox rows and
/// ends with its commit, and then hands the ids of the rows it wrote to
/// the relay of `key`'s outbox in this process, instead of a NOTIFY per
/// transaction. With no such relay (or no key) the work runs as it is and
/// notifies.
pub async fn waking_relay_after<F: Future>(key: Option<&str>, work: F) -> F::Output {
    let Some(mailbox) = key.and_then(local_relay) else {
        return work.await;
    };
    let (output, written) = WROTE
        .scope(RefCell::default(), async {
            let output = work.await;
            (output, WROTE.with(|written| written.take()))
        })
        .await;
    // Work that wrote no row (a batch with nothing to send) leaves the
    // relay alone: a claim round would find nothing of this process's, and
    // with several replicas it would take the rows another replica's
    // writers handed to their own relay, and publish them a second time.
    if !written.is_empty() {
        let mut handed = lock(&mailbox.handed);
        if handed.len() + written.len() > HANDED_LIMIT {
            // The rows are pending in the table whatever happens here: a
            // relay that has not kept up (its broker away) claims them.
            handed.clear();
            mailbox.claim.store(true, Ordering::Release);
        } else {
            handed.extend(written);
        }
        drop(handed);
        mailbox.wake.notify_one();
    }
    output
}

/// Whether the caller's outbox rows need a NOTIFY: `false` inside
/// [`waking_relay_after`], which then hands `ids` (the rows' message ids)
/// to the relay itself.
pub(super) fn needs_notify(ids: &[Uuid]) -> bool {
    WROTE
        .try_with(|written| written.borrow_mut().extend_from_slice(ids))
        .is_err()
}
