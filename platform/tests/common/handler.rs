//! The messaging tests' handler: what it does is chosen by the message type,
//! and it records each call and each effect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use corebank_platform::messaging::{BatchError, Handler, HandlerError, IncomingMessage};
use sqlx::PgConnection;
use uuid::Uuid;

/// A handler whose behaviour is chosen by the message type, recording its
/// effect in the `effect` table of the runner's transaction:
/// `test.Ok`; `test.FailTransiently:<n>` fails `n` times then succeeds;
/// `test.AlwaysTransient`; `test.Permanent` fails permanently until healed.
#[derive(Clone, Default)]
pub struct TestHandler {
    pub calls: Arc<Mutex<HashMap<Uuid, Vec<Instant>>>>,
    pub healed: Arc<AtomicBool>,
    /// When set, a batch applies every message, then fails as a whole (as a
    /// multi-row statement for the batch would).
    pub batches_fail: Arc<AtomicBool>,
}

impl TestHandler {
    pub fn calls(&self, message_id: Uuid) -> Vec<Instant> {
        self.calls
            .lock()
            .unwrap()
            .get(&message_id)
            .cloned()
            .unwrap_or_default()
    }
}

impl Handler for TestHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        let calls = {
            let mut all = self.calls.lock().unwrap();
            let calls = all.entry(message.message_id).or_default();
            calls.push(Instant::now());
            calls.len()
        };
        let kind = message.message_type.as_str();
        if let Some(failures) = kind.strip_prefix("test.FailTransiently:") {
            let failures: usize = failures.parse().map_err(HandlerError::malformed)?;
            if calls <= failures {
                return Err(HandlerError::transient(anyhow::anyhow!(
                    "flaky dependency, call {calls}"
                )));
            }
        } else if kind == "test.AlwaysTransient" {
            return Err(HandlerError::transient(anyhow::anyhow!("dependency down")));
        } else if kind == "test.Permanent" && !self.healed.load(Ordering::SeqCst) {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "business rule says no"
            )));
        } else if kind != "test.Ok" && kind != "test.Permanent" {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "unknown message type {kind}"
            )));
        }
        sqlx::query("insert into effect (message_id, message_type, attempt) values ($1, $2, $3)")
            .bind(message.message_id)
            .bind(&message.message_type)
            .bind(i32::try_from(message.attempt).unwrap())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        for (index, message) in messages.iter().enumerate() {
            self.handle(tx, message)
                .await
                .map_err(|error| BatchError::at(index, error))?;
        }
        if self.batches_fail.load(Ordering::SeqCst) {
            return Err(BatchError::whole(HandlerError::transient(anyhow::anyhow!(
                "the batch statement failed"
            ))));
        }
        Ok(())
    }
}
