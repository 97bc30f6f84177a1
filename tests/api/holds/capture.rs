//! Capturing a hold with a post: a transfer moves the held money once to
//! its destination, a withdrawal to the currency's settlement account, and a
//! refused post writes nothing and leaves the hold active.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_hold_moves_the_money_once_and_cannot_be_released() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let destination = app.open_account(&customer_id, "USD").await.account_id;
    let (saga, hold) = reserve(&app, &source, "40").await;
    let posted = app.command(&saga.post(&source, &destination)).await;
    assert!(succeeded(&posted), "{posted:?}");
    let journal = journal(&app, &posted.journal_id).await;
    assert_eq!(journal.kind, pb::JournalKind::Transfer as i32);
    assert_eq!(journal.hold_id, hold.hold_id);
    assert_eq!(
        balance(&app, &source).await,
        ("60.00".into(), "60.00".into(), "0.00".into())
    );
    assert_eq!(
        balance(&app, &destination).await,
        ("40.00".into(), "40.00".into(), "0.00".into())
    );
    let captured = get_hold(&app, &hold.hold_id).await;
    assert_eq!(captured.status, pb::HoldStatus::Captured as i32);
    assert_eq!(captured.journal_id, journal.journal_id);

    // The post re-sent gets its first reply; no second journal.
    app.send_command(&saga.post(&source, &destination)).await;
    let released = app.command(&saga.release(&source)).await;
    assert_eq!(rejected(&released), "HOLD_ALREADY_CAPTURED");
    assert_eq!(app.count("account.journal").await, 2);
    assert_eq!(balance(&app, &destination).await.0, "40.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_without_a_destination_is_a_withdrawal_to_the_settlement_account() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let (saga, _) = reserve(&app, &account_id, "25").await;
    let posted = app.command(&saga.post(&account_id, "")).await;
    assert!(succeeded(&posted), "{posted:?}");
    let journal = journal(&app, &posted.journal_id).await;
    assert_eq!(journal.kind, pb::JournalKind::Withdrawal as i32);
    let settlement = journal
        .entries
        .iter()
        .find(|e| e.account_id != account_id)
        .unwrap();
    assert_eq!(settlement.direction, pb::EntryDirection::Credit as i32);
    assert_eq!(
        settlement.running_balance.as_ref().unwrap().amount,
        "-75.00"
    );
    assert_eq!(balance(&app, &account_id).await.0, "75.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_withdrawal_writes_nothing_and_leaves_its_hold_active() {
    let app = TestApp::spawn().await;
    let account_id = funded(&app, "100").await;
    let (saga, hold) = reserve(&app, &account_id, "25").await;
    let journals = app.count("account.journal").await;
    app.account
        .clone()
        .freeze_account(action(&account_id))
        .await
        .unwrap();
    let reply = app.command(&saga.post(&account_id, "")).await;
    assert_eq!(rejected(&reply), "ACCOUNT_FROZEN");
    assert_eq!(
        get_hold(&app, &hold.hold_id).await.status,
        pb::HoldStatus::Active as i32
    );
    assert_eq!(app.count("account.journal").await, journals);
    assert_eq!(
        balance(&app, &account_id).await,
        ("100.00".into(), "75.00".into(), "25.00".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_withdrawal_in_a_currency_no_deposit_used_creates_its_settlement_account() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account_id = app.open_account(&customer_id, "EUR").await.account_id;
    // Money that reached the account without a deposit in its currency (a
    // migrated opening balance), so no EUR settlement account exists yet.
    sqlx::query(
        "update account.account set ledger_balance = 40, last_entry_seq = 0
          where account_id = $1::uuid",
    )
    .bind(&account_id)
    .execute(&app.owner)
    .await
    .unwrap();
    let settlements = "select count(*) from account.account
                        where product = 'settlement' and currency = 'EUR'";
    let count = || async {
        sqlx::query_scalar::<_, i64>(settlements)
            .fetch_one(&app.owner)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 0);
    let saga = SagaCommands::new();
    let reserved = app
        .command(&saga.reserve(&account_id, money("EUR", "15")))
        .await;
    assert!(succeeded(&reserved), "{reserved:?}");
    let posted = app.command(&saga.post(&account_id, "")).await;
    assert!(succeeded(&posted), "{posted:?}");
    assert_eq!(count().await, 1);
    let journal = journal(&app, &posted.journal_id).await;
    assert_eq!(journal.kind, pb::JournalKind::Withdrawal as i32);
    let credit = journal
        .entries
        .iter()
        .find(|e| e.account_id != account_id)
        .unwrap();
    assert_eq!(credit.direction, pb::EntryDirection::Credit as i32);
    assert_eq!(credit.running_balance.as_ref().unwrap().amount, "15.00");
    assert_eq!(balance(&app, &account_id).await.0, "25.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_to_an_account_in_another_currency_or_unknown_is_rejected_and_the_hold_stays() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let euros = app.open_account(&customer_id, "EUR").await.account_id;
    let (saga, hold) = reserve(&app, &source, "10").await;
    let reply = app.command(&saga.post(&source, &euros)).await;
    assert_eq!(rejected(&reply), "CURRENCY_MISMATCH");
    let other = SagaCommands::new();
    let (other_saga, other_hold) = {
        let reply = app
            .command(&other.reserve(&source, money("USD", "5")))
            .await;
        assert!(succeeded(&reply));
        (other, reply.hold_id)
    };
    let unknown = uuid::Uuid::now_v7().to_string();
    let reply = app.command(&other_saga.post(&source, &unknown)).await;
    assert_eq!(rejected(&reply), "ACCOUNT_NOT_FOUND");
    for hold_id in [&hold.hold_id, &other_hold] {
        assert_eq!(
            get_hold(&app, hold_id).await.status,
            pb::HoldStatus::Active as i32
        );
    }
    assert_eq!(
        balance(&app, &source).await,
        ("100.00".into(), "85.00".into(), "15.00".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_destination_refuses_a_post() {
    let app = TestApp::spawn().await;
    let source = funded(&app, "100").await;
    let customer_id = app.verified_customer().await;
    let destination = app.open_account(&customer_id, "USD").await.account_id;
    app.account
        .clone()
        .close_account(action(&destination))
        .await
        .unwrap();
    let (saga, _) = reserve(&app, &source, "10").await;
    let reply = app.command(&saga.post(&source, &destination)).await;
    assert_eq!(rejected(&reply), "ACCOUNT_CLOSED");
}
