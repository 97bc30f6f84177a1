//! Reconciliation reports exactly the drift there is.

use super::*;
use crate::helpers::reason;

fn kinds(report: &pb::Reconciliation) -> Vec<(pb::MismatchKind, String, String)> {
    let mut found: Vec<_> = report
        .mismatches
        .iter()
        .map(|m| (m.kind(), m.account_id.clone(), m.entry_id.clone()))
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciliation_reports_exactly_a_drift_introduced_in_the_read_model() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await.account_id;
    let destination = app.funded_account("10.00").await.account_id;
    app.transfer(&source, &destination, "25.00").await;
    caught_up(&app).await;
    let clean = reconcile(&app).await;
    assert!(clean.clean, "{:?}", clean.mismatches);
    assert!(clean.accounts_checked >= 3, "two accounts and settlement");

    // The owner alters one credit of the destination and removes one entry
    // of the source.
    let (altered, altered_account): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "select entry_id, account_id from reporting.entry
         where account_id = $1 and direction = 'credit' order by account_seq desc limit 1",
    )
    .bind(uuid::Uuid::parse_str(&destination).expect("uuid"))
    .fetch_one(&app.owner)
    .await
    .expect("an entry to alter");
    sqlx::query("update reporting.entry set amount = amount + 1 where entry_id = $1")
        .bind(altered)
        .execute(&app.owner)
        .await
        .expect("alter");
    let (removed, removed_account): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "select entry_id, account_id from reporting.entry
         where account_id = $1 order by account_seq desc limit 1",
    )
    .bind(uuid::Uuid::parse_str(&source).expect("uuid"))
    .fetch_one(&app.owner)
    .await
    .expect("an entry to remove");
    sqlx::query("delete from reporting.entry where entry_id = $1")
        .bind(removed)
        .execute(&app.owner)
        .await
        .expect("remove");

    let report = reconcile(&app).await;
    assert!(!report.clean);
    use pb::MismatchKind::*;
    let mut expected = vec![
        (
            AmountDiffers,
            altered_account.to_string(),
            altered.to_string(),
        ),
        (BalanceDiffers, altered_account.to_string(), String::new()),
        (Missing, removed_account.to_string(), removed.to_string()),
        (BalanceDiffers, removed_account.to_string(), String::new()),
        (CountDiffers, removed_account.to_string(), String::new()),
    ];
    // USD totals: credits differ by the altered 1.00 and the removed debit
    // changes debits and the count.
    expected.extend([
        (CurrencyTotalDiffers, String::new(), String::new()),
        (CurrencyTotalDiffers, String::new(), String::new()),
        (CurrencyTotalDiffers, String::new(), String::new()),
    ]);
    expected.sort();
    assert_eq!(kinds(&report), expected, "{:#?}", report.mismatches);
    let altered_line = report
        .mismatches
        .iter()
        .find(|m| m.kind() == AmountDiffers)
        .expect("the altered entry");
    assert_eq!(altered_line.ledger_value, "credit 25.00");
    assert_eq!(altered_line.read_model_value, "credit 26.00");

    // Both runs are kept, newest first.
    let runs = app
        .reporting
        .clone()
        .list_reconciliations(pb::ListReconciliationsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .reconciliations;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].reconciliation_id, report.reconciliation_id);
    assert!(!runs[0].clean && runs[1].clean);
    assert_eq!(runs[0].mismatches.len(), report.mismatches.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconciliation_replays_its_first_report_for_the_same_key() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await.account_id;
    let destination = app.funded_account("10.00").await.account_id;
    app.transfer(&source, &destination, "25.00").await;
    caught_up(&app).await;
    let request = pb::ReconcileRequest {
        as_of_ledger_seq: 0,
        idempotency_key: key(),
    };
    let first = app
        .reporting
        .clone()
        .reconcile(request.clone())
        .await
        .expect("reconcile")
        .into_inner();
    assert!(first.clean, "{:?}", first.mismatches);

    // Drift a fresh run would report: the replay is the first report all the same.
    sqlx::query(
        "delete from reporting.entry
         where entry_id = (select entry_id from reporting.entry order by entry_id limit 1)",
    )
    .execute(&app.owner)
    .await
    .expect("remove an entry");
    let replayed = app
        .reporting
        .clone()
        .reconcile(request.clone())
        .await
        .expect("the same reconcile again");
    assert_eq!(
        replayed
            .metadata()
            .get("idempotent-replayed")
            .and_then(|value| value.to_str().ok()),
        Some("true")
    );
    assert_eq!(replayed.into_inner(), first);
    assert_eq!(app.count("reporting.reconciliation").await, 1);

    let reused = app
        .reporting
        .clone()
        .reconcile(pb::ReconcileRequest {
            as_of_ledger_seq: 1,
            ..request
        })
        .await
        .expect_err("another request under the key");
    assert_eq!(reused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("reporting.reconciliation").await, 1);

    // Concurrent first requests with a new key store one report and all
    // answer with it.
    let fresh = pb::ReconcileRequest {
        as_of_ledger_seq: 0,
        idempotency_key: key(),
    };
    let runs = (0..4).map(|_| {
        let mut reporting = app.reporting.clone();
        let request = fresh.clone();
        tokio::spawn(async move { reporting.reconcile(request).await })
    });
    let reports: Vec<pb::Reconciliation> = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|joined| joined.expect("task").expect("reconcile").into_inner())
        .collect();
    assert!(!reports[0].clean, "the drift is found by a new key");
    assert!(reports.iter().all(|report| *report == reports[0]));
    assert_eq!(app.count("reporting.reconciliation").await, 2);
}
