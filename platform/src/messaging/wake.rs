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
//! The writers that commit most (the consumers) run in the process of the
//! relay of their own schema. Such a writer runs its transaction inside
//! [`waking_relay_after`]: [`enqueue_all`](super::enqueue_all) then writes its
//! rows without a NOTIFY and marks the scope, and once the scope's work is
//! done (committed, or rolled back: a spurious wake-up costs one empty round)
//! the relay is woken in memory. A relay mid-round keeps the wake-up as a
//! permit and runs one more round when that one ends, so no row waits for
//! the polling fallback. A writer with no relay of its schema in its process
//! (another replica, a tool) is outside any scope and notifies as before.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::PgPool;
use tokio::sync::Notify;

/// Which outbox a relay serves: the database and the schema of its pool.
pub type OutboxKey = String;

/// The outbox the pool's connections write to (`database/schema`).
pub async fn outbox_key(pool: &PgPool) -> Result<OutboxKey, sqlx::Error> {
    Ok(outbox_of(pool).await?.1)
}

/// The schema of the pool's connections and the key of its outbox.
pub(super) async fn outbox_of(pool: &PgPool) -> Result<(String, OutboxKey), sqlx::Error> {
    sqlx::query_as("select current_schema(), current_database() || '/' || current_schema()")
        .fetch_one(pool)
        .await
}

/// A relay wake-up and how many relays of one outbox share it.
type Relays = HashMap<OutboxKey, (Arc<Notify>, usize)>;

/// The relays of this process, by outbox.
static RELAYS: LazyLock<Mutex<Relays>> = LazyLock::new(Mutex::default);

tokio::task_local! {
    /// Set inside [`waking_relay_after`]: whether the work wrote outbox rows.
    static WROTE: Cell<bool>;
}

/// A relay's registration; dropping it removes the relay.
pub(super) struct Registration {
    key: OutboxKey,
    wake: Arc<Notify>,
}

impl Registration {
    /// Waits for a writer of this process to wake the relay (or returns at
    /// once if one did while the relay was busy).
    pub(super) async fn woken(&self) {
        self.wake.notified().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut relays = RELAYS.lock().unwrap_or_else(|poison| poison.into_inner());
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
    let mut relays = RELAYS.lock().unwrap_or_else(|poison| poison.into_inner());
    let (wake, count) = relays
        .entry(key.clone())
        .or_insert_with(|| (Arc::new(Notify::new()), 0));
    *count += 1;
    Registration {
        key,
        wake: Arc::clone(wake),
    }
}

fn local_relay(key: &str) -> Option<Arc<Notify>> {
    let relays = RELAYS.lock().unwrap_or_else(|poison| poison.into_inner());
    relays.get(key).map(|(wake, _)| Arc::clone(wake))
}

/// Runs `work`, a database transaction that may enqueue outbox rows and
/// ends with its commit, and then wakes the relay of `key`'s outbox in this
/// process if the work wrote any, instead of a NOTIFY per transaction. With
/// no such relay (or no key) the work runs as it is and notifies.
pub async fn waking_relay_after<F: Future>(key: Option<&str>, work: F) -> F::Output {
    let Some(wake) = key.and_then(local_relay) else {
        return work.await;
    };
    let (output, wrote) = WROTE
        .scope(Cell::new(false), async {
            let output = work.await;
            (output, WROTE.with(Cell::get))
        })
        .await;
    if wrote {
        wake.notify_one();
    }
    output
}

/// Whether the caller's outbox rows need a NOTIFY: `false` inside
/// [`waking_relay_after`], which then wakes the relay itself.
pub(super) fn needs_notify() -> bool {
    WROTE.try_with(|wrote| wrote.set(true)).is_err()
}
