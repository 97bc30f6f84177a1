//! What the relay's rounds did, and why it woke.

/// What one round did.
pub(super) struct Round {
    pub(super) claimed: usize,
    pub(super) confirmed: usize,
}

impl Round {
    pub(super) const NOTHING: Round = Round {
        claimed: 0,
        confirmed: 0,
    };

    /// A round that published `confirmed` of its `claimed` rows.
    pub(super) fn done(schema: &str, claimed: usize, confirmed: usize) -> Round {
        metrics::counter!("corebank_messaging_published_total", "schema" => schema.to_owned())
            .increment(confirmed as u64);
        tracing::debug!(claimed, confirmed, "outbox batch published");
        Round { claimed, confirmed }
    }
}

/// Why the relay stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Woken {
    Shutdown,
    /// A NOTIFY from a writer outside this process's handover scopes.
    Notified,
    /// A writer of this process.
    Local,
    /// Published rows are due to be marked.
    Marks,
    /// Nothing arrived for `poll_interval`.
    Poll,
}
