//! The features that make a rule fire: velocity with movements still in
//! flight, fan-in, first payee, anomaly, watchlist and structuring.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_transfer_past_the_hourly_count_is_reviewed_while_the_earlier_ones_are_still_in_flight()
{
    let app = TestApp::spawn().await;
    let source = app.funded_account("1000.00").await;
    let destination = app.funded_account("1.00").await;
    set_rules(
        &app,
        vec![
            review_above("50.00"),
            velocity_1h(
                "velocity-1h",
                3,
                pb::TransactionKind::Transfer,
                pb::FraudAction::Review,
            ),
        ],
    )
    .await;
    // Three large transfers park in review: in flight, none completed.
    let mut parked = Vec::new();
    for _ in 0..3 {
        let id = app
            .submit_transfer(&source.account_id, &destination.account_id, "60.00")
            .await;
        wait_for_status(&app, &id, pb::TransactionStatus::Review).await;
        parked.push(id);
    }
    let fourth = app
        .submit_transfer(&source.account_id, &destination.account_id, "10.00")
        .await;
    let review = review_of(&app, &fourth).await;
    let fired: Vec<_> = review
        .reasons
        .iter()
        .map(|rule| rule.rule_id.as_str())
        .collect();
    assert_eq!(
        fired,
        ["velocity-1h"],
        "only the count fired for a small amount"
    );
    assert_eq!(review.reasons[0].value, "4");
    for id in &parked {
        let still = app
            .transaction
            .clone()
            .get_transaction(pb::GetTransactionRequest {
                transaction_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(still.status, pb::TransactionStatus::Review as i32);
    }
    for id in parked.iter().chain([&fourth]) {
        let review = review_of(&app, id).await;
        decide(&app, &review.review_id, pb::FraudAction::Approve)
            .await
            .expect("approve");
    }
    for id in parked.iter().chain([&fourth]) {
        let done = app.terminal(id).await;
        assert_eq!(done.status, pb::TransactionStatus::Completed as i32);
    }
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payee_paid_by_more_sources_in_a_day_than_the_fan_in_limit_is_reviewed() {
    let app = TestApp::spawn().await;
    let mule = app.funded_account("1.00").await;
    set_rules(
        &app,
        vec![pb::Rule {
            count_limit: 2,
            applies_to: kinds(&[pb::TransactionKind::Transfer]),
            ..rule("fan-in", pb::RuleKind::FanIn, pb::FraudAction::Review)
        }],
    )
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let source = app.funded_account("50.00").await;
        let id = app
            .submit_transfer(&source.account_id, &mule.account_id, "5.00")
            .await;
        let decision = decision(&app, &id).await;
        outcomes.push((
            decision.outcome,
            decision.features.expect("snapshot").distinct_sources_24h,
        ));
        if decision.outcome == pb::FraudAction::Review as i32 {
            decide(&app, &decision.review_id, pb::FraudAction::Approve)
                .await
                .expect("approve");
        }
        app.terminal(&id).await;
    }
    assert_eq!(
        outcomes,
        [
            (pb::FraudAction::Approve as i32, 1),
            (pb::FraudAction::Approve as i32, 2),
            (pb::FraudAction::Review as i32, 3),
        ]
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_payment_to_a_new_payee_above_the_limit_is_reviewed_and_the_next_one_is_not() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("500.00").await;
    let payee = app.funded_account("1.00").await;
    set_rules(
        &app,
        vec![pb::Rule {
            currency: "USD".to_owned(),
            threshold: "50.00".to_owned(),
            applies_to: kinds(&[pb::TransactionKind::Transfer]),
            ..rule(
                "first-payee",
                pb::RuleKind::FirstPayeeAmount,
                pb::FraudAction::Review,
            )
        }],
    )
    .await;
    let first = app
        .submit_transfer(&source.account_id, &payee.account_id, "60.00")
        .await;
    let review = review_of(&app, &first).await;
    assert!(review.features.as_ref().expect("snapshot").first_time_payee);
    decide(&app, &review.review_id, pb::FraudAction::Approve)
        .await
        .expect("approve");
    assert_eq!(
        app.terminal(&first).await.status,
        pb::TransactionStatus::Completed as i32
    );
    let second = app
        .transfer(&source.account_id, &payee.account_id, "60.00")
        .await;
    assert_eq!(second.status, pb::TransactionStatus::Completed as i32);
    let decision = decision(&app, &second.transaction_id).await;
    assert_eq!(decision.outcome, pb::FraudAction::Approve as i32);
    assert!(!decision.features.expect("snapshot").first_time_payee);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_amount_twenty_times_the_usual_is_reviewed_while_the_usual_amounts_are_approved() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("1000.00").await;
    let destination = app.funded_account("1.00").await;
    set_rules(
        &app,
        vec![pb::Rule {
            threshold: "8".to_owned(),
            applies_to: kinds(&[pb::TransactionKind::Transfer]),
            ..rule(
                "anomaly",
                pb::RuleKind::AnomalyScore,
                pb::FraudAction::Review,
            )
        }],
    )
    .await;
    for amount in ["10.00", "12.00", "9.00", "11.00", "10.00", "10.50"] {
        let done = app
            .transfer(&source.account_id, &destination.account_id, amount)
            .await;
        assert_eq!(
            done.status,
            pb::TransactionStatus::Completed as i32,
            "{amount}"
        );
    }
    let unusual = app
        .submit_transfer(&source.account_id, &destination.account_id, "200.00")
        .await;
    let review = review_of(&app, &unusual).await;
    let features = review.features.expect("snapshot");
    assert_eq!(features.history_size, 6);
    let score: f64 = features.anomaly_score.parse().expect("a score");
    assert!(score > 8.0, "score {score}");
    decide(&app, &review.review_id, pb::FraudAction::Approve)
        .await
        .expect("approve");
    app.terminal(&unusual).await;
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_to_a_watch_listed_account_is_reviewed_with_the_hit_named() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await;
    let destination = app.funded_account("1.00").await;
    app.fraud
        .clone()
        .add_to_watchlist(pb::AddToWatchlistRequest {
            subject: pb::WatchlistSubject::Account as i32,
            subject_id: destination.account_id.clone(),
            reason: "reported mule".to_owned(),
            actor: "analyst-3".to_owned(),
            period: None,
            idempotency_key: key(),
        })
        .await
        .expect("watch");
    let id = app
        .submit_transfer(&source.account_id, &destination.account_id, "5.00")
        .await;
    let review = review_of(&app, &id).await;
    let hits = review.features.expect("snapshot").watchlist_hits;
    assert_eq!(hits, [format!("account:{}", destination.account_id)]);
    assert!(
        review
            .reasons
            .iter()
            .any(|rule| rule.rule_id == "watchlist")
    );
    decide(&app, &review.review_id, pb::FraudAction::Decline)
        .await
        .expect("decline");
    let done = app.terminal(&id).await;
    assert!(failed_with(&done, "FRAUD_DECLINED"), "{done:?}");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deposits_just_under_the_reporting_threshold_raise_an_alert_and_still_complete() {
    let app = TestApp::spawn().await;
    let customer = app.verified_customer().await;
    let account = app.open_account(&customer, "USD").await;
    set_rules(
        &app,
        vec![pb::Rule {
            currency: "USD".to_owned(),
            threshold: "10000.00".to_owned(),
            band: "1000.00".to_owned(),
            count_limit: 2,
            applies_to: kinds(&[pb::TransactionKind::Deposit]),
            ..rule(
                "structuring",
                pb::RuleKind::Structuring,
                pb::FraudAction::Alert,
            )
        }],
    )
    .await;
    for _ in 0..3 {
        let done = app.deposit_saga(&account.account_id, "9500.00").await;
        assert_eq!(
            done.status,
            pb::TransactionStatus::Completed as i32,
            "{done:?}"
        );
    }
    let alerts = app
        .fraud
        .clone()
        .list_alerts(pb::ListAlertsRequest {
            account_id: account.account_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(alerts.len(), 1, "only the third deposit crossed the count");
    assert_eq!(alerts[0].rules[0].rule_id, "structuring");
    assert_eq!(alerts[0].rules[0].value, "3");
    assert_eq!(
        app.balance(&account.account_id)
            .await
            .ledger
            .expect("ledger")
            .amount,
        "28500.00"
    );
    app.wait_for_count(
        "select count(*) from fraud.outbox where routing_key = 'fraud.alert.raised' and sent_at is not null",
        1,
        "the alert event published",
    )
    .await;
    app.assert_invariants().await;
}
