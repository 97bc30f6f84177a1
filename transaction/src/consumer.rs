//! The saga commands the orchestrator sends this service, AMQP ⇄ domain.
//!
//! A command id is deterministic and a command may be re-sent with a new
//! message id, which the inbox does not recognise; the `command_log` does: a
//! command seen before has no second effect, and its stored reply is sent again.
//! A batch of commands takes a few statements plus one per status change.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use corebank_platform::clock::SharedClock;
use corebank_platform::messaging::{
    BatchError, BatchHandler, Exchange, HandlerError, IncomingMessage, OutgoingMessage, QueueSpec,
    message_span,
};
use corebank_platform::time::from_timestamp;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Move, Outcome, TRANSACTION_ALREADY_TERMINAL, Transaction};
use crate::messages;
use crate::store;

/// The queue of saga commands for this service.
pub fn queue_spec() -> QueueSpec {
    QueueSpec::new(wire::queue::TRANSACTION_COMMANDS)
        .bind(Exchange::Commands, wire::service::TRANSACTION)
}

/// A decoded saga command.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    command_id: String,
    saga_id: Uuid,
    transaction_id: Uuid,
    outcome: Outcome,
    /// MarkProcessing and MarkReview are fire-and-forget; the terminal
    /// commands are answered.
    expects_reply: bool,
}

impl Command {
    fn decode(message: &IncomingMessage) -> Result<Self, HandlerError> {
        let kind = message.message_type.as_str();
        let payload = message.payload.as_slice();
        let (ids, outcome, expects_reply) =
            if kind == wire::message_type::<pb::MarkProcessingCommand>() {
                let command =
                    pb::MarkProcessingCommand::decode(payload).map_err(HandlerError::malformed)?;
                (
                    (command.command_id, command.saga_id, command.transaction_id),
                    Outcome::Processing,
                    false,
                )
            } else if kind == wire::message_type::<pb::MarkReviewCommand>() {
                let command =
                    pb::MarkReviewCommand::decode(payload).map_err(HandlerError::malformed)?;
                let outcome = Outcome::Review {
                    step: command.step,
                    deadline: command.deadline.as_ref().and_then(from_timestamp),
                };
                (
                    (command.command_id, command.saga_id, command.transaction_id),
                    outcome,
                    false,
                )
            } else if kind == wire::message_type::<pb::CompleteTransactionCommand>() {
                let command = pb::CompleteTransactionCommand::decode(payload)
                    .map_err(HandlerError::malformed)?;
                let outcome = Outcome::Completed {
                    journal_id: command.journal_id,
                };
                (
                    (command.command_id, command.saga_id, command.transaction_id),
                    outcome,
                    true,
                )
            } else if kind == wire::message_type::<pb::FailTransactionCommand>() {
                let command =
                    pb::FailTransactionCommand::decode(payload).map_err(HandlerError::malformed)?;
                let outcome = Outcome::Failed {
                    reason_code: domain::failure_reason_code(&command.reason_code),
                    detail: command.detail,
                };
                (
                    (command.command_id, command.saga_id, command.transaction_id),
                    outcome,
                    true,
                )
            } else {
                return Err(HandlerError::permanent(anyhow!(
                    "unknown message type {kind:?}"
                )));
            };
        let (command_id, saga_id, transaction_id) = ids;
        if command_id.is_empty() {
            return Err(HandlerError::malformed(anyhow!(
                "{kind} without command_id"
            )));
        }
        let uuid = |field: &str, text: &str| {
            Uuid::parse_str(text).map_err(|_| {
                HandlerError::malformed(anyhow!("{kind} {field} {text:?} is not a uuid"))
            })
        };
        Ok(Self {
            saga_id: uuid("saga_id", &saga_id)?,
            transaction_id: uuid("transaction_id", &transaction_id)?,
            command_id,
            outcome,
            expects_reply,
        })
    }

    fn reply(
        &self,
        outcome: pb::CommandOutcome,
        reason_code: &str,
        detail: String,
    ) -> pb::CommandReply {
        pb::CommandReply {
            command_id: self.command_id.clone(),
            saga_id: self.saga_id.to_string(),
            outcome: outcome as i32,
            reason_code: reason_code.to_owned(),
            detail,
            ..Default::default()
        }
    }
}

/// Applies saga commands to transactions.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    clock: SharedClock,
}

impl CommandHandler {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

/// How a locked transaction moves as `command` says: the reply, the event
/// that announces how the movement ended (if it just ended), and the
/// transaction as it will be (if it changes; the caller writes it).
fn transition(
    message: &IncomingMessage,
    command: &Command,
    current: &Transaction,
    now: DateTime<Utc>,
) -> (
    pb::CommandReply,
    Option<OutgoingMessage>,
    Option<Transaction>,
) {
    let transaction_id = current.transaction_id;
    let to = command.outcome.status();
    match current.status.transition(to) {
        Ok(Move::Changed) => {
            let updated = store::Change {
                before: current,
                outcome: &command.outcome,
                command_id: &command.command_id,
            }
            .after(now);
            let event = match command.outcome {
                // Intermediate statuses are history rows only; events
                // announce how a movement ended.
                Outcome::Processing | Outcome::Review { .. } => None,
                Outcome::Completed { .. } => Some(messages::completed_event(
                    &updated,
                    command.saga_id,
                    message,
                    now,
                )),
                Outcome::Failed { .. } => Some(messages::failed_event(
                    &updated,
                    command.saga_id,
                    message,
                    now,
                )),
            };
            tracing::debug!(
                %transaction_id,
                from = current.status.as_str(),
                to = to.as_str(),
                saga_id = %command.saga_id,
                "transaction status changed"
            );
            (
                command.reply(pb::CommandOutcome::Succeeded, "", String::new()),
                event,
                Some(updated),
            )
        }
        Ok(Move::Unchanged) => {
            tracing::debug!(%transaction_id, status = current.status.as_str(), to = to.as_str(), "nothing to change");
            (
                command.reply(pb::CommandOutcome::Succeeded, "", String::new()),
                None,
                None,
            )
        }
        Err(illegal) => {
            tracing::error!(
                %transaction_id,
                status = current.status.as_str(),
                to = to.as_str(),
                saga_id = %command.saga_id,
                command_id = %command.command_id,
                "command refused: the transaction already ended the other way"
            );
            (
                command.reply(
                    pb::CommandOutcome::Rejected,
                    TRANSACTION_ALREADY_TERMINAL,
                    illegal.to_string(),
                ),
                None,
                None,
            )
        }
    }
}

impl BatchHandler for CommandHandler {
    /// Applies commands in order in `tx`: their transactions locked at once
    /// (in id order, before the log is read, so a replica applying the same
    /// command has committed by then), the command log read with one
    /// statement, each fresh command's change written, then the log rows and
    /// the outgoing messages with one statement each.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        let mut commands = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            commands.push(Command::decode(message).map_err(|error| BatchError::at(index, error))?);
        }
        let transaction_ids: Vec<Uuid> = commands.iter().map(|c| c.transaction_id).collect();
        let mut transactions = store::lock_all(tx, &transaction_ids)
            .await
            .map_err(BatchError::whole)?;
        let command_ids: Vec<&str> = commands.iter().map(|c| c.command_id.as_str()).collect();
        let mut logged = store::logged_commands(tx, &command_ids)
            .await
            .map_err(BatchError::whole)?;
        let now = self.clock.now();
        let mut log = Vec::new();
        let mut outgoing = Vec::new();
        // Each change with the transaction as it was before it.
        let mut changes: Vec<(Option<Transaction>, &Command)> = Vec::new();
        for (index, (message, command)) in messages.iter().zip(&commands).enumerate() {
            // Outgoing messages are built in the command's span, so they
            // continue its trace.
            let span = message_span(message);
            if let Some(stored) = logged.get(&command.command_id) {
                span.in_scope(|| {
                    tracing::info!(command_id = %command.command_id, "duplicate command, replaying its reply");
                    if let Some(stored) = stored {
                        outgoing.push(messages::reply(stored.clone(), command.saga_id, message, now));
                    }
                });
                continue;
            }
            let transaction_id = command.transaction_id;
            let Some(current) = transactions.get(&transaction_id) else {
                return Err(BatchError::at(
                    index,
                    HandlerError::permanent(anyhow!("transaction {transaction_id} not found")),
                ));
            };
            let (reply, event, updated) =
                span.in_scope(|| transition(message, command, current, now));
            outgoing.extend(event);
            if let Some(updated) = updated {
                changes.push((transactions.insert(transaction_id, updated), command));
            }
            let reply = command.expects_reply.then(|| reply.encode_to_vec());
            if let Some(encoded) = &reply {
                outgoing.push(
                    span.in_scope(|| {
                        messages::reply(encoded.clone(), command.saga_id, message, now)
                    }),
                );
            }
            logged.insert(command.command_id.clone(), reply.clone());
            log.push(store::LoggedCommand {
                command_id: &command.command_id,
                message_type: &message.message_type,
                transaction_id,
                reply,
            });
        }
        let changes: Vec<store::Change<'_>> = changes
            .iter()
            .filter_map(|(before, command)| {
                before.as_ref().map(|before| store::Change {
                    before,
                    outcome: &command.outcome,
                    command_id: &command.command_id,
                })
            })
            .collect();
        store::write_batch(tx, &changes, &log, outgoing, now)
            .await
            .map_err(BatchError::whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(message_type: String, payload: Vec<u8>) -> IncomingMessage {
        IncomingMessage {
            message_id: Uuid::now_v7(),
            message_type,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            occurred_at: None,
            schema_version: 1,
            attempt: 1,
            exchange: "t.commands".to_owned(),
            routing_key: wire::service::TRANSACTION.to_owned(),
            redelivered: false,
            payload,
        }
    }

    #[test]
    fn a_fail_command_decodes_with_its_reason() {
        let (saga, transaction) = (Uuid::now_v7(), Uuid::now_v7());
        let payload = pb::FailTransactionCommand {
            command_id: format!("{saga}:fail:compensate"),
            saga_id: saga.to_string(),
            transaction_id: transaction.to_string(),
            reason_code: "INSUFFICIENT_FUNDS".to_owned(),
            detail: "balance too low".to_owned(),
        };
        let command = Command::decode(&incoming(
            wire::message_type::<pb::FailTransactionCommand>(),
            payload.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(command.transaction_id, transaction);
        assert!(command.expects_reply);
        assert_eq!(
            command.outcome,
            Outcome::Failed {
                reason_code: "INSUFFICIENT_FUNDS".to_owned(),
                detail: "balance too low".to_owned()
            }
        );
    }

    #[test]
    fn a_mark_review_decodes_to_review_with_no_reply_expected() {
        let (saga, transaction) = (Uuid::now_v7(), Uuid::now_v7());
        let deadline = DateTime::from_timestamp(1_700_000_600, 0).expect("valid time");
        let payload = pb::MarkReviewCommand {
            command_id: format!("{saga}:mark_review:forward"),
            saga_id: saga.to_string(),
            transaction_id: transaction.to_string(),
            step: "screen".to_owned(),
            deadline: Some(corebank_platform::time::to_timestamp(deadline)),
        };
        let command = Command::decode(&incoming(
            wire::message_type::<pb::MarkReviewCommand>(),
            payload.encode_to_vec(),
        ))
        .unwrap();
        assert!(!command.expects_reply);
        assert_eq!(
            command.outcome,
            Outcome::Review {
                step: "screen".to_owned(),
                deadline: Some(deadline)
            }
        );
    }

    #[test]
    fn an_unknown_type_is_permanent_and_garbage_is_malformed() {
        let unknown =
            Command::decode(&incoming("corebank.v1.Nope".to_owned(), vec![])).unwrap_err();
        assert!(matches!(unknown, HandlerError::Permanent(_)));
        let garbage = Command::decode(&incoming(
            wire::message_type::<pb::CompleteTransactionCommand>(),
            vec![0xff, 0xff],
        ))
        .unwrap_err();
        assert!(matches!(garbage, HandlerError::Malformed(_)));
    }

    #[test]
    fn a_command_without_ids_is_malformed() {
        let payload = pb::MarkProcessingCommand {
            command_id: "c".to_owned(),
            saga_id: "not-a-uuid".to_owned(),
            transaction_id: Uuid::now_v7().to_string(),
        };
        let error = Command::decode(&incoming(
            wire::message_type::<pb::MarkProcessingCommand>(),
            payload.encode_to_vec(),
        ))
        .unwrap_err();
        assert!(matches!(error, HandlerError::Malformed(_)));
    }
}
