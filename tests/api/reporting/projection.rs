//! The projection: shuffled and duplicated deliveries, a reporting service
//! that was down during a load, and a rebuild from the ledger all build the
//! same read model.

use corebank_platform::messaging::{Exchange, OutgoingMessage};
use corebank_proto::wire;
use rand::seq::SliceRandom;

use super::*;
use crate::helpers::{Service, publish};

#[tokio::test(flavor = "multi_thread")]
async fn shuffled_and_duplicated_journal_events_build_the_same_read_model() {
    let app = TestApp::spawn().await;
    approve_everything(&app).await;
    let accounts = funded_accounts(&app, 4, "200.00").await;
    random_load(&app, &accounts, 60, 11).await;
    caught_up(&app).await;
    let built_in_order = snapshot(&app).await;
    assert!(!built_in_order["entry"].is_empty());

    // Forget everything, then deliver every journal event again, shuffled,
    // a third of them twice (half of those under a new message id, so the
    // inbox cannot drop them and the projection's own order must).
    app.stop(Service::Reporting).await;
    for table in [
        "entry",
        "account_cursor",
        "pending_entry",
        "daily_total",
        "inbox",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "delete from reporting.{table}"
        )))
        .execute(&app.owner)
        .await
        .expect("clear the read model");
    }
    let events: Vec<(uuid::Uuid, String, Vec<u8>)> = sqlx::query_as(
        "select message_id, message_type, payload from account.outbox
         where routing_key = $1 order by outbox_id",
    )
    .bind(wire::event::JOURNAL_POSTED)
    .fetch_all(&app.owner)
    .await
    .expect("journal events in the account outbox");
    let mut rng = StdRng::seed_from_u64(5);
    let mut deliveries = Vec::new();
    for (index, (message_id, message_type, payload)) in events.iter().enumerate() {
        let message = OutgoingMessage::new(
            Exchange::Events,
            wire::event::JOURNAL_POSTED,
            message_type.clone(),
            payload.clone(),
        )
        .with_schema_version(2);
        deliveries.push(message.clone().with_message_id(*message_id));
        match index % 6 {
            0 => deliveries.push(message.clone().with_message_id(*message_id)),
            3 => deliveries.push(message.with_message_id(uuid::Uuid::now_v7())),
            _ => {}
        }
    }
    deliveries.shuffle(&mut rng);
    for message in &deliveries {
        publish(&app.namespace, message).await;
    }
    app.start(Service::Reporting).await;
    caught_up(&app).await;
    assert_eq!(snapshot(&app).await, built_in_order);
    let report = reconcile(&app).await;
    assert!(report.clean, "{:?}", report.mismatches);
}

#[tokio::test(flavor = "multi_thread")]
async fn reporting_stopped_during_a_load_catches_up_when_started_and_reconciles_clean() {
    let app = TestApp::spawn().await;
    approve_everything(&app).await;
    let accounts = funded_accounts(&app, 4, "200.00").await;
    app.stop(Service::Reporting).await;
    random_load(&app, &accounts, 200, 23).await;
    app.assert_invariants().await;
    assert!(
        app.count("reporting.entry").await < app.count("account.entry").await,
        "nothing was projected while reporting was down"
    );
    app.start(Service::Reporting).await;
    caught_up(&app).await;
    let status = app
        .reporting
        .clone()
        .get_projection_status(pb::GetProjectionStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.pending_entries, 0);
    let head: i64 = sqlx::query_scalar("select max(ledger_seq) from account.journal")
        .fetch_one(&app.owner)
        .await
        .expect("ledger head");
    assert_eq!(status.applied_ledger_seq, head);
    let report = reconcile(&app).await;
    assert!(report.clean, "{:?}", report.mismatches);
    assert_eq!(report.as_of_ledger_seq, head);
    for account_id in &accounts {
        let (statement, _) = full_statement(&app, account_id).await;
        let balance = app.balance(account_id).await;
        assert_eq!(
            statement.closing_balance,
            balance.ledger.expect("ledger").amount
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_read_model_equals_the_incrementally_built_one() {
    let app = TestApp::spawn().await;
    approve_everything(&app).await;
    let accounts = funded_accounts(&app, 4, "200.00").await;
    random_load(&app, &accounts, 40, 31).await;
    caught_up(&app).await;
    let incremental = snapshot(&app).await;
    // Damage it first: a rebuild must not care what was there.
    sqlx::query("delete from reporting.entry where entry_id in (select entry_id from reporting.entry limit 3)")
        .execute(&app.owner)
        .await
        .expect("damage the read model");
    let rebuilt = app
        .reporting
        .clone()
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            idempotency_key: key(),
        })
        .await
        .expect("rebuild")
        .into_inner();
    assert_eq!(rebuilt.entries, app.count("account.entry").await);
    assert_eq!(snapshot(&app).await, incremental);
    let report = reconcile(&app).await;
    assert!(report.clean, "{:?}", report.mismatches);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_sent_again_with_its_key_replays_its_answer_without_rebuilding() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await.account_id;
    let destination = app.funded_account("10.00").await.account_id;
    app.transfer(&source, &destination, "25.00").await;
    caught_up(&app).await;
    let request = pb::RebuildReadModelsRequest {
        idempotency_key: key(),
    };
    let first = app
        .reporting
        .clone()
        .rebuild_read_models(request.clone())
        .await
        .expect("rebuild")
        .into_inner();
    let entries = app.count("account.entry").await;
    assert_eq!(first.entries, entries);

    // Damage a second rebuild would repair: the replay leaves it be.
    sqlx::query("delete from reporting.entry where entry_id in (select entry_id from reporting.entry limit 2)")
        .execute(&app.owner)
        .await
        .expect("damage the read model");
    let replayed = app
        .reporting
        .clone()
        .rebuild_read_models(request.clone())
        .await
        .expect("the same rebuild again")
        .into_inner();
    assert_eq!(replayed, first);
    assert_eq!(app.count("reporting.entry").await, entries - 2);

    let blank = app
        .reporting
        .clone()
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            idempotency_key: " ".to_owned(),
        })
        .await
        .expect_err("a blank key");
    assert_eq!(blank.code(), tonic::Code::InvalidArgument);
    assert_eq!(app.count("reporting.entry").await, entries - 2);

    let repaired = app
        .reporting
        .clone()
        .rebuild_read_models(pb::RebuildReadModelsRequest {
            idempotency_key: key(),
        })
        .await
        .expect("a rebuild under a new key")
        .into_inner();
    assert_eq!(repaired.entries, entries);
    assert_eq!(app.count("reporting.entry").await, entries);
}
