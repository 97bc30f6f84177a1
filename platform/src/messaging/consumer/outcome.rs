//! What becomes of one delivery: acknowledged, retried later or parked,
//! with the metric and the log line that say so.

use std::time::Duration;

use super::QueueConsumer;
use crate::messaging::dlq::ParkReason;
use crate::messaging::envelope::{IncomingMessage, MalformedMessage};
use crate::messaging::handler::{Handler, HandlerError};

/// The target of [`outcome_span`]: the trace layer leaves it out.
const OUTCOME_SPAN_TARGET: &str = "corebank_platform::messaging::outcome";

/// A span with the fields of [`message_span`](crate::messaging::message_span)
/// for the log lines of an outcome decided outside the handling span: a
/// duplicate, a batch's messages once committed, a failure reported by the
/// batch. Not a span of the trace: the message was handled (or not) in a
/// span of its own already.
pub(super) fn outcome_span(message: &IncomingMessage) -> tracing::Span {
    tracing::info_span!(
        target: OUTCOME_SPAN_TARGET,
        "handle_message",
        message_id = %message.message_id,
        message_type = %message.message_type,
        correlation_id = message.correlation_id.map(tracing::field::display),
        traceparent = message.traceparent.as_deref(),
        attempt = message.attempt,
    )
}

/// What to do with one delivery once the transaction committed.
pub(super) enum Outcome {
    Ack,
    Retry { attempt: u32, delay: Duration },
    Park { reason: ParkReason, error: String },
}

impl<H: Handler> QueueConsumer<H> {
    pub(super) fn malformed(&self, queue: &str, malformed: &MalformedMessage) -> Outcome {
        tracing::warn!(%queue, error = %malformed, "malformed envelope, parking");
        Outcome::Park {
            reason: ParkReason::Malformed,
            error: malformed.to_string(),
        }
    }

    pub(super) fn duplicate(&self, span: &tracing::Span) -> Outcome {
        metrics::counter!("corebank_messaging_duplicates_total", "queue" => self.spec.name.clone())
            .increment(1);
        tracing::info!(parent: span, "duplicate message, acknowledging without effect");
        Outcome::Ack
    }

    /// Counts a message handled, and how long after it was written to its
    /// outbox (`corebank_messaging_consumer_lag_seconds`: the relay's delay,
    /// the broker's queue and the consumer's backlog together).
    pub(super) fn handled(&self, span: &tracing::Span, message: &IncomingMessage) -> Outcome {
        metrics::counter!("corebank_messaging_handled_total", "queue" => self.spec.name.clone())
            .increment(1);
        if let Some(occurred_at) = message.occurred_at {
            let lag = (chrono::Utc::now() - occurred_at).as_seconds_f64().max(0.0);
            metrics::histogram!("corebank_messaging_consumer_lag_seconds", "queue" => self.spec.name.clone())
                .record(lag);
        }
        tracing::debug!(parent: span, "message handled");
        Outcome::Ack
    }

    pub(super) fn failure_outcome(
        &self,
        span: &tracing::Span,
        message: &IncomingMessage,
        error: HandlerError,
    ) -> Outcome {
        let text = error.to_string();
        match error {
            HandlerError::Transient(_) => match self.spec.retry.delay_after(message.attempt) {
                Some(delay) => {
                    tracing::warn!(parent: span, error = %text, retry_in_ms = delay.as_millis() as u64, "transient failure, retrying");
                    Outcome::Retry {
                        attempt: message.attempt + 1,
                        delay,
                    }
                }
                None => {
                    tracing::error!(parent: span, error = %text, "transient failure, retries exhausted, parking");
                    Outcome::Park {
                        reason: ParkReason::RetriesExhausted,
                        error: text,
                    }
                }
            },
            HandlerError::Permanent(_) => {
                tracing::error!(parent: span, error = %text, "permanent failure, parking");
                Outcome::Park {
                    reason: ParkReason::Permanent,
                    error: text,
                }
            }
            HandlerError::Malformed(_) => {
                tracing::error!(parent: span, error = %text, "malformed payload, parking");
                Outcome::Park {
                    reason: ParkReason::Malformed,
                    error: text,
                }
            }
        }
    }
}
