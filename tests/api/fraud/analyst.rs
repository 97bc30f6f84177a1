//! The analyst API on its own: rule sets, the watchlist, lookups.

use tonic::Code;

use super::*;
use crate::helpers::{reason, violated_fields};

#[tokio::test(flavor = "multi_thread")]
async fn the_default_rule_set_is_version_one_and_an_update_makes_version_two_keeping_the_first() {
    let app = TestApp::spawn().await;
    let mut fraud = app.fraud.clone();
    let first = fraud
        .get_rule_set(pb::GetRuleSetRequest { version: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.version, 1);
    assert!(!first.rules.is_empty(), "the default set has rules");
    let second = set_rules(&app, vec![review_above("100.00")]).await;
    assert_eq!(second.version, 2);
    // Recorded as the caller the token names, whatever the request says.
    assert_eq!(second.created_by, crate::helpers::OPERATOR);
    let active = fraud
        .get_rule_set(pb::GetRuleSetRequest { version: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.version, 2);
    assert_eq!(active.rules.len(), 1);
    let old = fraud
        .get_rule_set(pb::GetRuleSetRequest { version: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.rules, first.rules, "an old version is kept as it was");
    let actions: i64 = sqlx::query_scalar(
        "select count(*) from fraud.analyst_action where action = 'update_rule_set' and actor = 'operator-test'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(actions, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_rule_set_is_refused_naming_each_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let bad = vec![
        pb::Rule {
            threshold: "-5".to_owned(),
            currency: "USD".to_owned(),
            ..rule("big", pb::RuleKind::AmountAbove, pb::FraudAction::Review)
        },
        velocity_1h(
            "deposits-velocity",
            3,
            pb::TransactionKind::Deposit,
            pb::FraudAction::Review,
        ),
    ];
    let status = app
        .fraud
        .clone()
        .update_rule_set(pb::UpdateRuleSetRequest {
            rules: bad,
            anomaly_history: 50,
            decline_watchlist_period: seconds(86_400),
            actor: "analyst-1".to_owned(),
            reason: "typo".to_owned(),
            idempotency_key: key(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "VALIDATION_FAILED");
    let fields = violated_fields(&status);
    assert!(
        fields.contains(&"rules[0].threshold".to_owned()),
        "{fields:?}"
    );
    assert!(
        fields
            .iter()
            .any(|field| field.starts_with("rules[1].applies_to")),
        "a velocity rule may not look at deposits: {fields:?}"
    );
    assert_eq!(app.count("fraud.rule_set").await, 1, "nothing stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watchlist_entry_is_listed_until_removed_and_removing_it_twice_is_refused() {
    let app = TestApp::spawn().await;
    let mut fraud = app.fraud.clone();
    let subject = uuid::Uuid::now_v7().to_string();
    let entry = fraud
        .add_to_watchlist(pb::AddToWatchlistRequest {
            subject: pb::WatchlistSubject::Account as i32,
            subject_id: subject.clone(),
            reason: "mule reported by a partner bank".to_owned(),
            actor: "analyst-2".to_owned(),
            period: None,
            idempotency_key: key(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = fraud
        .list_watchlist(pb::ListWatchlistRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].subject_id, subject);
    let removed = fraud
        .remove_from_watchlist(pb::RemoveFromWatchlistRequest {
            entry_id: entry.entry_id.clone(),
            actor: "analyst-2".to_owned(),
            reason: "cleared".to_owned(),
            idempotency_key: key(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.remove_time.is_some());
    assert_eq!(removed.removed_by, crate::helpers::OPERATOR);
    let again = fraud
        .remove_from_watchlist(pb::RemoveFromWatchlistRequest {
            entry_id: entry.entry_id.clone(),
            actor: "analyst-2".to_owned(),
            reason: "cleared".to_owned(),
            idempotency_key: key(),
        })
        .await
        .expect_err("already removed");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let active = fraud
        .list_watchlist(pb::ListWatchlistRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(active.entries.is_empty());
    let all = fraud
        .list_watchlist(pb::ListWatchlistRequest {
            include_removed: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 1, "removal keeps the history");
    let logged: i64 = sqlx::query_scalar(
        "select count(*) from fraud.analyst_action where action in ('add_to_watchlist', 'remove_from_watchlist')",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(logged, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn analyst_requests_with_bad_fields_are_refused_by_field() {
    let app = TestApp::spawn().await;
    let mut fraud = app.fraud.clone();
    let status = fraud
        .add_to_watchlist(pb::AddToWatchlistRequest {
            subject: pb::WatchlistSubject::Unspecified as i32,
            subject_id: "not-a-uuid".to_owned(),
            reason: String::new(),
            actor: String::new(),
            period: None,
            idempotency_key: key(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    // The actor is the caller's token subject, so never missing.
    assert!(!fields.contains(&"actor".to_owned()), "{fields:?}");
    for field in ["subject", "subject_id", "reason"] {
        assert!(fields.contains(&field.to_owned()), "{field} in {fields:?}");
    }
    let status = fraud
        .decide_review(pb::DecideReviewRequest {
            review_id: uuid::Uuid::now_v7().to_string(),
            decision: pb::FraudAction::Review as i32,
            actor: "a".to_owned(),
            reason: "r".to_owned(),
            idempotency_key: key(),
            ..Default::default()
        })
        .await
        .expect_err("review is not a verdict");
    assert_eq!(violated_fields(&status), ["decision"]);
    let status = fraud
        .get_decision(pb::GetDecisionRequest {
            transaction_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("no such decision");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(app.count("fraud.watchlist_entry").await, 0);
}
