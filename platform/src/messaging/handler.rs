//! What a consumer runs: a [`Handler`] applies messages inside the runner's
//! transaction, one by one or as a batch, and says why when it cannot.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use sqlx::PgConnection;
use tracing::Instrument;

use super::envelope::IncomingMessage;

/// Why a handler did not apply a message. The split decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later (database busy, a dependency down): retried after a
    /// growing delay, parked once the retry policy is exhausted.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed (a business rule, an unknown message type): parked at once.
    #[error("permanent failure: {0:#}")]
    Permanent(anyhow::Error),
    /// The payload cannot be decoded: parked at once.
    #[error("malformed message: {0:#}")]
    Malformed(anyhow::Error),
}

impl HandlerError {
    /// A transient failure.
    pub fn transient(error: impl Into<anyhow::Error>) -> Self {
        Self::Transient(error.into())
    }

    /// A permanent failure.
    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }

    /// A payload that does not decode.
    pub fn malformed(error: impl Into<anyhow::Error>) -> Self {
        Self::Malformed(error.into())
    }

    /// Whether retrying may help.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Database errors are assumed transient (lost connection, serialization
/// failure, lock timeout); a handler that knows better maps them itself.
impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self::Transient(error.into())
    }
}

/// Applies messages inside the runner's transaction.
///
/// Implement it with `async fn handle(&self, tx: &mut PgConnection, message:
/// &IncomingMessage) -> Result<(), HandlerError>`. Write effects (and outgoing
/// messages via [`enqueue`](super::enqueue)) through `tx`; do not commit it.
/// A handler that applies a batch as a whole implements [`BatchHandler`]
/// instead.
pub trait Handler: Send + Sync + 'static {
    /// Applies `message`. An error rolls back everything written through `tx`.
    fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies `messages`, in order, in one transaction: override it where
    /// many messages take fewer statements than one at a time. On an error
    /// the runner rolls back everything written through `tx` and handles the
    /// batch again one message at a time with [`handle`](Handler::handle),
    /// except the message the error names, which keeps the error's outcome.
    /// The default is [`one_by_one`].
    fn handle_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> impl Future<Output = Result<(), BatchError>> + Send {
        one_by_one(self, tx, messages)
    }
}

/// Applies `messages` in order with [`Handler::handle`], each in its span; a
/// panic is the message's permanent failure. What [`Handler::handle_batch`]
/// does unless overridden, and what an override falls back to for a batch it
/// cannot take as a set.
pub async fn one_by_one<H: Handler + ?Sized>(
    handler: &H,
    tx: &mut PgConnection,
    messages: &[&IncomingMessage],
) -> Result<(), BatchError> {
    for (index, message) in messages.iter().enumerate() {
        AssertUnwindSafe(handler.handle(tx, message))
            .catch_unwind()
            .instrument(message_span(message))
            .await
            .unwrap_or_else(|_| Err(panicked()))
            .map_err(|error| BatchError::at(index, error))?;
    }
    Ok(())
}

/// A handler whose unit is the batch: it applies a batch as a whole (a few
/// statements whatever its size), and one message as a batch of one. It is a
/// [`Handler`] through the impl below, so it writes no `handle` of its own.
pub trait BatchHandler: Send + Sync + 'static {
    /// Applies `messages`, in order, in one transaction; see
    /// [`Handler::handle_batch`] for what an error does.
    fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> impl Future<Output = Result<(), BatchError>> + Send;
}

impl<H: BatchHandler> Handler for H {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        self.apply_batch(tx, &[message])
            .await
            .map_err(|failure| failure.error)
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        self.apply_batch(tx, messages).await
    }
}

/// Why [`Handler::handle_batch`] failed.
#[derive(Debug)]
pub struct BatchError {
    /// The position of the message that failed, when one did; `None` when
    /// the failure belongs to the batch (a statement for all its messages).
    pub index: Option<usize>,
    pub error: HandlerError,
}

impl BatchError {
    /// Message `index` of the batch failed.
    pub fn at(index: usize, error: HandlerError) -> Self {
        Self {
            index: Some(index),
            error,
        }
    }

    /// The batch as a whole failed.
    pub fn whole(error: impl Into<HandlerError>) -> Self {
        Self {
            index: None,
            error: error.into(),
        }
    }
}

/// The span a message is handled in: its ids and trace context. With traces
/// on, it continues the message's trace (see
/// [`continue_message_trace`](crate::tracing_otel::continue_message_trace)),
/// so what the handler enqueues carries this span as its parent.
pub fn message_span(message: &IncomingMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "handle_message",
        message_id = %message.message_id,
        message_type = %message.message_type,
        correlation_id = message.correlation_id.map(tracing::field::display),
        traceparent = message.traceparent.as_deref(),
        attempt = message.attempt,
    );
    crate::tracing_otel::continue_message_trace(&span, message.traceparent.as_deref());
    span
}

/// A panicking handler is a bug in that handler: its message is parked
/// instead of the panic ending the consumer for every other message.
pub(super) fn panicked() -> HandlerError {
    HandlerError::permanent(anyhow::anyhow!("handler panicked"))
}
