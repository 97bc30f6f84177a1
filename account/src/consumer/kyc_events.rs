//! Mirrors `customer.kyc.changed` events, newest version wins.

use super::*;

/// Mirrors `customer.kyc.changed` events.
#[derive(Debug, Clone)]
pub struct KycHandler {
    clock: SharedClock,
}

impl KycHandler {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

impl Handler for KycHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        if message.message_type != pb::CustomerKycChangedEvent::full_name() {
            return Err(HandlerError::permanent(anyhow!(
                "unexpected event type {:?}",
                message.message_type
            )));
        }
        let event = pb::CustomerKycChangedEvent::decode(message.payload.as_slice())
            .map_err(HandlerError::malformed)?;
        let customer_id = Uuid::parse_str(&event.customer_id).map_err(HandlerError::malformed)?;
        if !matches!(
            event.to_status.as_str(),
            "pending" | "verified" | "rejected" | "suspended"
        ) {
            return Err(HandlerError::malformed(anyhow!(
                "unknown kyc status {:?}",
                event.to_status
            )));
        }
        kyc::record(
            tx,
            customer_id,
            &event.to_status,
            event.sequence,
            self.clock.now(),
        )
        .await?;
        tracing::info!(%customer_id, to = %event.to_status, version = event.sequence, "kyc status mirrored");
        Ok(())
    }
}
