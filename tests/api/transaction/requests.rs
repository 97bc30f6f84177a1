//! Creating transfers, deposits and withdrawals: events, validation, idempotency.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_created_transfer_is_pending_and_announced_with_a_requested_event() {
    let app = TransactionApp::spawn().await;
    let (source, destination) = (account(), account());
    let created = app
        .client
        .clone()
        .create_transfer(app.transfer(&source, &destination, "125.5"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.status, pb::TransactionStatus::Pending as i32);
    assert_eq!(created.kind, pb::TransactionKind::Transfer as i32);
    assert_eq!(created.amount, Some(usd("125.50")));
    assert_eq!(created.description, "rent for march");
    assert_eq!(app.get(&created.transaction_id).await, created);

    let event: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    assert_eq!(
        event,
        pb::TransactionRequestedEvent {
            transaction_id: created.transaction_id.clone(),
            kind: pb::TransactionKind::Transfer as i32,
            source_account_id: source,
            destination_account_id: destination,
            amount: Some(usd("125.50")),
        }
    );
    assert_eq!(app.count("transaction.transaction_status_change").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deposits_and_withdrawals_name_their_one_account_and_their_own_event() {
    let app = TransactionApp::spawn().await;
    let account_id = account();
    let deposit = app
        .client
        .clone()
        .create_deposit(pb::CreateDepositRequest {
            idempotency_key: key(),
            account_id: account_id.clone(),
            amount: Some(usd("50")),
            description: String::new(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deposit.kind, pb::TransactionKind::Deposit as i32);
    assert_eq!(
        (
            deposit.source_account_id.as_str(),
            deposit.destination_account_id.as_str()
        ),
        ("", account_id.as_str())
    );
    let event: pb::TransactionRequestedEvent = app.event(wire::event::DEPOSIT_REQUESTED).await;
    assert_eq!(event.transaction_id, deposit.transaction_id);

    let withdrawal = app
        .client
        .clone()
        .create_withdrawal(pb::CreateWithdrawalRequest {
            idempotency_key: key(),
            account_id: account_id.clone(),
            amount: Some(usd("20")),
            description: "atm".to_owned(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(withdrawal.kind, pb::TransactionKind::Withdrawal as i32);
    assert_eq!(
        (
            withdrawal.source_account_id.as_str(),
            withdrawal.destination_account_id.as_str()
        ),
        (account_id.as_str(), "")
    );
    let event: pb::TransactionRequestedEvent = app.event(wire::event::WITHDRAWAL_REQUESTED).await;
    assert_eq!(event.source_account_id, account_id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_with_bad_fields_are_refused_naming_each_field_and_nothing_is_written() {
    let app = TransactionApp::spawn().await;
    let same = account();
    let bad_transfer = pb::CreateTransferRequest {
        idempotency_key: String::new(),
        source_account_id: "not-a-uuid".to_owned(),
        destination_account_id: String::new(),
        amount: Some(pb::Money {
            currency: "XYZ".to_owned(),
            amount: "-3".to_owned(),
        }),
        description: "x".repeat(501),
        wait: None,
    };
    let bad_transfer = with_wait(bad_transfer, 31);
    let status = app
        .client
        .clone()
        .create_transfer(bad_transfer)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "VALIDATION_FAILED");
    assert_eq!(
        violated_fields(&status),
        [
            "idempotency_key",
            "source_account_id",
            "destination_account_id",
            "amount.currency",
            "amount.amount",
            "description",
            "wait"
        ]
    );

    let to_itself = pb::CreateTransferRequest {
        amount: Some(usd("1.001")),
        ..app.transfer(&same, &same, "1")
    };
    let status = app
        .client
        .clone()
        .create_transfer(to_itself)
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["destination_account_id", "amount.amount"]
    );

    let too_large = app.transfer(&account(), &account(), "1000.01");
    let limited = RequestArgs {
        max_amount: rust_decimal::Decimal::from(1000),
        ..RequestArgs::default()
    };
    let limited_app = TransactionApp::spawn_with(limited).await;
    let status = limited_app
        .client
        .clone()
        .create_transfer(too_large)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["amount.amount"]);
    limited_app.stop().await;

    let mut no_amount = pb::CreateDepositRequest {
        idempotency_key: key(),
        account_id: "42".to_owned(),
        amount: None,
        description: String::new(),
        wait: None,
    };
    let mut negative = no_amount.wait.take().unwrap_or_default();
    negative.seconds = -1;
    no_amount.wait = Some(negative);
    let status = app
        .client
        .clone()
        .create_deposit(no_amount)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["account_id", "amount", "wait"]);

    let no_key = pb::CreateWithdrawalRequest {
        idempotency_key: String::new(),
        account_id: account(),
        amount: Some(pb::Money {
            currency: "JPY".to_owned(),
            amount: "10.5".to_owned(),
        }),
        description: String::new(),
        wait: None,
    };
    let status = app
        .client
        .clone()
        .create_withdrawal(no_key)
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["idempotency_key", "amount.amount"]
    );

    assert_eq!(app.count("transaction.transaction").await, 0);
    assert_eq!(app.count("transaction.outbox").await, 0);
    assert_eq!(app.count("transaction.idempotency_key").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_request_with_its_key_returns_the_first_answer_and_writes_once() {
    let app = TransactionApp::spawn().await;
    let request = app.transfer(&account(), &account(), "10");
    let first = app
        .client
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client
        .clone()
        .create_transfer(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(app.count("transaction.transaction").await, 1);
    assert_eq!(app.count("transaction.outbox").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_past_its_retention_is_claimed_afresh_by_another_request() {
    let app = TransactionApp::spawn().await;
    let request = app.transfer(&account(), &account(), "10");
    let first = app
        .client
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap()
        .into_inner();
    // The default retention is a day.
    app.clock.advance(chrono::Duration::seconds(24 * 3600 + 1));
    let other = pb::CreateTransferRequest {
        amount: Some(usd("11")),
        ..request.clone()
    };
    let second = app
        .client
        .clone()
        .create_transfer(other.clone())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(first.transaction_id, second.transaction_id);
    assert_eq!(second.amount, Some(usd("11.00")));
    // The key now answers the second request, and refuses the first.
    let again = app
        .client
        .clone()
        .create_transfer(other)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, second);
    let status = app
        .client
        .clone()
        .create_transfer(request)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("transaction.transaction").await, 2);
    assert_eq!(app.count("transaction.outbox").await, 2);
    assert_eq!(app.count("transaction.idempotency_key").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reusing_a_key_with_another_request_is_refused_and_changes_nothing() {
    let app = TransactionApp::spawn().await;
    let request = app.transfer(&account(), &account(), "10");
    app.client
        .clone()
        .create_transfer(request.clone())
        .await
        .unwrap();
    let other = pb::CreateTransferRequest {
        amount: Some(usd("11")),
        ..request
    };
    let status = app.client.clone().create_transfer(other).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("transaction.transaction").await, 1);
    assert_eq!(app.count("transaction.outbox").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_concurrent_requests_with_one_key_create_one_transaction() {
    let app = TransactionApp::spawn().await;
    let request = app.transfer(&account(), &account(), "10");
    let attempts = (0..10).map(|_| {
        let mut client = app.client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.create_transfer(request).await })
    });
    let mut ids = Vec::new();
    for attempt in futures::future::join_all(attempts).await {
        match attempt.expect("request task") {
            Ok(answer) => ids.push(answer.into_inner().transaction_id),
            // A request that waited too long for the first one is told to retry.
            Err(status) => assert_eq!(reason(&status), "IDEMPOTENCY_KEY_IN_USE", "{status:?}"),
        }
    }
    assert!(!ids.is_empty());
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.count("transaction.transaction").await, 1);
    assert_eq!(app.count("transaction.outbox").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_hand_their_requests_over_without_a_notify_and_the_relay_gathers_them_into_one_round()
 {
    let app = TransactionApp::spawn_gathering(RequestArgs::default(), Duration::from_secs(2)).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.owner)
        .await
        .unwrap();
    listener
        .listen(&corebank_platform::messaging::notify_channel("transaction"))
        .await
        .unwrap();

    let first = app.create_transfer().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = app.create_transfer().await;
    let requested: Vec<String> = [
        app.event::<pb::TransactionRequestedEvent>(wire::event::TRANSFER_REQUESTED)
            .await,
        app.event::<pb::TransactionRequestedEvent>(wire::event::TRANSFER_REQUESTED)
            .await,
    ]
    .map(|event| event.transaction_id)
    .into();
    assert_eq!(requested, [first.transaction_id, second.transaction_id]);

    // Marked sent with the start of the round that published them.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let rounds = loop {
        let (rounds, unmarked): (i64, i64) = sqlx::query_as(
            "select count(distinct sent_at), count(*) filter (where sent_at is null)
               from transaction.outbox where routing_key = $1",
        )
        .bind(wire::event::TRANSFER_REQUESTED)
        .fetch_one(&app.db.owner)
        .await
        .unwrap();
        if unmarked == 0 {
            break rounds;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never marked sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rounds, 1, "both requests published in one round");
    // A NOTIFY is sent at its commit, long before the publish seen above.
    let notified = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(
        notified.is_err(),
        "a create notified the relay: {notified:?}"
    );
    app.stop().await;
}
