//! Money moves end to end: every service running, sagas over RabbitMQ, and
//! the ledger's invariants checked after each test (the same under faults:
//! `saga_faults`).

use corebank_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, key, reason, usd, violated_fields};

pub(crate) fn completed(transaction: &pb::Transaction) -> bool {
    transaction.status == pb::TransactionStatus::Completed as i32
}

fn wait(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

pub(crate) async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.owner)
        .await
        .unwrap()
}

async fn saga_of(app: &TestApp, transaction_id: &str) -> pb::Saga {
    let saga_id: uuid::Uuid =
        sqlx::query_scalar("select saga_id from orchestrator.saga where transaction_id = $1::uuid")
            .bind(transaction_id)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    // The transaction ends when the transaction service applies the last
    // command; the saga ends when the orchestrator has its reply, a moment
    // later. Wait (at most 20 s) for that last transition.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let saga = app
            .sagas
            .clone()
            .get_saga(pb::GetSagaRequest {
                saga_id: saga_id.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let running = [
            pb::SagaState::Running as i32,
            pb::SagaState::Compensating as i32,
        ];
        if !running.contains(&saga.state) || tokio::time::Instant::now() >= deadline {
            return saga;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_a_transfer_and_a_withdrawal_complete_with_balanced_journals() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("100.00").await;
    let destination = app.funded_account("5.00").await;

    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "30.25")
        .await;
    assert!(completed(&transfer), "{transfer:?}");
    assert!(!transfer.journal_id.is_empty());

    let withdrawal = app
        .transaction
        .clone()
        .create_withdrawal(pb::CreateWithdrawalRequest {
            idempotency_key: key(),
            account_id: destination.account_id.clone(),
            amount: Some(usd("10.00")),
            description: "cash".to_owned(),
            wait: wait(20),
        })
        .await
        .unwrap()
        .into_inner();
    let withdrawal = app.terminal(&withdrawal.transaction_id).await;
    assert!(completed(&withdrawal), "{withdrawal:?}");

    let source_balance = app.balance(&source.account_id).await;
    assert_eq!(source_balance.ledger.unwrap().amount, "69.75");
    assert_eq!(source_balance.available.unwrap().amount, "69.75");
    let destination_balance = app.balance(&destination.account_id).await;
    assert_eq!(destination_balance.ledger.unwrap().amount, "25.25");

    let journal = app
        .account
        .clone()
        .get_journal(pb::GetJournalRequest {
            journal_id: transfer.journal_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(journal.entries.len(), 2);

    let saga = saga_of(&app, &transfer.transaction_id).await;
    assert_eq!(saga.state, pb::SagaState::Completed as i32);
    assert!(!saga.history.is_empty());
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_answers_with_its_terminal_status_when_asked_to_wait() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("50.00").await;
    let destination = app.funded_account("1.00").await;
    let answer = app
        .transaction
        .clone()
        .create_transfer(pb::CreateTransferRequest {
            idempotency_key: key(),
            source_account_id: source.account_id,
            destination_account_id: destination.account_id,
            amount: Some(usd("12.00")),
            description: String::new(),
            wait: wait(20),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(completed(&answer), "{answer:?}");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_larger_than_the_available_balance_fails_with_nothing_to_compensate() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("10.00").await;
    let destination = app.funded_account("1.00").await;
    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "10.01")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(transfer.failure_reason, "INSUFFICIENT_FUNDS");
    assert_eq!(
        app.balance(&source.account_id)
            .await
            .available
            .unwrap()
            .amount,
        "10.00"
    );
    assert_eq!(
        count(&app, "select count(*) from account.hold").await,
        0,
        "no hold was placed"
    );
    let saga = saga_of(&app, &transfer.transaction_id).await;
    assert_eq!(saga.state, pb::SagaState::Failed as i32);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_destination_compensates_the_transfer_and_releases_the_hold() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("40.00").await;
    let destination = app.funded_account("1.00").await;
    app.account
        .clone()
        .freeze_account(pb::AccountActionRequest {
            account_id: destination.account_id.clone(),
            idempotency_key: key(),
            actor: "ops".to_owned(),
            reason: "court order".to_owned(),
        })
        .await
        .unwrap();

    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "15.00")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(transfer.failure_reason, "ACCOUNT_FROZEN");
    // The reserve happened, then was undone.
    assert_eq!(
        count(
            &app,
            "select count(*) from account.hold where status = 'released'"
        )
        .await,
        1
    );
    let balance = app.balance(&source.account_id).await;
    assert_eq!(balance.available.unwrap().amount, "40.00");
    assert_eq!(balance.held.unwrap().amount, "0.00");
    let saga = saga_of(&app, &transfer.transaction_id).await;
    assert_eq!(saga.state, pb::SagaState::Compensated as i32);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_who_is_not_verified_cannot_be_debited() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("20.00").await;
    let destination = app.funded_account("1.00").await;
    let owner: String = sqlx::query_scalar(
        "select customer_id::text from account.account where account_id = $1::uuid",
    )
    .bind(&source.account_id)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    app.customer
        .clone()
        .suspend_customer(pb::KycTransitionRequest {
            customer_id: owner,
            idempotency_key: key(),
            actor: "compliance".to_owned(),
            reason: "sanctions hit".to_owned(),
        })
        .await
        .unwrap();
    // The account service learns it from the customer service's event.
    app.wait_for_count(
        "select count(*) from account.customer_kyc where kyc_status = 'suspended'",
        1,
        "the kyc event",
    )
    .await;
    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "5.00")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(transfer.failure_reason, "KYC_NOT_VERIFIED");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_makes_one_transfer_and_another_body_changes_nothing() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("30.00").await;
    let destination = app.funded_account("1.00").await;
    let request = pb::CreateTransferRequest {
        idempotency_key: key(),
        source_account_id: source.account_id.clone(),
        destination_account_id: destination.account_id.clone(),
        amount: Some(usd("7.00")),
        description: "rent".to_owned(),
        wait: wait(20),
    };
    let first = app
        .transaction
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .transaction
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.transaction_id, again.transaction_id);
    // Both waited for the end: the first on the transaction it wrote, the
    // replay on the one its key names.
    assert!(completed(&first), "{first:?}");
    assert!(completed(&again), "{again:?}");

    let different = pb::CreateTransferRequest {
        amount: Some(usd("8.00")),
        ..request
    };
    let status = app
        .transaction
        .clone()
        .create_transfer(different)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");

    app.terminal(&first.transaction_id).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from transaction.transaction where kind = 'transfer'"
        )
        .await,
        1
    );
    assert_eq!(
        app.balance(&source.account_id).await.ledger.unwrap().amount,
        "23.00"
    );
    app.assert_invariants().await;
}

/// A client that times out and retries from many threads at once: one
/// hundred identical requests with one key, all in flight together, make one
/// transaction, one saga and one debit, and every answer names it (or asks
/// to retry while the first holds the key).
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_identical_requests_with_one_key_make_one_transfer() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("30.00").await;
    let destination = app.funded_account("1.00").await;
    let request = pb::CreateTransferRequest {
        idempotency_key: key(),
        source_account_id: source.account_id.clone(),
        destination_account_id: destination.account_id.clone(),
        amount: Some(usd("7.00")),
        description: "one of a hundred".to_owned(),
        wait: None,
    };
    let answers = futures::future::join_all((0..100).map(|_| {
        let mut client = app.transaction.clone();
        let request = request.clone();
        async move { client.create_transfer(request).await }
    }))
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for answer in answers {
        match answer {
            Ok(response) => {
                ids.insert(response.into_inner().transaction_id);
            }
            Err(status) => assert!(
                status.code() == Code::Aborted && reason(&status) == "IDEMPOTENCY_KEY_IN_USE",
                "{status:?}"
            ),
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "every accepted answer names one transaction: {ids:?}"
    );
    let id = ids.pop_first().expect("one id");
    app.terminal(&id).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from transaction.transaction where kind = 'transfer'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from orchestrator.saga s
               join transaction.transaction t using (transaction_id)
              where t.kind = 'transfer'"
        )
        .await,
        1
    );
    assert_eq!(
        app.balance(&source.account_id).await.ledger.unwrap().amount,
        "23.00"
    );
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_transfer_request_names_the_field_and_starts_nothing() {
    let app = TestApp::spawn().await;
    let status = app
        .transaction
        .clone()
        .create_transfer(pb::CreateTransferRequest {
            idempotency_key: key(),
            source_account_id: "nope".to_owned(),
            destination_account_id: uuid::Uuid::now_v7().to_string(),
            amount: Some(usd("1.001")),
            description: String::new(),
            wait: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert!(
        fields.contains(&"source_account_id".to_owned()),
        "{fields:?}"
    );
    assert!(fields.contains(&"amount.amount".to_owned()), "{fields:?}");
    assert_eq!(
        count(&app, "select count(*) from orchestrator.saga").await,
        0
    );
    assert_eq!(
        count(&app, "select count(*) from transaction.transaction").await,
        0
    );
}
