//! The local state features come from: who owns each account and since when,
//! customers' KYC status, and how screened movements ended. Idempotent: the
//! runner's inbox drops redeliveries, and every write here is an upsert that
//! a replay leaves as it is.

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

impl Handler for EventHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        let payload = message.payload.as_slice();
        let kind = message.message_type.as_str();
        let now = self.clock.now();
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
            profiles::settle_movement(tx, id, "completed", now).await?;
        } else if kind == pb::TransactionFailedEvent::full_name() {
            let event =
                pb::TransactionFailedEvent::decode(payload).map_err(HandlerError::malformed)?;
            let id = parse_uuid(&event.transaction_id, "transaction_id")?;
            profiles::settle_movement(tx, id, "failed", now).await?;
        } else {
            // Bound to a topic pattern: another event type is simply not ours.
            tracing::debug!(message_type = kind, "event ignored");
        }
        Ok(())
    }
}
