//! Fraud screening: the screen step inside every money movement, the review
//! queue with its deadline, features and rules, and the analyst API.

use std::time::Duration;

use corebank_proto::v1 as pb;

use crate::helpers::{TestApp, key};

mod analyst;
mod batches;
mod features;
mod reviews;
mod rules;
mod screening;

/// Whether a transaction ended FAILED with `reason`.
fn failed_with(transaction: &pb::Transaction, reason: &str) -> bool {
    transaction.status == pb::TransactionStatus::Failed as i32
        && transaction.failure_reason == reason
}

/// A rule with the fields every kind shares.
fn rule(rule_id: &str, kind: pb::RuleKind, action: pb::FraudAction) -> pb::Rule {
    pb::Rule {
        rule_id: rule_id.to_owned(),
        kind: kind as i32,
        action: action as i32,
        ..Default::default()
    }
}

/// A velocity rule on movements of `kind` over the last hour, with
/// `count_limit` as its limit.
fn velocity_1h(
    rule_id: &str,
    count_limit: i64,
    kind: pb::TransactionKind,
    action: pb::FraudAction,
) -> pb::Rule {
    pb::Rule {
        window: pb::FeatureWindow::FeatureWindow1h as i32,
        count_limit,
        applies_to: kinds(&[kind]),
        ..rule(rule_id, pb::RuleKind::VelocityCount, action)
    }
}

fn kinds(kinds: &[pb::TransactionKind]) -> Vec<i32> {
    kinds.iter().map(|kind| *kind as i32).collect()
}

fn seconds(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

/// Replaces the active rule set with `rules`; the stored version.
async fn set_rules(app: &TestApp, rules: Vec<pb::Rule>) -> pb::RuleSet {
    app.fraud
        .clone()
        .update_rule_set(pb::UpdateRuleSetRequest {
            rules,
            anomaly_history: 50,
            decline_watchlist_period: seconds(7 * 86_400),
            actor: "analyst-1".to_owned(),
            reason: "test rules".to_owned(),
            idempotency_key: key(),
        })
        .await
        .expect("update rule set")
        .into_inner()
}

/// The screening decision of a transaction, once it exists.
async fn decision(app: &TestApp, transaction_id: &str) -> pb::Decision {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match app
            .fraud
            .clone()
            .get_decision(pb::GetDecisionRequest {
                transaction_id: transaction_id.to_owned(),
            })
            .await
        {
            Ok(decision) => return decision.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => panic!("get decision: {status:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no decision for {transaction_id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the transaction shows `status`.
async fn wait_for_status(app: &TestApp, transaction_id: &str, status: pb::TransactionStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let transaction = app
            .transaction
            .clone()
            .get_transaction(pb::GetTransactionRequest {
                transaction_id: transaction_id.to_owned(),
            })
            .await
            .expect("get transaction")
            .into_inner();
        if transaction.status == status as i32 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "transaction never reached {status:?}: {transaction:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The review of a reviewed transaction.
async fn review_of(app: &TestApp, transaction_id: &str) -> pb::Review {
    let decision = decision(app, transaction_id).await;
    assert_eq!(
        decision.outcome,
        pb::FraudAction::Review as i32,
        "not reviewed: {decision:?}"
    );
    app.fraud
        .clone()
        .get_review(pb::GetReviewRequest {
            review_id: decision.review_id,
        })
        .await
        .expect("get review")
        .into_inner()
}

/// Approves or declines a review.
async fn decide(
    app: &TestApp,
    review_id: &str,
    decision: pb::FraudAction,
) -> Result<pb::Review, tonic::Status> {
    app.fraud
        .clone()
        .decide_review(pb::DecideReviewRequest {
            review_id: review_id.to_owned(),
            decision: decision as i32,
            actor: "analyst-7".to_owned(),
            reason: "checked with the customer".to_owned(),
            skip_watchlist: false,
            idempotency_key: key(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A rule set that reviews every transfer above `amount` USD.
fn review_above(amount: &str) -> pb::Rule {
    pb::Rule {
        currency: "USD".to_owned(),
        threshold: amount.to_owned(),
        applies_to: kinds(&[
            pb::TransactionKind::Transfer,
            pb::TransactionKind::Withdrawal,
        ]),
        ..rule(
            "review-large",
            pb::RuleKind::AmountAbove,
            pb::FraudAction::Review,
        )
    }
}
