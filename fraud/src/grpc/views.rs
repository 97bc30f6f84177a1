//! Stored rows as the analyst API shows them.

use corebank_platform::ApiError;
use corebank_platform::time::to_timestamp;
use corebank_proto::v1 as pb;
use sqlx::PgConnection;

use super::convert;
use crate::domain::features::TransactionKind;
use crate::store::decisions::{self, AlertRow, DecisionRow};
use crate::store::reviews::{self, ReviewRow};
use crate::store::watchlist::WatchlistEntry;

pub fn review_state_name(state: pb::ReviewState) -> &'static str {
    match state {
        pb::ReviewState::Open => "open",
        pb::ReviewState::Approved => "approved",
        pb::ReviewState::Declined => "declined",
        pb::ReviewState::Expired => "expired",
        pb::ReviewState::Unspecified => "",
    }
}

fn review_state(name: &str) -> pb::ReviewState {
    match name {
        "open" => pb::ReviewState::Open,
        "approved" => pb::ReviewState::Approved,
        "declined" => pb::ReviewState::Declined,
        "expired" => pb::ReviewState::Expired,
        _ => pb::ReviewState::Unspecified,
    }
}

fn action(name: &str) -> pb::FraudAction {
    match name {
        "approve" => pb::FraudAction::Approve,
        "review" => pb::FraudAction::Review,
        "decline" => pb::FraudAction::Decline,
        _ => pb::FraudAction::Unspecified,
    }
}

fn kind(kind: TransactionKind) -> pb::TransactionKind {
    match kind {
        TransactionKind::Transfer => pb::TransactionKind::Transfer,
        TransactionKind::Deposit => pb::TransactionKind::Deposit,
        TransactionKind::Withdrawal => pb::TransactionKind::Withdrawal,
    }
}

fn text(id: Option<uuid::Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// A review with the decision it came from (reasons, snapshot, amount).
pub async fn review_view(conn: &mut PgConnection, row: &ReviewRow) -> Result<pb::Review, ApiError> {
    let decision = decisions::by_id(conn, row.decision_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("review without its decision")))?;
    let snapshot = &decision.features.0;
    Ok(pb::Review {
        review_id: row.review_id.to_string(),
        transaction_id: row.transaction_id.to_string(),
        decision_id: row.decision_id.to_string(),
        state: review_state(&row.state) as i32,
        reasons: decision
            .fired
            .0
            .iter()
            .map(convert::fired_rule_to_proto)
            .collect(),
        features: Some(convert::snapshot_to_proto(snapshot)),
        deadline: Some(to_timestamp(row.deadline)),
        timeout_action: action(&row.timeout_action) as i32,
        decided_by: row.decided_by.clone().unwrap_or_default(),
        decision_reason: row.decision_reason.clone().unwrap_or_default(),
        automatic: row.automatic,
        decide_time: row.decided_at.map(to_timestamp),
        create_time: Some(to_timestamp(row.created_at)),
        source_account_id: text(decision.source_account_id),
        destination_account_id: text(decision.destination_account_id),
        amount: Some(pb::Money {
            currency: snapshot.currency.clone(),
            amount: snapshot.amount.to_string(),
        }),
        kind: kind(snapshot.kind) as i32,
    })
}

/// A decision, with its review's final outcome once decided.
pub async fn decision_view(
    conn: &mut PgConnection,
    row: &DecisionRow,
) -> Result<pb::Decision, ApiError> {
    let review = if row.outcome == "review" {
        reviews::by_decision(conn, row.decision_id).await?
    } else {
        None
    };
    let final_outcome = match &review {
        None => action(&row.outcome),
        Some(review) => match review.state.as_str() {
            "approved" => pb::FraudAction::Approve,
            "declined" => pb::FraudAction::Decline,
            "expired" => action(&review.timeout_action),
            _ => pb::FraudAction::Unspecified,
        },
    };
    Ok(pb::Decision {
        decision_id: row.decision_id.to_string(),
        transaction_id: row.transaction_id.to_string(),
        saga_id: row.saga_id.to_string(),
        outcome: action(&row.outcome) as i32,
        rule_set_version: row.rule_set_version,
        features: Some(convert::snapshot_to_proto(&row.features.0)),
        fired: row
            .fired
            .0
            .iter()
            .map(convert::fired_rule_to_proto)
            .collect(),
        review_id: review
            .as_ref()
            .map(|review| review.review_id.to_string())
            .unwrap_or_default(),
        final_outcome: final_outcome as i32,
        create_time: Some(to_timestamp(row.created_at)),
        source_account_id: text(row.source_account_id),
        destination_account_id: text(row.destination_account_id),
    })
}

pub fn alert_view(row: &AlertRow) -> pb::Alert {
    pb::Alert {
        alert_id: row.alert_id.to_string(),
        transaction_id: row.transaction_id.to_string(),
        decision_id: row.decision_id.to_string(),
        rules: row
            .rules
            .0
            .iter()
            .map(convert::fired_rule_to_proto)
            .collect(),
        create_time: Some(to_timestamp(row.created_at)),
        account_id: text(row.account_id),
    }
}

pub fn watchlist_view(entry: &WatchlistEntry) -> pb::WatchlistEntry {
    pb::WatchlistEntry {
        entry_id: entry.entry_id.to_string(),
        subject: match entry.subject.as_str() {
            "account" => pb::WatchlistSubject::Account,
            "customer" => pb::WatchlistSubject::Customer,
            _ => pb::WatchlistSubject::Unspecified,
        } as i32,
        subject_id: entry.subject_id.to_string(),
        reason: entry.reason.clone(),
        added_by: entry.added_by.clone(),
        create_time: Some(to_timestamp(entry.created_at)),
        expire_time: entry.expires_at.map(to_timestamp),
        remove_time: entry.removed_at.map(to_timestamp),
        removed_by: entry.removed_by.clone().unwrap_or_default(),
    }
}
