//! Reading transactions: waiting, watching, getting and listing.

use super::*;

/// The answer of a create running in the background, within a bound.
async fn answered(
    creating: JoinHandle<Result<tonic::Response<pb::Transaction>, tonic::Status>>,
) -> pb::Transaction {
    tokio::time::timeout(Duration::from_secs(40), creating)
        .await
        .expect("answer in time")
        .expect("create task")
        .expect("create answered")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_with_a_wait_answers_with_the_terminal_status_reached_within_it() {
    let app = TransactionApp::spawn().await;
    // The longest wait there is: an answer before it ran out can only be
    // the terminal status cutting it short.
    let request = with_wait(app.transfer(&account(), &account(), "10"), 30);
    let mut client = app.client.clone();
    let started = std::time::Instant::now();
    let creating = tokio::spawn(async move { client.create_transfer(request).await });

    // Play the orchestrator: learn the id from the requested event, then complete it.
    let event: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;
    let saga = Uuid::now_v7();
    app.send(&mark_processing(saga, &event.transaction_id), saga)
        .await;
    app.send(&complete(saga, &event.transaction_id, "journal-7"), saga)
        .await;

    let answer = answered(creating).await;
    assert_eq!(answer.transaction_id, event.transaction_id);
    assert_eq!(answer.status, pb::TransactionStatus::Completed as i32);
    assert_eq!(answer.journal_id, "journal-7");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered as soon as it completed, not when the wait ran out"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_learns_the_outcome_when_the_status_listener_was_cut_off_meanwhile() {
    let app = TransactionApp::spawn().await;
    // Shorter than the waiters' safety poll: only a notification, or the
    // hub's call to re-read after it lost its connection, answers in time.
    let request = with_wait(app.transfer(&account(), &account(), "10"), 4);
    let mut client = app.client.clone();
    let creating = tokio::spawn(async move { client.create_transfer(request).await });
    let event: pb::TransactionRequestedEvent = app.event(wire::event::TRANSFER_REQUESTED).await;

    let cut: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid()
            and query ilike '%listen%transaction_status%'",
    )
    .fetch_all(&app.db.owner)
    .await
    .unwrap();
    assert_eq!(cut, vec![true], "the one status listener was cut off");
    let saga = Uuid::now_v7();
    app.send(&complete(saga, &event.transaction_id, "journal-9"), saga)
        .await;

    let answer = answered(creating).await;
    assert_eq!(answer.transaction_id, event.transaction_id);
    assert_eq!(
        answer.status,
        pb::TransactionStatus::Completed as i32,
        "the waiter re-read after the cut instead of sleeping until its wait ran out"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_with_a_wait_that_runs_out_answers_with_the_latest_status() {
    let app = TransactionApp::spawn().await;
    let request = with_wait(app.transfer(&account(), &account(), "10"), 1);
    let started = std::time::Instant::now();
    let answer = app
        .client
        .clone()
        .create_transfer(request)
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(answer.status, pb::TransactionStatus::Pending as i32);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watching_a_transaction_streams_each_status_until_it_ends() {
    let app = TransactionApp::spawn().await;
    let id = app.create_transfer().await.transaction_id;
    let mut stream = app
        .client
        .clone()
        .watch_transaction(pb::GetTransactionRequest {
            transaction_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.expect("current state");
    assert_eq!(first.status, pb::TransactionStatus::Pending as i32);

    let saga = Uuid::now_v7();
    // Both at once: the watcher must still see PROCESSING on its way.
    app.send(&mark_processing(saga, &id), saga).await;
    app.send(&complete(saga, &id, "journal-9"), saga).await;
    let second = next(&mut stream).await.expect("processing");
    assert_eq!(second.status, pb::TransactionStatus::Processing as i32);
    assert_eq!(second.journal_id, "");
    let third = next(&mut stream).await.expect("completed");
    assert_eq!(third.status, pb::TransactionStatus::Completed as i32);
    assert_eq!(third.journal_id, "journal-9");
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends after a terminal status"
    );

    let unknown = app
        .client
        .clone()
        .watch_transaction(pb::GetTransactionRequest {
            transaction_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_or_malformed_transaction_id_is_answered_clearly() {
    let app = TransactionApp::spawn().await;
    let missing = app
        .client
        .clone()
        .get_transaction(pb::GetTransactionRequest {
            transaction_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "TRANSACTION_NOT_FOUND");
    let malformed = app
        .client
        .clone()
        .get_transaction(pb::GetTransactionRequest {
            transaction_id: "42".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&malformed), ["transaction_id"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_of_an_account_are_listed_newest_first_page_by_page_and_filtered() {
    let app = TransactionApp::spawn().await;
    let mine = account();
    let mut created = Vec::new();
    for index in 0..5 {
        // Alternate sides, one minute apart.
        let request = if index % 2 == 0 {
            app.transfer(&mine, &account(), "1")
        } else {
            app.transfer(&account(), &mine, "1")
        };
        created.push(
            app.client
                .clone()
                .create_transfer(request)
                .await
                .unwrap()
                .into_inner(),
        );
        app.clock.advance(chrono::Duration::minutes(1));
    }
    app.create_transfer().await; // someone else's
    let newest_first: Vec<String> = created
        .iter()
        .rev()
        .map(|t| t.transaction_id.clone())
        .collect();

    let list = |request: pb::ListTransactionsRequest| {
        let mut client = app.client.clone();
        async move { client.list_transactions(request).await }
    };
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list(pb::ListTransactionsRequest {
            account_id: mine.clone(),
            page_size: 2,
            page_token: page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert!(page.transactions.len() <= 2);
        seen.extend(page.transactions.into_iter().map(|t| t.transaction_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, newest_first);

    // A time window: created at or after the second, before the fourth.
    let window = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        start_time: created[1].create_time,
        end_time: created[3].create_time,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let ids: Vec<_> = window
        .transactions
        .iter()
        .map(|t| t.transaction_id.clone())
        .collect();
    assert_eq!(
        ids,
        [
            created[2].transaction_id.clone(),
            created[1].transaction_id.clone()
        ]
    );

    // A status filter, after completing one.
    let saga = Uuid::now_v7();
    app.send(
        &complete(saga, &created[0].transaction_id, "journal-1"),
        saga,
    )
    .await;
    app.wait_for_status(&created[0].transaction_id, pb::TransactionStatus::Completed)
        .await;
    let completed = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        status: pb::TransactionStatus::Completed as i32,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let ids: Vec<_> = completed
        .transactions
        .iter()
        .map(|t| t.transaction_id.clone())
        .collect();
    assert_eq!(ids, [created[0].transaction_id.clone()]);

    // A page token is bound to its filters.
    let first_page = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        page_size: 1,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let status = list(pb::ListTransactionsRequest {
        account_id: mine.clone(),
        page_size: 1,
        page_token: first_page.next_page_token,
        status: pb::TransactionStatus::Pending as i32,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);

    let status = list(pb::ListTransactionsRequest {
        account_id: "mine".to_owned(),
        status: 42,
        start_time: created[3].create_time,
        end_time: created[1].create_time,
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["account_id", "status", "end_time"]
    );
    app.stop().await;
}
