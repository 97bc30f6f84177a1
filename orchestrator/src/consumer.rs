//! AMQP ⇄ engine: the queue of requested movements (each starts a saga) and
//! the queue of command replies (each may advance one). Both run inside the
//! platform consumer's transaction, next to its inbox row.

use std::sync::Arc;

use corebank_platform::clock::SharedClock;
use corebank_platform::messaging::{
    BatchError, BatchHandler, Exchange, HandlerError, IncomingMessage, QueueSpec, message_span,
};
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use sqlx::PgConnection;

use crate::domain::{EngineConfig, Refusal};
use crate::messages::{decode_reply, decode_requested};
use crate::runtime;

/// `orchestrator.requests`: every `transaction.*.requested` event.
pub fn requests_queue() -> QueueSpec {
    QueueSpec::new(wire::queue::ORCHESTRATOR_REQUESTS)
        .bind(Exchange::Events, wire::event::ANY_REQUESTED)
}

/// `orchestrator.replies`: every reply addressed to the orchestrator.
pub fn replies_queue() -> QueueSpec {
    QueueSpec::new(wire::queue::ORCHESTRATOR_REPLIES)
        .bind(Exchange::Replies, wire::service::ORCHESTRATOR)
}

/// Starts a saga per requested movement; a second request for the same
/// transaction (redelivered or re-published) starts nothing.
#[derive(Debug, Clone)]
pub struct RequestHandler {
    pub config: Arc<EngineConfig>,
    pub clock: SharedClock,
}

impl BatchHandler for RequestHandler {
    /// Every request of the batch in two statements: the new sagas with their
    /// first log rows, their first commands.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        let spans: Vec<tracing::Span> = messages
            .iter()
            .map(|message| message_span(message))
            .collect();
        let expected = wire::message_type::<pb::TransactionRequestedEvent>();
        let mut requests = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            if message.message_type != expected {
                return Err(BatchError::at(
                    index,
                    HandlerError::permanent(anyhow::anyhow!(
                        "unexpected message type {} on the requests queue",
                        message.message_type
                    )),
                ));
            }
            let requested = decode_requested(&message.payload)
                .map_err(|error| BatchError::at(index, HandlerError::malformed(error)))?;
            requests.push(runtime::Starting {
                requested,
                causation_id: Some(message.message_id),
                span: &spans[index],
            });
        }
        let transaction_ids: Vec<_> = requests
            .iter()
            .map(|starting| starting.requested.transaction_id)
            .collect();
        let started = runtime::start_all(tx, &self.config, requests, self.clock.now())
            .await
            .map_err(BatchError::whole)?;
        for ((transaction_id, saga), span) in transaction_ids.into_iter().zip(started).zip(&spans) {
            if saga.is_none() {
                let _entered = span.enter();
                tracing::info!(%transaction_id, "transaction already has a saga, request ignored");
            }
        }
        Ok(())
    }
}

/// Applies a participant's reply to the saga awaiting it. A reply to any other
/// command (stale, duplicate, or for a finished saga) is acknowledged and ignored.
#[derive(Debug, Clone)]
pub struct ReplyHandler {
    pub config: Arc<EngineConfig>,
    pub clock: SharedClock,
}

impl ReplyHandler {
    fn decode(
        message: &IncomingMessage,
    ) -> Result<(uuid::Uuid, crate::domain::Event), HandlerError> {
        let expected = wire::message_type::<pb::CommandReply>();
        if message.message_type != expected {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "unexpected message type {} on the replies queue",
                message.message_type
            )));
        }
        decode_reply(&message.payload).map_err(HandlerError::malformed)
    }
}

impl BatchHandler for ReplyHandler {
    /// Every reply of the batch in three statements: lock their sagas, write
    /// the new states with their log rows, write the commands.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        let spans: Vec<tracing::Span> = messages
            .iter()
            .map(|message| message_span(message))
            .collect();
        let mut events = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let (saga_id, event) =
                Self::decode(message).map_err(|error| BatchError::at(index, error))?;
            events.push(runtime::Applying {
                saga_id,
                event,
                causation_id: Some(message.message_id),
                span: &spans[index],
            });
        }
        let saga_ids: Vec<_> = events.iter().map(|applying| applying.saga_id).collect();
        let results = runtime::apply_all(tx, &self.config, events, self.clock.now())
            .await
            .map_err(BatchError::whole)?;
        for ((saga_id, result), span) in saga_ids.into_iter().zip(results).zip(&spans) {
            let _entered = span.enter();
            match result {
                None => tracing::warn!(%saga_id, "reply for an unknown saga, ignored"),
                Some(Err(refusal @ Refusal::MayNotWait { .. })) => {
                    tracing::warn!(%saga_id, %refusal, "waiting reply from a step that may not wait, ignored");
                }
                Some(Err(refusal)) => tracing::debug!(%saga_id, %refusal, "reply ignored"),
                Some(Ok(_)) => {}
            }
        }
        Ok(())
    }
}
