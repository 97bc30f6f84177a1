//! The replies a screen sends and the words they use.

use chrono::{DateTime, Utc};
use corebank_platform::messaging::{IncomingMessage, OutgoingMessage};
use corebank_platform::time::to_timestamp;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use uuid::Uuid;

use super::reason;
use crate::domain::evaluate::{Evaluation, FiredRule, Outcome};
use crate::domain::rules::Action;

pub(super) fn first_reply(
    command_id: &str,
    saga_id: Uuid,
    evaluation: &Evaluation,
    version: i64,
    deadline: DateTime<Utc>,
) -> pb::CommandReply {
    match evaluation.outcome {
        Outcome::Approve => pb::CommandReply {
            command_id: command_id.to_owned(),
            saga_id: saga_id.to_string(),
            outcome: pb::CommandOutcome::Succeeded as i32,
            detail: format!("approved under rule set {version}"),
            ..Default::default()
        },
        Outcome::Decline => rejected(
            command_id,
            saga_id,
            reason::FRAUD_DECLINED,
            format!(
                "declined under rule set {version}: {}",
                describe(
                    evaluation
                        .fired
                        .iter()
                        .filter(|rule| rule.action == Action::Decline)
                )
            ),
        ),
        Outcome::Review => pb::CommandReply {
            command_id: command_id.to_owned(),
            saga_id: saga_id.to_string(),
            outcome: pb::CommandOutcome::Waiting as i32,
            detail: format!(
                "held for review under rule set {version}: {}",
                describe(
                    evaluation
                        .fired
                        .iter()
                        .filter(|rule| rule.action == Action::Review)
                )
            ),
            wait_deadline: Some(to_timestamp(deadline)),
            ..Default::default()
        },
    }
}

pub(super) fn rejected(
    command_id: &str,
    saga_id: Uuid,
    reason_code: &str,
    detail: String,
) -> pb::CommandReply {
    pb::CommandReply {
        command_id: command_id.to_owned(),
        saga_id: saga_id.to_string(),
        outcome: pb::CommandOutcome::Rejected as i32,
        reason_code: reason_code.to_owned(),
        detail,
        ..Default::default()
    }
}

/// `velocity-1h (5 > 4), watchlist (account:… )`.
fn describe<'a>(rules: impl Iterator<Item = &'a FiredRule>) -> String {
    rules
        .map(|rule| format!("{} ({} > {})", rule.rule_id, rule.value, rule.threshold))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn review_reasons(fired: &[FiredRule]) -> Vec<String> {
    fired
        .iter()
        .filter(|rule| rule.action == Action::Review)
        .map(|rule| format!("{}: {} > {}", rule.rule_id, rule.value, rule.threshold))
        .collect()
}

pub(super) fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Approve => "approve",
        Outcome::Review => "review",
        Outcome::Decline => "decline",
    }
}

/// `reply` as a message to the orchestrator, for saga `saga_id`.
pub(super) fn reply_message(
    reply: pb::CommandReply,
    saga_id: Uuid,
    cause: Option<&IncomingMessage>,
) -> OutgoingMessage {
    let message = OutgoingMessage::reply(
        wire::service::ORCHESTRATOR,
        pb::CommandReply::full_name(),
        reply.encode_to_vec(),
    )
    .with_correlation_id(saga_id);
    match cause {
        Some(cause) => message.caused_by(cause),
        None => message,
    }
}
