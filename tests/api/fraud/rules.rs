//! Decisions replay: each re-evaluates to the same outcome from the rule-set
//! version and feature snapshot it stored, and a new version applies to new
//! screens only.

use corebank_fraud::domain::{FeatureSnapshot, FiredRule, RuleSet, evaluate};
use rand::Rng;
use sqlx::types::Json;

use super::*;

/// A decision as stored: outcome, snapshot, fired rules and its rule set.
type StoredDecision = (
    String,
    Json<FeatureSnapshot>,
    Json<Vec<FiredRule>>,
    Json<RuleSet>,
);

async fn replay_every_decision(app: &TestApp) -> usize {
    let rows: Vec<StoredDecision> = sqlx::query_as(
        "select d.outcome, d.features, d.fired, r.body
               from fraud.decision d join fraud.rule_set r on r.version = d.rule_set_version
              order by d.decision_id",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    for (outcome, Json(snapshot), Json(fired), Json(rules)) in &rows {
        let again = evaluate(rules, snapshot);
        let name = match again.outcome {
            corebank_fraud::domain::Outcome::Approve => "approve",
            corebank_fraud::domain::Outcome::Review => "review",
            corebank_fraud::domain::Outcome::Decline => "decline",
        };
        assert_eq!(name, outcome, "{snapshot:?}");
        assert_eq!(&again.fired, fired);
    }
    rows.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_of_a_random_run_of_two_hundred_transfers_re_evaluates_to_the_same_outcome()
{
    let app = TestApp::spawn().await;
    let mut accounts = Vec::new();
    for _ in 0..6 {
        accounts.push(app.funded_account("1000.00").await.account_id);
    }
    set_rules(
        &app,
        vec![
            pb::Rule {
                currency: "USD".to_owned(),
                threshold: "4.50".to_owned(),
                applies_to: kinds(&[pb::TransactionKind::Transfer]),
                ..rule(
                    "decline-big",
                    pb::RuleKind::AmountAbove,
                    pb::FraudAction::Decline,
                )
            },
            velocity_1h(
                "busy",
                20,
                pb::TransactionKind::Transfer,
                pb::FraudAction::Alert,
            ),
            pb::Rule {
                count_limit: 4,
                applies_to: kinds(&[pb::TransactionKind::Transfer]),
                ..rule("fan-in", pb::RuleKind::FanIn, pb::FraudAction::Alert)
            },
        ],
    )
    .await;
    let mut ids = Vec::new();
    {
        let mut rng = rand::rng();
        for _ in 0..200 {
            let from = rng.random_range(0..accounts.len());
            let to = (from + rng.random_range(1..accounts.len())) % accounts.len();
            let cents: u32 = rng.random_range(1..=500);
            ids.push((from, to, format!("{}.{:02}", cents / 100, cents % 100)));
        }
    }
    let mut submitted = Vec::new();
    for chunk in ids.chunks(20) {
        let mut batch = Vec::new();
        for (from, to, amount) in chunk {
            batch.push(app.submit_transfer(&accounts[*from], &accounts[*to], amount));
        }
        submitted.extend(futures::future::join_all(batch).await);
    }
    let mut declined = 0;
    let mut screened = 6;
    let mut other_failures = Vec::new();
    for id in &submitted {
        let done = app.terminal(id).await;
        match (done.status(), done.failure_reason.as_str()) {
            (pb::TransactionStatus::Completed, _) => screened += 1,
            (_, "FRAUD_DECLINED") => {
                declined += 1;
                screened += 1;
            }
            (_, other) => other_failures.push(other.to_owned()),
        }
    }
    assert!(declined > 0, "the run exercised declines too");
    let replayed = replay_every_decision(&app).await;
    // A transfer that failed before its screen (a reserve timed out on a
    // loaded machine) has no decision; every completed or declined one does.
    assert!(
        replayed >= screened && replayed <= 206,
        "{replayed} decisions for {screened} screened movements; other failures: {other_failures:?}"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_set_update_applies_to_new_screens_and_old_decisions_keep_their_version() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("500.00").await;
    let destination = app.funded_account("1.00").await;
    let first = app
        .transfer(&source.account_id, &destination.account_id, "20.00")
        .await;
    assert_eq!(first.status, pb::TransactionStatus::Completed as i32);
    let stricter = set_rules(
        &app,
        vec![pb::Rule {
            currency: "USD".to_owned(),
            threshold: "10.00".to_owned(),
            applies_to: kinds(&[pb::TransactionKind::Transfer]),
            ..rule(
                "decline-over-10",
                pb::RuleKind::AmountAbove,
                pb::FraudAction::Decline,
            )
        }],
    )
    .await;
    let second = app
        .transfer(&source.account_id, &destination.account_id, "20.00")
        .await;
    assert_eq!(second.failure_reason, "FRAUD_DECLINED");
    let old = decision(&app, &first.transaction_id).await;
    assert_eq!(old.rule_set_version, 1);
    assert_eq!(old.outcome, pb::FraudAction::Approve as i32);
    let new = decision(&app, &second.transaction_id).await;
    assert_eq!(new.rule_set_version, stricter.version);
    assert_eq!(replay_every_decision(&app).await, 4);
    app.assert_invariants().await;
}
