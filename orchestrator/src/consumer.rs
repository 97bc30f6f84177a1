//! AMQP ⇄ engine: the queue of requested movements (each starts a saga) and
//! the queue of command replies (each may advance one). Both run inside the
//! platform consumer's transaction, next to its inbox row.

use std::sync::Arc;

use corebank_platform::clock::SharedClock;
use corebank_platform::messaging::{Exchange, Handler, HandlerError, IncomingMessage, QueueSpec};
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use sqlx::PgConnection;

use crate::domain::{EngineConfig, Refusal};
use crate::messages::{decode_reply, decode_requested};
use crate::{runtime, store};

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

impl Handler for RequestHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        let expected = wire::message_type::<pb::TransactionRequestedEvent>();
        if message.message_type != expected {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "unexpected message type {} on the requests queue",
                message.message_type
            )));
        }
        let requested = decode_requested(&message.payload).map_err(HandlerError::malformed)?;
        let transaction_id = requested.transaction_id;
        let started = runtime::start(
            tx,
            &self.config,
            requested,
            self.clock.now(),
            Some(message.message_id),
        )
        .await?;
        if started.is_none() {
            tracing::info!(%transaction_id, "transaction already has a saga, request ignored");
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

impl Handler for ReplyHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        let expected = wire::message_type::<pb::CommandReply>();
        if message.message_type != expected {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "unexpected message type {} on the replies queue",
                message.message_type
            )));
        }
        let (saga_id, event) = decode_reply(&message.payload).map_err(HandlerError::malformed)?;
        let Some(saga) = store::lock(tx, saga_id).await? else {
            tracing::warn!(%saga_id, "reply for an unknown saga, ignored");
            return Ok(());
        };
        let applied = runtime::apply(
            tx,
            &self.config,
            &saga,
            event,
            self.clock.now(),
            Some(message.message_id),
        )
        .await?;
        match applied {
            Err(refusal @ Refusal::MayNotWait { .. }) => {
                tracing::warn!(%saga_id, %refusal, "waiting reply from a step that may not wait, ignored");
            }
            Err(refusal) => tracing::debug!(%saga_id, %refusal, "reply ignored"),
            Ok(_) => {}
        }
        Ok(())
    }
}
