//! Domain ⇄ the protobuf messages that travel over RabbitMQ: the events this
//! service publishes and the replies it sends the orchestrator.

use chrono::{DateTime, Utc};
use corebank_platform::messaging::{IncomingMessage, OutgoingMessage};
use corebank_platform::money::Currency;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::Message;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::{Transaction, TransactionKind};

pub fn money(currency: Currency, amount: Decimal) -> pb::Money {
    pb::Money {
        currency: currency.code().to_owned(),
        amount: currency.format(amount),
    }
}

pub fn kind_to_proto(kind: TransactionKind) -> pb::TransactionKind {
    match kind {
        TransactionKind::Transfer => pb::TransactionKind::Transfer,
        TransactionKind::Deposit => pb::TransactionKind::Deposit,
        TransactionKind::Withdrawal => pb::TransactionKind::Withdrawal,
    }
}

fn id(account_id: Option<Uuid>) -> String {
    account_id.map(|id| id.to_string()).unwrap_or_default()
}

/// `transaction.<kind>.requested`: the orchestrator starts a saga for it.
pub fn requested_event(transaction: &Transaction, now: DateTime<Utc>) -> OutgoingMessage {
    let routing_key = match transaction.kind {
        TransactionKind::Transfer => wire::event::TRANSFER_REQUESTED,
        TransactionKind::Deposit => wire::event::DEPOSIT_REQUESTED,
        TransactionKind::Withdrawal => wire::event::WITHDRAWAL_REQUESTED,
    };
    let event = pb::TransactionRequestedEvent {
        transaction_id: transaction.transaction_id.to_string(),
        kind: kind_to_proto(transaction.kind) as i32,
        source_account_id: id(transaction.source_account_id),
        destination_account_id: id(transaction.destination_account_id),
        amount: Some(money(transaction.currency, transaction.amount)),
    };
    OutgoingMessage::event(
        routing_key,
        wire::message_type::<pb::TransactionRequestedEvent>(),
        event.encode_to_vec(),
    )
    .with_occurred_at(now)
}

/// `transaction.<kind>.completed`, caused by the saga's command.
pub fn completed_event(
    transaction: &Transaction,
    saga_id: Uuid,
    cause: &IncomingMessage,
    now: DateTime<Utc>,
) -> OutgoingMessage {
    let event = pb::TransactionCompletedEvent {
        transaction_id: transaction.transaction_id.to_string(),
        kind: kind_to_proto(transaction.kind) as i32,
        journal_id: transaction.journal_id.clone(),
        source_account_id: id(transaction.source_account_id),
        destination_account_id: id(transaction.destination_account_id),
        amount: Some(money(transaction.currency, transaction.amount)),
    };
    let routing_key = format!("transaction.{}.completed", transaction.kind.as_str());
    OutgoingMessage::event(
        &routing_key,
        wire::message_type::<pb::TransactionCompletedEvent>(),
        event.encode_to_vec(),
    )
    .with_correlation_id(saga_id)
    .caused_by(cause)
    .with_occurred_at(now)
}

/// `transaction.<kind>.failed`, caused by the saga's command.
pub fn failed_event(
    transaction: &Transaction,
    saga_id: Uuid,
    cause: &IncomingMessage,
    now: DateTime<Utc>,
) -> OutgoingMessage {
    let event = pb::TransactionFailedEvent {
        transaction_id: transaction.transaction_id.to_string(),
        kind: kind_to_proto(transaction.kind) as i32,
        reason_code: transaction.failure_reason.clone(),
        detail: transaction.failure_detail.clone(),
        source_account_id: id(transaction.source_account_id),
        destination_account_id: id(transaction.destination_account_id),
        amount: Some(money(transaction.currency, transaction.amount)),
    };
    let routing_key = format!("transaction.{}.failed", transaction.kind.as_str());
    OutgoingMessage::event(
        &routing_key,
        wire::message_type::<pb::TransactionFailedEvent>(),
        event.encode_to_vec(),
    )
    .with_correlation_id(saga_id)
    .caused_by(cause)
    .with_occurred_at(now)
}

/// The encoded reply to the orchestrator, sent with a fresh message id each
/// time (a duplicate command gets the stored bytes again).
pub fn reply(
    encoded: Vec<u8>,
    saga_id: Uuid,
    cause: &IncomingMessage,
    now: DateTime<Utc>,
) -> OutgoingMessage {
    OutgoingMessage::reply(
        wire::service::ORCHESTRATOR,
        wire::message_type::<pb::CommandReply>(),
        encoded,
    )
    .with_correlation_id(saga_id)
    .caused_by(cause)
    .with_occurred_at(now)
}
