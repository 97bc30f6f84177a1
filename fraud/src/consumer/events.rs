//! The local state features come from: who owns each account and since when,
//! customers' KYC status, and how screened movements ended. Idempotent: the
//! runner's inbox drops redeliveries, and every write here is an upsert that
//! a replay leaves as it is.

use corebank_platform::messaging::{BatchError, BatchHandler};

use super::*;

/// Keeps account and customer profiles and movement outcomes from events.
#[derive(Debug, Clone)]
pub struct EventHandler {
    clock: SharedClock,
}

impl EventHandler {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

impl BatchHandler for EventHandler {
    /// Profiles and KYC in order, one statement each; every movement
    /// outcome of the batch in one statement at the end.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        let now = self.clock.now();
        let mut settled: Vec<(Uuid, &'static str)> = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let at = |error: HandlerError| BatchError::at(index, error);
            match self.apply(tx, message, now).await.map_err(at)? {
                Some(outcome) => settled.push(outcome),
                None => continue,
            }
        }
        profiles::settle_movements(tx, &settled, now)
            .await
            .map_err(BatchError::whole)
    }
}

impl EventHandler {
    /// Applies one event, except a movement's outcome, which it returns.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
        now: DateTime<Utc>,
    ) -> Result<Option<(Uuid, &'static str)>, HandlerError> {
        let payload = message.payload.as_slice();
        let kind = message.message_type.as_str();
        let occurred_at = message.occurred_at.unwrap_or(now);
        if kind == pb::AccountOpenedEvent::full_name() {
            let event = pb::AccountOpenedEvent::decode(payload).map_err(HandlerError::malformed)?;
            let opened_at = event
                .open_time
                .as_ref()
                .and_then(from_timestamp)
                .unwrap_or(occurred_at);
            profiles::record_account(
                tx,
                parse_uuid(&event.account_id, "account_id")?,
                parse_uuid(&event.customer_id, "customer_id")?,
                &event.currency,
                opened_at,
            )
            .await?;
        } else if kind == pb::CustomerKycChangedEvent::full_name() {
            let event =
                pb::CustomerKycChangedEvent::decode(payload).map_err(HandlerError::malformed)?;
            profiles::record_kyc(
                tx,
                parse_uuid(&event.customer_id, "customer_id")?,
                &event.to_status,
                event.sequence,
                occurred_at,
            )
            .await?;
        } else if kind == pb::TransactionCompletedEvent::full_name() {
            let event =
                pb::TransactionCompletedEvent::decode(payload).map_err(HandlerError::malformed)?;
            let id = parse_uuid(&event.transaction_id, "transaction_id")?;
            return Ok(Some((id, "completed")));
        } else if kind == pb::TransactionFailedEvent::full_name() {
            let event =
                pb::TransactionFailedEvent::decode(payload).map_err(HandlerError::malformed)?;
            let id = parse_uuid(&event.transaction_id, "transaction_id")?;
            return Ok(Some((id, "failed")));
        } else {
            // Bound to a topic pattern: another event type is simply not ours.
            tracing::debug!(message_type = kind, "event ignored");
        }
        Ok(None)
    }
}
