//! protobuf ⇄ domain for what travels over RabbitMQ: the commands the engine
//! sends, the replies it awaits and the events that start sagas.

use chrono::{DateTime, Utc};
use corebank_platform::messaging::OutgoingMessage;
use corebank_platform::money::Currency;
use corebank_platform::time::{from_timestamp, to_timestamp};
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::Message;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::{Command, Event, OutgoingCommand, ReplyOutcome, Saga, SagaData, SagaType};

/// The outbox message of `command`: a fresh message id, the deterministic
/// command id in the payload, the saga id as correlation id, and the trace
/// context of the span sending it (the transaction's own without traces).
pub fn command_message(
    saga: &Saga,
    command: &OutgoingCommand,
    now: DateTime<Utc>,
    causation_id: Option<Uuid>,
) -> OutgoingMessage {
    let command_id = command.command_id.clone();
    let saga_id = saga.saga_id.to_string();
    let transaction_id = saga.transaction_id.to_string();
    let (message_type, payload) = match &command.command {
        Command::ReserveFunds {
            account_id,
            amount,
            currency,
        } => encode(pb::ReserveFundsCommand {
            command_id,
            saga_id,
            account_id: account_id.to_string(),
            amount: Some(money(*amount, currency)),
            transaction_id,
        }),
        Command::ReleaseFunds {
            account_id,
            reserve_command_id,
        } => encode(pb::ReleaseFundsCommand {
            command_id,
            saga_id,
            reserve_command_id: reserve_command_id.clone(),
            account_id: account_id.to_string(),
        }),
        Command::PostTransfer {
            source_account_id,
            destination_account_id,
            reserve_command_id,
        } => encode(pb::PostTransferCommand {
            command_id,
            saga_id,
            reserve_command_id: reserve_command_id.clone(),
            source_account_id: source_account_id.to_string(),
            destination_account_id: destination_account_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            transaction_id,
        }),
        Command::PostDeposit {
            account_id,
            amount,
            currency,
        } => encode(pb::PostDepositCommand {
            command_id,
            saga_id,
            account_id: account_id.to_string(),
            amount: Some(money(*amount, currency)),
            transaction_id,
        }),
        Command::CompleteTransaction { journal_id } => encode(pb::CompleteTransactionCommand {
            command_id,
            saga_id,
            transaction_id,
            journal_id: journal_id.clone(),
        }),
        Command::FailTransaction {
            reason_code,
            detail,
        } => encode(pb::FailTransactionCommand {
            command_id,
            saga_id,
            transaction_id,
            reason_code: reason_code.clone(),
            detail: detail.clone(),
        }),
        Command::ScreenTransaction {
            kind,
            source_account_id,
            destination_account_id,
            amount,
            currency,
            requested_at,
        } => encode(pb::ScreenTransactionCommand {
            command_id,
            saga_id,
            transaction_id,
            kind: kind_to_proto(*kind) as i32,
            source_account_id: source_account_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            destination_account_id: destination_account_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            amount: Some(money(*amount, currency)),
            requested_at: Some(to_timestamp(*requested_at)),
        }),
        Command::MarkReview { step, deadline } => encode(pb::MarkReviewCommand {
            command_id,
            saga_id,
            transaction_id,
            step: (*step).to_owned(),
            deadline: Some(to_timestamp(*deadline)),
        }),
    };
    let message = OutgoingMessage::command(command.participant, message_type, payload)
        .with_correlation_id(saga.saga_id)
        .with_traceparent(corebank_platform::messaging::current_traceparent_or(
            saga.transaction_id,
        ))
        .with_occurred_at(now);
    match causation_id {
        Some(causation_id) => message.with_causation_id(causation_id),
        None => message,
    }
}

fn kind_to_proto(kind: SagaType) -> pb::TransactionKind {
    match kind {
        SagaType::Transfer => pb::TransactionKind::Transfer,
        SagaType::Deposit => pb::TransactionKind::Deposit,
        SagaType::Withdrawal => pb::TransactionKind::Withdrawal,
    }
}

fn encode<M: prost::Name>(message: M) -> (String, Vec<u8>) {
    (wire::message_type::<M>(), message.encode_to_vec())
}

fn money(amount: Decimal, currency: &str) -> pb::Money {
    let amount = Currency::parse(currency)
        .map(|known| known.format(amount))
        .unwrap_or_else(|_| amount.to_string());
    pb::Money {
        currency: currency.to_owned(),
        amount,
    }
}

/// Why a message cannot be used; it is parked, never retried.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("cannot decode {0}: {1}")]
    Payload(&'static str, prost::DecodeError),
    #[error("invalid {field}: {why}")]
    Field { field: &'static str, why: String },
}

fn invalid(field: &'static str, why: impl Into<String>) -> Undecodable {
    Undecodable::Field {
        field,
        why: why.into(),
    }
}

/// A decoded `CommandReply`: the saga it belongs to and the engine event.
pub fn decode_reply(payload: &[u8]) -> Result<(Uuid, Event), Undecodable> {
    let reply = pb::CommandReply::decode(payload)
        .map_err(|error| Undecodable::Payload("CommandReply", error))?;
    let saga_id =
        Uuid::parse_str(&reply.saga_id).map_err(|_| invalid("saga_id", "is not a uuid"))?;
    let outcome = match pb::CommandOutcome::try_from(reply.outcome) {
        Ok(pb::CommandOutcome::Succeeded) => ReplyOutcome::Succeeded {
            hold_id: Some(reply.hold_id).filter(|id| !id.is_empty()),
            journal_id: Some(reply.journal_id).filter(|id| !id.is_empty()),
        },
        Ok(pb::CommandOutcome::Rejected) => ReplyOutcome::Rejected {
            reason_code: reply.reason_code,
            detail: reply.detail,
        },
        Ok(pb::CommandOutcome::Waiting) => {
            // A wait without a deadline could park a saga forever: refuse it.
            let deadline = reply
                .wait_deadline
                .as_ref()
                .ok_or_else(|| invalid("wait_deadline", "is required with WAITING"))?;
            ReplyOutcome::Waiting {
                deadline: from_timestamp(deadline)
                    .ok_or_else(|| invalid("wait_deadline", "is out of range"))?,
            }
        }
        _ => return Err(invalid("outcome", "must be SUCCEEDED, REJECTED or WAITING")),
    };
    Ok((
        saga_id,
        Event::Reply {
            command_id: reply.command_id,
            outcome,
        },
    ))
}

/// A movement to run as a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub saga_type: SagaType,
    pub transaction_id: Uuid,
    pub data: SagaData,
}

/// A decoded `TransactionRequestedEvent`.
pub fn decode_requested(payload: &[u8]) -> Result<Requested, Undecodable> {
    let event = pb::TransactionRequestedEvent::decode(payload)
        .map_err(|error| Undecodable::Payload("TransactionRequestedEvent", error))?;
    let transaction_id = Uuid::parse_str(&event.transaction_id)
        .map_err(|_| invalid("transaction_id", "is not a uuid"))?;
    let saga_type = match pb::TransactionKind::try_from(event.kind) {
        Ok(pb::TransactionKind::Transfer) => SagaType::Transfer,
        Ok(pb::TransactionKind::Deposit) => SagaType::Deposit,
        Ok(pb::TransactionKind::Withdrawal) => SagaType::Withdrawal,
        _ => return Err(invalid("kind", "must be TRANSFER, DEPOSIT or WITHDRAWAL")),
    };
    let account =
        |field: &'static str, text: &str, needed: bool| -> Result<Option<Uuid>, Undecodable> {
            match (text.is_empty(), needed) {
                (true, true) => Err(invalid(
                    field,
                    format!("is required for a {}", saga_type.as_str()),
                )),
                (true, false) => Ok(None),
                (false, true) => Uuid::parse_str(text)
                    .map(Some)
                    .map_err(|_| invalid(field, "is not a uuid")),
                (false, false) => Err(invalid(
                    field,
                    format!("must be empty for a {}", saga_type.as_str()),
                )),
            }
        };
    let source_account_id = account(
        "source_account_id",
        &event.source_account_id,
        saga_type != SagaType::Deposit,
    )?;
    let destination_account_id = account(
        "destination_account_id",
        &event.destination_account_id,
        saga_type != SagaType::Withdrawal,
    )?;
    let money = event
        .amount
        .ok_or_else(|| invalid("amount", "is required"))?;
    let currency = Currency::parse(&money.currency)
        .map_err(|error| invalid("amount.currency", error.to_string()))?;
    let amount: Decimal = money
        .amount
        .parse()
        .map_err(|_| invalid("amount.amount", "is not a decimal"))?;
    if amount <= Decimal::ZERO {
        return Err(invalid("amount.amount", "must be positive"));
    }
    Ok(Requested {
        saga_type,
        transaction_id,
        data: SagaData {
            source_account_id,
            destination_account_id,
            amount,
            currency: currency.code().to_owned(),
            hold_id: None,
            journal_id: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(kind: pb::TransactionKind, source: &str, destination: &str) -> Vec<u8> {
        pb::TransactionRequestedEvent {
            transaction_id: Uuid::now_v7().to_string(),
            kind: kind as i32,
            source_account_id: source.to_owned(),
            destination_account_id: destination.to_owned(),
            amount: Some(pb::Money {
                currency: "USD".to_owned(),
                amount: "10.50".to_owned(),
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_requested_transfer_decodes_with_both_accounts_and_a_decimal_amount() {
        let (source, destination) = (Uuid::now_v7(), Uuid::now_v7());
        let decoded = decode_requested(&requested(
            pb::TransactionKind::Transfer,
            &source.to_string(),
            &destination.to_string(),
        ))
        .expect("decodes");
        assert_eq!(decoded.saga_type, SagaType::Transfer);
        assert_eq!(decoded.data.source_account_id, Some(source));
        assert_eq!(decoded.data.amount, Decimal::new(1050, 2));
    }

    #[test]
    fn a_deposit_with_a_source_account_or_a_transfer_without_one_is_undecodable() {
        let account = Uuid::now_v7().to_string();
        assert!(
            decode_requested(&requested(pb::TransactionKind::Deposit, &account, &account)).is_err()
        );
        assert!(decode_requested(&requested(pb::TransactionKind::Transfer, "", &account)).is_err());
        assert!(
            decode_requested(&requested(pb::TransactionKind::Withdrawal, &account, "")).is_ok()
        );
    }

    #[test]
    fn a_waiting_reply_decodes_with_its_deadline_and_is_undecodable_without_one() {
        let deadline = DateTime::from_timestamp(1_700_000_600, 0).expect("valid time");
        let mut reply = pb::CommandReply {
            saga_id: Uuid::now_v7().to_string(),
            command_id: "s:screen:forward".to_owned(),
            outcome: pb::CommandOutcome::Waiting as i32,
            wait_deadline: Some(to_timestamp(deadline)),
            ..Default::default()
        };
        let (_, event) = decode_reply(&reply.encode_to_vec()).expect("decodes");
        assert_eq!(
            event,
            Event::Reply {
                command_id: "s:screen:forward".to_owned(),
                outcome: ReplyOutcome::Waiting { deadline }
            }
        );
        reply.wait_deadline = None;
        assert!(decode_reply(&reply.encode_to_vec()).is_err());
    }

    #[test]
    fn a_screen_command_carries_the_kind_the_accounts_and_the_requested_time() {
        let requested_at = DateTime::from_timestamp(1_700_000_000, 0).expect("valid time");
        let data = SagaData {
            source_account_id: None,
            destination_account_id: Some(Uuid::now_v7()),
            amount: Decimal::new(1000, 2),
            currency: "USD".to_owned(),
            hold_id: None,
            journal_id: None,
        };
        let saga = crate::domain::Engine::new(
            SagaType::Deposit.definition(),
            &crate::domain::EngineConfig::default(),
        )
        .start(Uuid::now_v7(), Uuid::now_v7(), data.clone(), requested_at)
        .saga;
        let command = OutgoingCommand {
            step: "screen",
            direction: wire::Direction::Forward,
            participant: wire::service::FRAUD,
            command_id: "c".to_owned(),
            command: Command::ScreenTransaction {
                kind: SagaType::Deposit,
                source_account_id: None,
                destination_account_id: data.destination_account_id,
                amount: data.amount,
                currency: data.currency.clone(),
                requested_at,
            },
            attempt: 1,
        };
        let message = command_message(&saga, &command, requested_at, None);
        assert_eq!(message.routing_key, "fraud");
        let screen =
            pb::ScreenTransactionCommand::decode(message.payload.as_slice()).expect("decodes");
        assert_eq!(screen.kind, pb::TransactionKind::Deposit as i32);
        assert_eq!(screen.source_account_id, "");
        assert_eq!(screen.amount.map(|m| m.amount).as_deref(), Some("10.00"));
        assert_eq!(screen.requested_at, Some(to_timestamp(requested_at)));
    }

    #[test]
    fn a_reply_without_an_outcome_is_undecodable() {
        let reply = pb::CommandReply {
            saga_id: Uuid::now_v7().to_string(),
            command_id: "x".to_owned(),
            ..Default::default()
        };
        assert!(decode_reply(&reply.encode_to_vec()).is_err());
    }
}
