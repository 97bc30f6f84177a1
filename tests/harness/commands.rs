//! Saga commands sent straight to the account service, as the orchestrator
//! sends them: the only way a hold is placed, released or captured, or a
//! deposit posted. Tests of the ledger's rules drive the participant this
//! way and read its stored reply.

use std::time::Duration;

use corebank_platform::messaging::OutgoingMessage;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use uuid::Uuid;

use super::{TestApp, publish};

/// One saga's commands to the account service: a reserve, its release, its
/// post, or a deposit, each with the deterministic id the orchestrator would give.
#[derive(Debug, Clone)]
pub struct SagaCommands {
    pub saga_id: Uuid,
    pub transaction_id: String,
}

impl Default for SagaCommands {
    fn default() -> Self {
        Self::new()
    }
}

impl SagaCommands {
    /// A fresh saga id and transaction id.
    pub fn new() -> Self {
        Self {
            saga_id: Uuid::now_v7(),
            transaction_id: Uuid::now_v7().to_string(),
        }
    }

    pub fn reserve_id(&self) -> String {
        wire::command_id(self.saga_id, "reserve", wire::Direction::Forward)
    }

    pub fn reserve(&self, account_id: &str, amount: pb::Money) -> pb::ReserveFundsCommand {
        pb::ReserveFundsCommand {
            command_id: self.reserve_id(),
            saga_id: self.saga_id.to_string(),
            account_id: account_id.to_owned(),
            amount: Some(amount),
            transaction_id: self.transaction_id.clone(),
        }
    }

    pub fn release(&self, account_id: &str) -> pb::ReleaseFundsCommand {
        pb::ReleaseFundsCommand {
            command_id: wire::command_id(self.saga_id, "reserve", wire::Direction::Compensate),
            saga_id: self.saga_id.to_string(),
            reserve_command_id: self.reserve_id(),
            account_id: account_id.to_owned(),
        }
    }

    /// Captures the reserve's hold into `destination` (empty: a withdrawal).
    pub fn post(&self, source: &str, destination: &str) -> pb::PostTransferCommand {
        pb::PostTransferCommand {
            command_id: wire::command_id(self.saga_id, "post", wire::Direction::Forward),
            saga_id: self.saga_id.to_string(),
            reserve_command_id: self.reserve_id(),
            source_account_id: source.to_owned(),
            destination_account_id: destination.to_owned(),
            transaction_id: self.transaction_id.clone(),
        }
    }

    pub fn deposit(&self, account_id: &str, amount: pb::Money) -> pb::PostDepositCommand {
        pb::PostDepositCommand {
            command_id: wire::command_id(self.saga_id, "post", wire::Direction::Forward),
            saga_id: self.saga_id.to_string(),
            account_id: account_id.to_owned(),
            amount: Some(amount),
            transaction_id: self.transaction_id.clone(),
        }
    }
}

/// A command the account service takes: its id for the reply lookup.
pub trait AccountCommand: Message + Name {
    fn command_id(&self) -> &str;
    fn saga_id(&self) -> &str;
}

macro_rules! account_command {
    ($($type:ty),*) => {$(
        impl AccountCommand for $type {
            fn command_id(&self) -> &str {
                &self.command_id
            }
            fn saga_id(&self) -> &str {
                &self.saga_id
            }
        }
    )*};
}

account_command!(
    pb::ReserveFundsCommand,
    pb::ReleaseFundsCommand,
    pb::PostTransferCommand,
    pb::PostDepositCommand
);

impl TestApp {
    /// Publishes a command to the account service without waiting.
    pub async fn send_command<C: AccountCommand>(&self, command: &C) {
        let saga_id: Uuid = command.saga_id().parse().expect("saga id");
        self.send_command_to(wire::service::ACCOUNT, saga_id, command)
            .await;
    }

    /// Publishes a saga's command to `service` without waiting.
    pub async fn send_command_to<C: Message + Name>(
        &self,
        service: &str,
        saga_id: Uuid,
        command: &C,
    ) {
        let message = OutgoingMessage::command(service, C::full_name(), command.encode_to_vec())
            .with_correlation_id(saga_id);
        publish(&self.namespace, &message).await;
    }

    /// The reply the account service stored for `command_id`, waited for
    /// (at most 20 s).
    pub async fn command_reply(&self, command_id: &str) -> pb::CommandReply {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stored: Option<Vec<u8>> =
                sqlx::query_scalar("select reply from account.command_log where command_id = $1")
                    .bind(command_id)
                    .fetch_optional(&self.owner)
                    .await
                    .expect("read the command log");
            if let Some(reply) = stored {
                return pb::CommandReply::decode(reply.as_slice()).expect("a stored reply");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "command {command_id} never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a command and waits for its reply.
    pub async fn command<C: AccountCommand>(&self, command: &C) -> pb::CommandReply {
        self.send_command(command).await;
        self.command_reply(command.command_id()).await
    }
}

/// The reply succeeded.
pub fn succeeded(reply: &pb::CommandReply) -> bool {
    reply.outcome == pb::CommandOutcome::Succeeded as i32
}

/// The reply's refusal reason, or a panic naming the unexpected success.
pub fn rejected(reply: &pb::CommandReply) -> &str {
    assert_eq!(
        reply.outcome,
        pb::CommandOutcome::Rejected as i32,
        "expected a refusal: {reply:?}"
    );
    &reply.reason_code
}

impl TestApp {
    /// Waits until the account service has mirrored the customer as
    /// verified: until then it refuses to debit the customer's accounts.
    pub async fn kyc_mirrored(&self, customer_id: &str) {
        self.wait_for_count(
            &format!(
                "select count(*) from account.customer_kyc \
                 where customer_id = '{customer_id}' and kyc_status = 'verified'"
            ),
            1,
            "the account service's KYC mirror",
        )
        .await;
    }
}
