//! The fraud service as a saga participant (AMQP ⇄ domain): it screens
//! `ScreenTransactionCommand`s and keeps its local state from events.
//!
//! A screen applies at most once per command id: the decision row keeps the
//! first reply, and a re-sent command gets it again (or, for a review that has
//! been decided since, the final answer). APPROVE is a SUCCEEDED reply,
//! DECLINE a REJECTED one with reason `FRAUD_DECLINED` and the rules that
//! fired, REVIEW a WAITING one with the review's deadline; the final answer of
//! a review follows under the same command id (see [`settle`]).

use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use corebank_platform::clock::SharedClock;
use corebank_platform::messaging::{
    self, BatchError, Exchange, Handler, HandlerError, IncomingMessage, OutgoingMessage, QueueSpec,
};
use corebank_platform::time::{from_timestamp, to_timestamp};
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::evaluate::{Outcome, evaluate};
use crate::domain::features::{FeatureSnapshot, TransactionKind};
use crate::domain::rules::{RuleSet, TimeoutAction};
use crate::store::decisions::{self, AlertRow, DecisionRow};
use crate::store::features::{self, Movement, Recorded};
use crate::store::reviews::{self, ReviewRow};
use crate::store::{self, FraudStore, profiles};

mod batch;
mod events;
mod replies;
mod settle;

pub use events::EventHandler;
use replies::{first_reply, outcome_name, rejected, reply_message, review_reasons};
pub use settle::{Verdict, expire_reviews, final_reply, settle};

/// Reason codes of the fraud service's refusals.
pub mod reason {
    /// The screen (or the review after it) declined the movement.
    pub const FRAUD_DECLINED: &str = "FRAUD_DECLINED";
    /// A command field did not parse: refused, never screened as clean.
    pub const INVALID_COMMAND: &str = "INVALID_COMMAND";
}

/// Screen commands for this service.
pub fn command_queue() -> QueueSpec {
    QueueSpec::new(wire::queue::FRAUD_COMMANDS).bind(Exchange::Commands, wire::service::FRAUD)
}

/// The events features come from.
pub fn event_queue() -> QueueSpec {
    QueueSpec::new(wire::queue::FRAUD_EVENTS)
        .bind(Exchange::Events, wire::event::ACCOUNT_OPENED)
        .bind(Exchange::Events, wire::event::CUSTOMER_KYC_CHANGED)
        .bind(Exchange::Events, "transaction.*.completed")
        .bind(Exchange::Events, "transaction.*.failed")
}

/// Screens money movements.
#[derive(Debug, Clone)]
pub struct ScreenHandler {
    clock: SharedClock,
    review_deadline: Duration,
}

impl ScreenHandler {
    pub fn new(clock: SharedClock, review_deadline: Duration) -> Self {
        Self {
            clock,
            review_deadline,
        }
    }
}

impl Handler for ScreenHandler {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> Result<(), HandlerError> {
        let (command, saga_id) = decode(message)?;
        let now = self.clock.now();
        // A valid command is recorded first; the same statement says whether
        // it was decided before (a redelivery), and only then is that
        // decision read.
        let (reply, mut outgoing, decision) = match movement(&command) {
            Ok(movement) => {
                let recorded = features::record(tx, &movement, &command.command_id, now).await?;
                let prior = match recorded.decided {
                    true => decisions::by_command(tx, &command.command_id).await?,
                    false => None,
                };
                match prior {
                    Some(decision) => (replay(tx, &decision).await?, Vec::new(), None),
                    None => {
                        let screened = screen(
                            tx,
                            &command,
                            saga_id,
                            &movement,
                            &recorded,
                            self.review_deadline,
                            now,
                            message,
                        )
                        .await?;
                        (screened.reply, screened.events, screened.decision)
                    }
                }
            }
            Err(problem) => match decisions::by_command(tx, &command.command_id).await? {
                Some(decision) => (replay(tx, &decision).await?, Vec::new(), None),
                None => {
                    tracing::warn!(command_id = %command.command_id, %problem, "screen command refused");
                    let reply = rejected(
                        &command.command_id,
                        saga_id,
                        reason::INVALID_COMMAND,
                        problem,
                    );
                    (reply, Vec::new(), None)
                }
            },
        };
        outgoing.push(reply_message(reply, saga_id, Some(message)));
        // The decision (when not stored yet), its events and the reply: one statement.
        match decision {
            Some(decision) => decisions::insert_sending(tx, &decision, outgoing).await?,
            None => messaging::enqueue_all(tx, outgoing).await?,
        }
        Ok(())
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        batch::screen_batch(self, tx, messages).await
    }
}

/// A screen command and its saga's id, or why the message is not one.
fn decode(message: &IncomingMessage) -> Result<(pb::ScreenTransactionCommand, Uuid), HandlerError> {
    if message.message_type != pb::ScreenTransactionCommand::full_name() {
        return Err(HandlerError::permanent(anyhow!(
            "unknown command type {:?}",
            message.message_type
        )));
    }
    let command = pb::ScreenTransactionCommand::decode(message.payload.as_slice())
        .map_err(HandlerError::malformed)?;
    let saga_id = Uuid::parse_str(&command.saga_id).map_err(|_| {
        HandlerError::malformed(anyhow!("saga_id {:?} is not a uuid", command.saga_id))
    })?;
    if command.command_id.is_empty() {
        return Err(HandlerError::malformed(anyhow!("command_id is empty")));
    }
    Ok((command, saga_id))
}

/// The movement a command describes, or what is wrong with it.
fn movement(command: &pb::ScreenTransactionCommand) -> Result<Movement, String> {
    let transaction_id = Uuid::parse_str(&command.transaction_id)
        .map_err(|_| format!("transaction_id {:?} is not a uuid", command.transaction_id))?;
    let account = |text: &str, field: &str| -> Result<Option<Uuid>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        Uuid::parse_str(text)
            .map(Some)
            .map_err(|_| format!("{field} {text:?} is not a uuid"))
    };
    let source_account_id = account(&command.source_account_id, "source_account_id")?;
    let destination_account_id =
        account(&command.destination_account_id, "destination_account_id")?;
    let kind = match pb::TransactionKind::try_from(command.kind) {
        Ok(pb::TransactionKind::Transfer) => TransactionKind::Transfer,
        Ok(pb::TransactionKind::Deposit) => TransactionKind::Deposit,
        Ok(pb::TransactionKind::Withdrawal) => TransactionKind::Withdrawal,
        _ => return Err(format!("kind {} is not a movement", command.kind)),
    };
    let shape_ok = match kind {
        TransactionKind::Transfer => {
            source_account_id.is_some() && destination_account_id.is_some()
        }
        TransactionKind::Deposit => source_account_id.is_none() && destination_account_id.is_some(),
        TransactionKind::Withdrawal => {
            source_account_id.is_some() && destination_account_id.is_none()
        }
    };
    if !shape_ok {
        return Err(format!("a {} names the wrong accounts", kind.as_str()));
    }
    let money = command.amount.as_ref().ok_or("amount is missing")?;
    let amount: Decimal = money
        .amount
        .parse()
        .map_err(|_| format!("amount {:?} is not a decimal", money.amount))?;
    if amount <= Decimal::ZERO || money.currency.len() != 3 {
        return Err(format!(
            "amount {} {} is not a positive amount",
            money.amount, money.currency
        ));
    }
    Ok(Movement {
        transaction_id,
        kind,
        source_account_id,
        destination_account_id,
        amount,
        currency: money.currency.clone(),
    })
}

/// What a screen decided: the reply, the events, and the decision when it
/// is still to be stored (with the reply, in one statement; a decision that
/// opened a review or raised an alert is stored before those).
struct Screened {
    reply: pb::CommandReply,
    events: Vec<OutgoingMessage>,
    decision: Option<DecisionRow>,
}

/// Computes a recorded movement's features, evaluates its rules and stores
/// what the decision opened (a review, an alert); answers the reply, the
/// events and the decision.
#[allow(clippy::too_many_arguments)]
async fn screen(
    tx: &mut PgConnection,
    command: &pb::ScreenTransactionCommand,
    saga_id: Uuid,
    movement: &Movement,
    recorded: &Recorded,
    default_deadline: Duration,
    now: DateTime<Utc>,
    cause: &IncomingMessage,
) -> Result<Screened, HandlerError> {
    let started = std::time::Instant::now();
    let snapshot = features::snapshot(tx, movement, recorded, now).await?;
    let screened = decide(
        tx,
        command,
        saga_id,
        movement,
        &recorded.rules,
        snapshot,
        default_deadline,
        now,
        cause,
    )
    .await?;
    metrics::histogram!("corebank_fraud_screen_seconds").record(started.elapsed().as_secs_f64());
    Ok(screened)
}

/// Evaluates `rules` over a movement's features and stores what the
/// decision opened (a review, an alert); answers the reply, the events and
/// the decision.
#[allow(clippy::too_many_arguments)]
async fn decide(
    tx: &mut PgConnection,
    command: &pb::ScreenTransactionCommand,
    saga_id: Uuid,
    movement: &Movement,
    rules: &RuleSet,
    snapshot: FeatureSnapshot,
    default_deadline: Duration,
    now: DateTime<Utc>,
    cause: &IncomingMessage,
) -> Result<Screened, HandlerError> {
    let evaluation = evaluate(rules, &snapshot);
    let decision_id = Uuid::now_v7();
    let deadline = now
        + chrono::Duration::from_std(evaluation.review_deadline.unwrap_or(default_deadline))
            .unwrap_or(chrono::Duration::hours(24));
    let reply = first_reply(
        &command.command_id,
        saga_id,
        &evaluation,
        rules.version,
        deadline,
    );
    let outcome = outcome_name(evaluation.outcome);
    let decision = DecisionRow {
        decision_id,
        command_id: command.command_id.clone(),
        transaction_id: movement.transaction_id,
        saga_id,
        outcome: outcome.to_owned(),
        rule_set_version: rules.version,
        features: Json(snapshot),
        fired: Json(evaluation.fired.clone()),
        reply: reply.encode_to_vec(),
        source_account_id: movement.source_account_id,
        destination_account_id: movement.destination_account_id,
        created_at: now,
    };
    // A review or an alert refers to its decision: then it is stored first.
    let decision = if evaluation.outcome == Outcome::Review || !evaluation.alerts.is_empty() {
        decisions::insert(tx, &decision).await?;
        None
    } else {
        Some(decision)
    };
    let fired_names: Vec<String> = evaluation
        .fired
        .iter()
        .map(|rule| rule.rule_id.clone())
        .collect();
    let mut events = vec![OutgoingMessage::event_of(
        wire::event::FRAUD_DECISION_MADE,
        &pb::FraudDecisionMadeEvent {
            decision_id: decision_id.to_string(),
            transaction_id: movement.transaction_id.to_string(),
            outcome: outcome.to_owned(),
            rule_set_version: rules.version,
            fired_rules: fired_names,
            source_account_id: text(movement.source_account_id),
            destination_account_id: text(movement.destination_account_id),
            amount: Some(pb::Money {
                currency: movement.currency.clone(),
                amount: movement.amount.to_string(),
            }),
        },
    )];
    if evaluation.outcome == Outcome::Review {
        let review = ReviewRow {
            review_id: Uuid::now_v7(),
            decision_id,
            transaction_id: movement.transaction_id,
            saga_id,
            command_id: command.command_id.clone(),
            state: "open".to_owned(),
            deadline,
            timeout_action: match evaluation.timeout_action {
                TimeoutAction::Approve => "approve",
                TimeoutAction::Decline => "decline",
            }
            .to_owned(),
            decided_by: None,
            decision_reason: None,
            automatic: false,
            decided_at: None,
            created_at: now,
        };
        reviews::insert(tx, &review).await?;
        events.push(OutgoingMessage::event_of(
            wire::event::FRAUD_REVIEW_OPENED,
            &pb::FraudReviewOpenedEvent {
                review_id: review.review_id.to_string(),
                transaction_id: movement.transaction_id.to_string(),
                deadline: Some(to_timestamp(deadline)),
                reasons: review_reasons(&evaluation.fired),
            },
        ));
    }
    if !evaluation.alerts.is_empty() {
        let alert = AlertRow {
            alert_id: Uuid::now_v7(),
            decision_id,
            transaction_id: movement.transaction_id,
            account_id: movement
                .source_account_id
                .or(movement.destination_account_id),
            rules: Json(evaluation.alerts.clone()),
            created_at: now,
        };
        decisions::insert_alert(tx, &alert).await?;
        events.push(OutgoingMessage::event_of(
            wire::event::FRAUD_ALERT_RAISED,
            &pb::FraudAlertRaisedEvent {
                alert_id: alert.alert_id.to_string(),
                transaction_id: movement.transaction_id.to_string(),
                account_id: text(alert.account_id),
                rules: evaluation
                    .alerts
                    .iter()
                    .map(|rule| rule.rule_id.clone())
                    .collect(),
            },
        ));
    }
    let events = events
        .into_iter()
        .map(|message| message.with_correlation_id(saga_id).caused_by(cause))
        .collect();
    metrics::counter!("corebank_fraud_decisions_total", "outcome" => outcome).increment(1);
    // One line per money movement is the saga's; a screening says more only
    // when it held or refused the movement.
    if outcome == "approve" {
        tracing::debug!(transaction_id = %movement.transaction_id, rule_set_version = rules.version, "movement screened");
    } else {
        tracing::info!(
            transaction_id = %movement.transaction_id,
            outcome,
            rule_set_version = rules.version,
            fired = evaluation.fired.len(),
            "movement screened"
        );
    }
    Ok(Screened {
        reply,
        events,
        decision,
    })
}

/// The answer to a screen seen before: the final one once its review was
/// decided, else the first one stored.
async fn replay(
    tx: &mut PgConnection,
    decision: &DecisionRow,
) -> Result<pb::CommandReply, HandlerError> {
    if decision.outcome == "review"
        && let Some(review) = reviews::by_decision(tx, decision.decision_id).await?
        && review.state != "open"
    {
        return Ok(final_reply(&review));
    }
    pb::CommandReply::decode(decision.reply.as_slice())
        .map_err(|error| HandlerError::permanent(anyhow!("stored reply does not decode: {error}")))
}

fn text(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

fn parse_uuid(text: &str, field: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text)
        .map_err(|_| HandlerError::malformed(anyhow!("{field} {text:?} is not a uuid")))
}
