//! The review queue: a reviewed movement parks its saga until an analyst
//! decides or the deadline decides by the rule's timeout policy.

use tokio_stream::StreamExt;
use tonic::Code;

use super::*;
use crate::helpers::{Service, reason};

/// The next status a watch reports, within 20 s.
async fn next(watch: &mut tonic::Streaming<pb::Transaction>) -> pb::Transaction {
    tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("a status within 20 s")
        .expect("the stream goes on")
        .expect("a transaction")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reviewed_transfer_approved_by_an_analyst_completes_and_watch_shows_every_status() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("500.00").await;
    let destination = app.funded_account("1.00").await;
    set_rules(&app, vec![review_above("100.00")]).await;
    // The orchestrator waits until the watch is open, so it sees PENDING too.
    app.stop(Service::Orchestrator).await;
    let id = app
        .submit_transfer(&source.account_id, &destination.account_id, "150.00")
        .await;
    let mut watch = app
        .transaction
        .clone()
        .watch_transaction(pb::GetTransactionRequest {
            transaction_id: id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    app.start(Service::Orchestrator).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(next(&mut watch).await.status);
    }
    assert_eq!(
        seen,
        [
            pb::TransactionStatus::Pending as i32,
            pb::TransactionStatus::Review as i32,
        ]
    );
    let open = app
        .fraud
        .clone()
        .list_reviews(pb::ListReviewsRequest {
            state: pb::ReviewState::Open as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reviews;
    assert_eq!(open.len(), 1);
    let review = &open[0];
    assert_eq!(review.transaction_id, id);
    assert_eq!(review.reasons[0].rule_id, "review-large");
    assert_eq!(review.amount.as_ref().expect("amount").amount, "150.00");
    let hold_left = app.balance(&source.account_id).await;
    assert_eq!(
        hold_left.available.expect("available").amount,
        "350.00",
        "the hold stays while parked"
    );
    let saga_log: i64 = sqlx::query_scalar(
        "select count(*) from orchestrator.saga_log where step = 'screen' and event = 'retried'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(saga_log, 0, "nothing re-sent while parked");

    let decided = decide(&app, &review.review_id, pb::FraudAction::Approve)
        .await
        .expect("approve");
    assert_eq!(decided.state, pb::ReviewState::Approved as i32);
    assert_eq!(decided.decided_by, crate::helpers::OPERATOR);
    assert!(!decided.automatic);
    assert_eq!(
        next(&mut watch).await.status,
        pb::TransactionStatus::Completed as i32
    );
    assert_eq!(
        app.balance(&destination.account_id)
            .await
            .ledger
            .expect("ledger")
            .amount,
        "151.00"
    );
    let decision = decision(&app, &id).await;
    assert_eq!(decision.final_outcome, pb::FraudAction::Approve as i32);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_review_puts_the_money_back_and_the_next_transfer_to_that_payee_is_caught() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("500.00").await;
    let mule = app.funded_account("1.00").await;
    let mut rules = vec![review_above("100.00")];
    rules.push(rule(
        "watchlist",
        pb::RuleKind::Watchlist,
        pb::FraudAction::Review,
    ));
    set_rules(&app, rules).await;
    let id = app
        .submit_transfer(&source.account_id, &mule.account_id, "150.00")
        .await;
    let review = review_of(&app, &id).await;
    let declined = decide(&app, &review.review_id, pb::FraudAction::Decline)
        .await
        .expect("decline");
    assert_eq!(declined.state, pb::ReviewState::Declined as i32);
    let done = app.terminal(&id).await;
    assert_eq!(done.failure_reason, "FRAUD_DECLINED", "{done:?}");
    let balance = app.balance(&source.account_id).await;
    assert_eq!(
        balance.available.expect("available").amount,
        "500.00",
        "the money is back"
    );
    let watched = app
        .fraud
        .clone()
        .list_watchlist(pb::ListWatchlistRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0].subject_id, mule.account_id);
    assert!(
        watched[0].expire_time.is_some(),
        "for the rule set's period"
    );
    // A small one now: no amount rule fires, the watchlist does.
    let next = app
        .submit_transfer(&source.account_id, &mule.account_id, "5.00")
        .await;
    let caught = review_of(&app, &next).await;
    assert_eq!(caught.reasons[0].rule_id, "watchlist");
    decide(&app, &caught.review_id, pb::FraudAction::Decline)
        .await
        .expect("decline");
    app.terminal(&next).await;
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_past_its_deadline_is_decided_automatically_and_a_later_or_second_decision_is_refused()
 {
    let app = TestApp::spawn().await;
    let source = app.funded_account("500.00").await;
    let destination = app.funded_account("1.00").await;
    set_rules(&app, vec![review_above("100.00")]).await;
    let id = app
        .submit_transfer(&source.account_id, &destination.account_id, "150.00")
        .await;
    let review = review_of(&app, &id).await;
    assert_eq!(review.timeout_action, pb::FraudAction::Decline as i32);
    let deadline = review.deadline.expect("a deadline");
    let created = review.create_time.expect("created");
    assert_eq!(
        deadline.seconds - created.seconds,
        24 * 3600,
        "the default deadline"
    );
    // The hold outlives any review: it cannot expire while the saga lives.
    let hold_expiry: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "select expires_at from account.hold where status = 'active' and account_id = $1::uuid",
    )
    .bind(&source.account_id)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert!(hold_expiry.timestamp() > deadline.seconds + 7 * 86_400);

    app.clock.advance(chrono::Duration::hours(25));
    let late = decide(&app, &review.review_id, pb::FraudAction::Approve)
        .await
        .expect_err("past the deadline");
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late), "REVIEW_EXPIRED");
    let done = app.terminal(&id).await;
    assert_eq!(done.failure_reason, "FRAUD_DECLINED", "{done:?}");
    assert_eq!(
        app.balance(&source.account_id)
            .await
            .available
            .expect("available")
            .amount,
        "500.00"
    );
    let expired = app
        .fraud
        .clone()
        .get_review(pb::GetReviewRequest {
            review_id: review.review_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expired.state, pb::ReviewState::Expired as i32);
    assert!(expired.automatic, "recorded as automatic");
    assert_eq!(expired.decided_by, "system");
    let logged: i64 = sqlx::query_scalar(
        "select count(*) from fraud.analyst_action where action = 'expire_review' and actor = 'system'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(logged, 1);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_decision_on_a_review_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("500.00").await;
    let destination = app.funded_account("1.00").await;
    set_rules(&app, vec![review_above("100.00")]).await;
    let id = app
        .submit_transfer(&source.account_id, &destination.account_id, "150.00")
        .await;
    let review = review_of(&app, &id).await;
    decide(&app, &review.review_id, pb::FraudAction::Approve)
        .await
        .expect("approve");
    let again = decide(&app, &review.review_id, pb::FraudAction::Decline)
        .await
        .expect_err("decided already");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "REVIEW_ALREADY_DECIDED");
    let done = app.terminal(&id).await;
    assert_eq!(done.status, pb::TransactionStatus::Completed as i32);
    assert_eq!(
        app.count("fraud.watchlist_entry").await,
        0,
        "the refused decline did nothing"
    );
    app.assert_invariants().await;
}
