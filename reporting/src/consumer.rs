//! The projection (AMQP ⇄ domain): every event the read models are built
//! from, through the runner's inbox, so a redelivered message has no second
//! effect. Journal entries are applied per account in sequence order (see
//! [`crate::store::projection`]); the context tables (accounts, KYC,
//! transaction outcomes, fraud decisions) are upserts that arrival order does
//! not change.

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use corebank_platform::clock::SharedClock;
use corebank_platform::messaging::{
    BatchError, BatchHandler, Exchange, HandlerError, IncomingMessage, QueueSpec, message_span,
};
use corebank_platform::time::from_timestamp;
use corebank_proto::v1 as pb;
use corebank_proto::wire;
use prost::{Message, Name};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::{Direction, PostedEntry};
use crate::store::context::{self, Outcome};
use crate::store::projection;

/// The events the read models are projected from.
pub fn event_queue() -> QueueSpec {
    QueueSpec::new(wire::queue::REPORTING_EVENTS)
        .bind(Exchange::Events, wire::event::JOURNAL_POSTED)
        .bind(Exchange::Events, wire::event::ANY_ACCOUNT_LIFECYCLE)
        .bind(Exchange::Events, wire::event::CUSTOMER_KYC_CHANGED)
        .bind(Exchange::Events, wire::event::ANY_TRANSACTION_COMPLETED)
        .bind(Exchange::Events, wire::event::ANY_TRANSACTION_FAILED)
        .bind(Exchange::Events, wire::event::FRAUD_DECISION_MADE)
        .bind(Exchange::Events, wire::event::FRAUD_REVIEW_DECIDED)
}

/// Projects events into the read models.
#[derive(Debug, Clone)]
pub struct ProjectionHandler {
    clock: SharedClock,
}

impl ProjectionHandler {
    pub fn new(clock: SharedClock) -> Self {
        Self { clock }
    }
}

fn uuid(text: &str, field: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(text)
        .map_err(|_| HandlerError::malformed(anyhow!("{field} {text:?} is not a uuid")))
}

fn optional_uuid(text: &str, field: &str) -> Result<Option<Uuid>, HandlerError> {
    if text.is_empty() {
        Ok(None)
    } else {
        uuid(text, field).map(Some)
    }
}

fn decimal(text: &str, field: &str) -> Result<Decimal, HandlerError> {
    text.parse()
        .map_err(|_| HandlerError::malformed(anyhow!("{field} {text:?} is not a decimal")))
}

fn decode<M: Message + Default>(message: &IncomingMessage) -> Result<M, HandlerError> {
    M::decode(message.payload.as_slice()).map_err(HandlerError::malformed)
}

fn kind_name(kind: i32) -> String {
    match pb::TransactionKind::try_from(kind) {
        Ok(pb::TransactionKind::Transfer) => "transfer",
        Ok(pb::TransactionKind::Deposit) => "deposit",
        Ok(pb::TransactionKind::Withdrawal) => "withdrawal",
        _ => "unspecified",
    }
    .to_owned()
}

/// The entries of a journal event, validated: schema version 2 or later
/// (they carry each account's sequence; version 1 events do not, and a
/// rebuild from the ledger is the way to project history that old).
pub fn journal_entries(event: &pb::JournalPostedEvent) -> Result<Vec<PostedEntry>, HandlerError> {
    let journal_id = uuid(&event.journal_id, "journal_id")?;
    if event.ledger_seq <= 0 {
        return Err(HandlerError::malformed(anyhow!(
            "journal {journal_id} has no ledger_seq (an event before schema version 2): rebuild the read models from the ledger"
        )));
    }
    let post_time = event
        .post_time
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| HandlerError::malformed(anyhow!("journal {journal_id} has no post_time")))?;
    let accounts: Vec<Uuid> = event
        .entries
        .iter()
        .map(|entry| uuid(&entry.account_id, "entries.account_id"))
        .collect::<Result<_, _>>()?;
    let mut entries = Vec::with_capacity(event.entries.len());
    for (index, posted) in event.entries.iter().enumerate() {
        if posted.account_seq <= 0 {
            return Err(HandlerError::malformed(anyhow!(
                "journal {journal_id} entry {index} has no account_seq"
            )));
        }
        let signed = decimal(&posted.amount, "entries.amount")?;
        if signed.is_zero() {
            return Err(HandlerError::malformed(anyhow!(
                "journal {journal_id} entry {index} has a zero amount"
            )));
        }
        // The other account of a two-legged journal.
        let counterparty = match accounts.as_slice() {
            [a, b] => Some(if index == 0 { *b } else { *a }),
            _ => None,
        };
        entries.push(PostedEntry {
            entry_id: uuid(&posted.entry_id, "entries.entry_id")?,
            journal_id,
            ledger_seq: event.ledger_seq,
            account_id: accounts[index],
            account_seq: posted.account_seq,
            counterparty_account_id: counterparty,
            currency: event.currency.clone(),
            direction: Direction::of_signed(signed),
            amount: signed.abs(),
            ledger_balance_after: decimal(&posted.balance_after, "entries.balance_after")?,
            kind: event.kind.clone(),
            transaction_id: event.transaction_id.clone(),
            post_time,
        });
    }
    // The order the ledger locks accounts in: no two consumers wait in a cycle.
    entries.sort_by_key(|entry| entry.account_id);
    Ok(entries)
}

impl Outcome {
    /// What both terminal transaction events say.
    fn of(
        status: &'static str,
        transaction_id: &str,
        kind: i32,
        (source, destination): (&str, &str),
        amount: Option<&pb::Money>,
        ended_at: DateTime<Utc>,
    ) -> Result<Self, HandlerError> {
        Ok(Outcome {
            transaction_id: uuid(transaction_id, "transaction_id")?,
            kind: kind_name(kind),
            status,
            reason_code: String::new(),
            detail: String::new(),
            journal_id: None,
            source_account_id: optional_uuid(source, "source_account_id")?,
            destination_account_id: optional_uuid(destination, "destination_account_id")?,
            currency: amount.map(|money| money.currency.clone()),
            amount: amount.and_then(|money| money.amount.parse::<Decimal>().ok()),
            ended_at,
        })
    }
}

impl ProjectionHandler {
    /// Records an event other than a journal's in the context tables; a
    /// movement's outcome and a screening decision join `pending`, written
    /// for the whole batch at once.
    async fn record_context(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
        now: DateTime<Utc>,
        pending: &mut Pending,
    ) -> Result<(), HandlerError> {
        let occurred_at: DateTime<Utc> = message.occurred_at.unwrap_or(now);
        let kind = message.message_type.as_str();
        if kind == pb::AccountOpenedEvent::full_name() {
            let event: pb::AccountOpenedEvent = decode(message)?;
            let opened_at = event
                .open_time
                .as_ref()
                .and_then(from_timestamp)
                .unwrap_or(occurred_at);
            context::record_account_opened(
                tx,
                uuid(&event.account_id, "account_id")?,
                uuid(&event.customer_id, "customer_id")?,
                &event.currency,
                opened_at,
            )
            .await?;
        } else if kind == pb::AccountStatusChangedEvent::full_name() {
            let event: pb::AccountStatusChangedEvent = decode(message)?;
            let changed_at = event
                .change_time
                .as_ref()
                .and_then(from_timestamp)
                .unwrap_or(occurred_at);
            context::record_account_status(
                tx,
                uuid(&event.account_id, "account_id")?,
                &event.to_status,
                changed_at,
            )
            .await?;
        } else if kind == pb::CustomerKycChangedEvent::full_name() {
            let event: pb::CustomerKycChangedEvent = decode(message)?;
            context::record_kyc(
                tx,
                uuid(&event.customer_id, "customer_id")?,
                &event.to_status,
                event.sequence,
                occurred_at,
            )
            .await?;
        } else if kind == pb::TransactionCompletedEvent::full_name() {
            let event: pb::TransactionCompletedEvent = decode(message)?;
            let mut outcome = Outcome::of(
                "completed",
                &event.transaction_id,
                event.kind,
                (&event.source_account_id, &event.destination_account_id),
                event.amount.as_ref(),
                occurred_at,
            )?;
            outcome.journal_id = optional_uuid(&event.journal_id, "journal_id")?;
            pending.outcomes.push(outcome);
        } else if kind == pb::TransactionFailedEvent::full_name() {
            let event: pb::TransactionFailedEvent = decode(message)?;
            let mut outcome = Outcome::of(
                "failed",
                &event.transaction_id,
                event.kind,
                (&event.source_account_id, &event.destination_account_id),
                event.amount.as_ref(),
                occurred_at,
            )?;
            outcome.reason_code = event.reason_code;
            outcome.detail = event.detail;
            pending.outcomes.push(outcome);
        } else if kind == pb::FraudDecisionMadeEvent::full_name() {
            let event: pb::FraudDecisionMadeEvent = decode(message)?;
            pending.decisions.push(context::Decision {
                decision_id: uuid(&event.decision_id, "decision_id")?,
                transaction_id: uuid(&event.transaction_id, "transaction_id")?,
                outcome: event.outcome,
                rule_set_version: event.rule_set_version,
                fired_rules: event.fired_rules,
                decided_at: occurred_at,
            });
        } else if kind == pb::FraudReviewDecidedEvent::full_name() {
            let event: pb::FraudReviewDecidedEvent = decode(message)?;
            // It marks the decisions of its transaction: those first.
            pending.flush(tx).await?;
            context::record_review_outcome(
                tx,
                uuid(&event.transaction_id, "transaction_id")?,
                &event.outcome,
            )
            .await?;
        } else {
            // Bound to topic patterns: another event type is simply not ours.
            tracing::debug!(message_type = kind, "event ignored");
        }
        Ok(())
    }
}

impl BatchHandler for ProjectionHandler {
    /// Applies a batch: the entries of all its journal events at once (see
    /// [`projection::offer_entries`]), then its other events in order. The
    /// two touch different tables, so the split changes no result.
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[&IncomingMessage],
    ) -> Result<(), BatchError> {
        let now = self.clock.now();
        let mut entries = Vec::new();
        let mut others = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            if message.message_type == pb::JournalPostedEvent::full_name() {
                let event: pb::JournalPostedEvent =
                    decode(message).map_err(|error| BatchError::at(index, error))?;
                entries
                    .extend(journal_entries(&event).map_err(|error| BatchError::at(index, error))?);
            } else {
                others.push((index, *message));
            }
        }
        projection::offer_entries(tx, &entries, now)
            .await
            .map_err(BatchError::whole)?;
        let mut pending = Pending::default();
        for (index, message) in others {
            self.record_context(tx, message, now, &mut pending)
                .instrument(message_span(message))
                .await
                .map_err(|error| BatchError::at(index, error))?;
        }
        pending.flush(tx).await.map_err(BatchError::whole)
    }
}

/// Outcomes and decisions of a batch not written yet.
#[derive(Debug, Default)]
struct Pending {
    outcomes: Vec<Outcome>,
    decisions: Vec<context::Decision>,
}

impl Pending {
    async fn flush(&mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        context::record_outcomes(tx, &std::mem::take(&mut self.outcomes)).await?;
        context::record_decisions(tx, &std::mem::take(&mut self.decisions)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(entries: Vec<pb::PostedEntry>) -> pb::JournalPostedEvent {
        pb::JournalPostedEvent {
            journal_id: Uuid::now_v7().to_string(),
            kind: "transfer".to_owned(),
            currency: "USD".to_owned(),
            entries,
            transaction_id: Uuid::now_v7().to_string(),
            ledger_seq: 7,
            post_time: Some(corebank_platform::time::to_timestamp(Utc::now())),
        }
    }

    fn posted(account: Uuid, amount: &str, seq: i64) -> pb::PostedEntry {
        pb::PostedEntry {
            account_id: account.to_string(),
            amount: amount.to_owned(),
            balance_after: "0".to_owned(),
            entry_id: Uuid::now_v7().to_string(),
            account_seq: seq,
        }
    }

    #[test]
    fn a_journal_s_entries_name_each_other_as_counterparty_in_account_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let entries = journal_entries(&event(vec![posted(b, "-5.00", 3), posted(a, "5.00", 1)]))
            .expect("a valid event");
        assert_eq!(entries[0].account_id, a);
        assert_eq!(entries[0].counterparty_account_id, Some(b));
        assert_eq!(entries[0].direction, Direction::Credit);
        assert_eq!(entries[1].counterparty_account_id, Some(a));
        assert_eq!(entries[1].direction, Direction::Debit);
        assert_eq!(entries[1].amount, "5.00".parse::<Decimal>().unwrap());
    }

    #[test]
    fn a_journal_event_without_sequences_is_malformed() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut old = event(vec![posted(a, "-5.00", 0), posted(b, "5.00", 0)]);
        assert!(matches!(
            journal_entries(&old),
            Err(HandlerError::Malformed(_))
        ));
        old.ledger_seq = 0;
        assert!(matches!(
            journal_entries(&old),
            Err(HandlerError::Malformed(_))
        ));
    }
}
