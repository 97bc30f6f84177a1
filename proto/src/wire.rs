//! The messaging contract every service shares: routing keys, queue names,
//! message types and command ids. Only names live here, no behaviour.

use prost::Name;
use uuid::Uuid;

/// Routing keys on the `commands` exchange (one per participant service).
pub mod service {
    pub const ACCOUNT: &str = "account";
    pub const TRANSACTION: &str = "transaction";
    pub const FRAUD: &str = "fraud";
    /// Routing key of the `replies` exchange.
    pub const ORCHESTRATOR: &str = "orchestrator";
}

/// Routing keys on the `events` exchange: `<service>.<entity>.<event>`.
pub mod event {
    pub const TRANSFER_REQUESTED: &str = "transaction.transfer.requested";
    pub const DEPOSIT_REQUESTED: &str = "transaction.deposit.requested";
    pub const WITHDRAWAL_REQUESTED: &str = "transaction.withdrawal.requested";
    /// Pattern matching every `*.requested` event of the transaction service.
    pub const ANY_REQUESTED: &str = "transaction.*.requested";
    pub const TRANSFER_COMPLETED: &str = "transaction.transfer.completed";
    pub const TRANSFER_FAILED: &str = "transaction.transfer.failed";
    pub const FUNDS_RESERVED: &str = "account.funds.reserved";
    pub const FUNDS_RELEASED: &str = "account.funds.released";
    pub const JOURNAL_POSTED: &str = "account.journal.posted";
    pub const CUSTOMER_KYC_CHANGED: &str = "customer.kyc.changed";
    pub const ACCOUNT_OPENED: &str = "account.account.opened";
    pub const ACCOUNT_FROZEN: &str = "account.account.frozen";
    pub const ACCOUNT_UNFROZEN: &str = "account.account.unfrozen";
    pub const ACCOUNT_CLOSED: &str = "account.account.closed";
    /// Pattern matching every account lifecycle event.
    pub const ANY_ACCOUNT_LIFECYCLE: &str = "account.account.*";
    /// Pattern matching every terminal transaction event.
    pub const ANY_TRANSACTION_COMPLETED: &str = "transaction.*.completed";
    pub const ANY_TRANSACTION_FAILED: &str = "transaction.*.failed";
    pub const FRAUD_DECISION_MADE: &str = "fraud.decision.made";
    pub const FRAUD_REVIEW_OPENED: &str = "fraud.review.opened";
    pub const FRAUD_REVIEW_DECIDED: &str = "fraud.review.decided";
    pub const FRAUD_ALERT_RAISED: &str = "fraud.alert.raised";
}

/// Un-namespaced queue names (the namespace prefix is added by the platform).
pub mod queue {
    /// Saga commands for the account service.
    pub const ACCOUNT_COMMANDS: &str = "account.commands";
    /// KYC changes the account service mirrors.
    pub const ACCOUNT_KYC: &str = "account.kyc";
    /// Saga commands for the transaction service.
    pub const TRANSACTION_COMMANDS: &str = "transaction.commands";
    /// Saga commands for the fraud service.
    pub const FRAUD_COMMANDS: &str = "fraud.commands";
    /// Events the fraud service keeps features from.
    pub const FRAUD_EVENTS: &str = "fraud.events";
    /// Events the reporting service projects into its read models.
    pub const REPORTING_EVENTS: &str = "reporting.events";
    /// Replies to the orchestrator.
    pub const ORCHESTRATOR_REPLIES: &str = "orchestrator.replies";
    /// Requested movements that start sagas.
    pub const ORCHESTRATOR_REQUESTS: &str = "orchestrator.requests";
}

/// The message-type header of `M`: its fully qualified protobuf name.
pub fn message_type<M: Name>() -> String {
    M::full_name()
}

/// Which way a saga step goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Compensate,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Compensate => "compensate",
        }
    }
}

/// The deterministic id of a saga command: `<saga_id>:<step>:<direction>`.
/// A re-sent command keeps it; participants deduplicate on it.
pub fn command_id(saga_id: Uuid, step: &str, direction: Direction) -> String {
    format!("{saga_id}:{step}:{}", direction.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_id_is_the_same_for_every_send_of_one_step() {
        let saga = Uuid::now_v7();
        assert_eq!(
            command_id(saga, "reserve", Direction::Forward),
            command_id(saga, "reserve", Direction::Forward)
        );
        assert_ne!(
            command_id(saga, "reserve", Direction::Forward),
            command_id(saga, "reserve", Direction::Compensate)
        );
        assert!(command_id(saga, "post", Direction::Forward).ends_with(":post:forward"));
    }

    #[test]
    fn a_message_type_is_the_protobuf_full_name() {
        assert_eq!(
            message_type::<crate::v1::CommandReply>(),
            "corebank.v1.CommandReply"
        );
    }
}
