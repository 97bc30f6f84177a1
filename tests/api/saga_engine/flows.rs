//! Saga flows: happy paths, silent participants, duplicates and restarts.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_reserves_screens_posts_and_completes_in_order() {
    let mut test = SagaTest::start(patient()).await;
    let request = test.request(pb::TransactionKind::Transfer, "125.50").await;

    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    let funds = reserve.decode::<pb::ReserveFundsCommand>();
    assert_eq!(reserve.participant, "account");
    assert_eq!(funds.account_id, request.source_account_id);
    assert_eq!(
        funds.amount.as_ref().map(|m| m.amount.as_str()),
        Some("125.50")
    );
    assert_eq!(
        reserve.command_id,
        format!("{}:reserve:forward", reserve.saga_id)
    );
    assert_eq!(
        reserve.correlation_id, reserve.saga_id,
        "the correlation id is the saga id"
    );
    test.succeed(&reserve).await;

    let screen = test.expect::<pb::ScreenTransactionCommand>().await;
    let screening = screen.decode::<pb::ScreenTransactionCommand>();
    assert_eq!(screen.participant, "fraud");
    assert_eq!(
        screen.command_id,
        format!("{}:screen:forward", reserve.saga_id)
    );
    assert_eq!(screening.kind, pb::TransactionKind::Transfer as i32);
    assert_eq!(screening.transaction_id, request.transaction_id);
    assert_eq!(
        (
            screening.source_account_id.as_str(),
            screening.destination_account_id.as_str()
        ),
        (
            request.source_account_id.as_str(),
            request.destination_account_id.as_str()
        )
    );
    assert_eq!(
        screening.amount.as_ref().map(|m| m.amount.as_str()),
        Some("125.50")
    );
    assert!(screening.requested_at.is_some());
    test.succeed(&screen).await;

    let post = test.next_command().await;
    let posting = post.decode::<pb::PostTransferCommand>();
    assert_eq!(posting.reserve_command_id, reserve.command_id);
    assert_eq!(
        posting.destination_account_id,
        request.destination_account_id
    );
    test.succeed(&post).await;

    let complete = test.next_command().await;
    assert_eq!(
        complete
            .decode::<pb::CompleteTransactionCommand>()
            .journal_id,
        "journal-1"
    );
    test.succeed(&complete).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Completed)
        .await;
    assert_eq!(saga.transaction_id, request.transaction_id);
    assert_eq!(
        history_events(&saga),
        pairs(&[
            ("reserve", "started"),
            ("reserve", "succeeded"),
            ("screen", "succeeded"),
            ("post", "succeeded"),
            ("complete", "completed")
        ])
    );
    assert!(
        saga.history
            .windows(2)
            .all(|pair| pair[0].sequence < pair[1].sequence)
    );
    assert!(
        test.drain(Duration::from_millis(500)).await.is_empty(),
        "nothing more is sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_participant_gets_the_same_command_again_with_backoff_and_the_saga_completes_when_it_answers()
 {
    let config = fast();
    let mut test = SagaTest::start(config.clone()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    // The screen goes out beside the reserve; approved at once, only the
    // silent reserve is re-sent.
    let first = test.expect::<pb::ReserveFundsCommand>().await;
    test.approve_screen(&first.saga_id).await;
    let second = test.expect::<pb::ReserveFundsCommand>().await;
    let third = test.expect::<pb::ReserveFundsCommand>().await;
    for resend in [&second, &third] {
        assert_eq!(
            resend.command_id, first.command_id,
            "a re-send keeps the command id"
        );
        assert!(resend.is::<pb::ReserveFundsCommand>());
    }
    assert_ne!(
        first.message_id, second.message_id,
        "each send is a new message"
    );
    assert_ne!(second.message_id, third.message_id);
    test.succeed(&third).await;
    let post = test.expect::<pb::PostTransferCommand>().await;
    test.succeed(&post).await;
    let complete = test.expect::<pb::CompleteTransactionCommand>().await;
    test.succeed(&complete).await;

    let saga = test
        .wait_for_state(&first.saga_id, pb::SagaState::Completed)
        .await;
    // The screen is not re-sent once its approval is applied. On a slow
    // machine the approval can arrive after the group's step timeout, and
    // then the retry logged before it re-sends the screen beside the reserve
    // (its detail names what it re-sent): every screen seen after the
    // approval is one of those, and none follows the approval.
    let approved = saga
        .history
        .iter()
        .position(|entry| entry.step == "screen" && entry.event == "succeeded")
        .expect("the screen's approval is logged");
    let resending_screen =
        |entry: &&pb::SagaLogEntry| entry.event == "retried" && entry.detail.contains("screen");
    assert!(
        !saga.history[approved..]
            .iter()
            .any(|entry| resending_screen(&entry)),
        "the approved screen is re-sent"
    );
    let screens_resent = test.buffered_count::<pb::ScreenTransactionCommand>();
    assert_eq!(
        screens_resent,
        saga.history[..approved]
            .iter()
            .filter(resending_screen)
            .count(),
        "a screen is re-sent only by a retry logged before its approval"
    );
    let retries: Vec<_> = saga
        .history
        .iter()
        .filter(|entry| entry.step == "reserve" && entry.event == "retried")
        .collect();
    // Two re-sends were awaited; a third may fire on a slow machine while
    // the answer to the second is on its way.
    assert!(retries.len() >= 2, "retried {} times", retries.len());
    // Measured on the saga's own clock, from the send that starts each wait:
    // a re-send never comes before its check is due, and each check after a
    // timeout waits the step timeout plus a full-jitter backoff whose ceiling
    // doubles. No bound here depends on how fast this machine is.
    let started = saga
        .history
        .iter()
        .find(|entry| entry.event == "started")
        .expect("a started row");
    let mut previous_send = timestamp(started);
    let mut previous_wait = config.step_timeout;
    for (index, retry) in retries.iter().enumerate() {
        let sent = timestamp(retry);
        let waited = (sent - previous_send).to_std().expect("log rows in order");
        assert!(
            waited >= previous_wait,
            "re-sent after {waited:?}, before its check was due ({previous_wait:?})"
        );
        let scheduled = scheduled_wait(&retry.detail);
        let ceiling = config.backoff(u32::try_from(index).expect("small") + 1, 1.0);
        assert!(
            scheduled >= config.step_timeout && scheduled <= config.step_timeout + ceiling,
            "next check in {scheduled:?}: outside timeout + backoff ceiling {ceiling:?}"
        );
        previous_send = sent;
        previous_wait = scheduled;
    }
}

fn timestamp(entry: &pb::SagaLogEntry) -> chrono::DateTime<chrono::Utc> {
    let time = entry.create_time.expect("log rows carry their time");
    chrono::DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).expect("nanos"))
        .expect("a valid time")
}

/// The wait a `retried` row scheduled: "... next check in 712 ms ...".
fn scheduled_wait(detail: &str) -> Duration {
    let millis = detail
        .split("next check in ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|number| number.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no scheduled wait in {detail:?}"));
    Duration::from_millis(millis)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reserve_that_is_never_answered_is_released_anyway_and_the_saga_times_out() {
    let mut test = SagaTest::start(fast()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    let release = test.expect_release_of(&reserve.saga_id).await;
    test.succeed(&release).await;
    let fail = test.expect::<pb::FailTransactionCommand>().await;
    assert_eq!(
        fail.decode::<pb::FailTransactionCommand>().reason_code,
        "TIMED_OUT"
    );
    test.succeed(&fail).await;

    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Compensated)
        .await;
    assert_eq!(saga.failure_reason, "TIMED_OUT");
    let reserves = test.buffered_count::<pb::ReserveFundsCommand>();
    assert_eq!(
        reserves + 1,
        fast().max_attempts as usize,
        "the reserve was sent max_attempts times"
    );
    assert!(history_events(&saga).contains(&("reserve".to_owned(), "timed_out".to_owned())));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_that_is_never_answered_is_retried_forever_and_flagged_for_an_operator() {
    let config = fast();
    let mut test = SagaTest::start(config.clone()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.succeed(&reserve).await;
    test.approve_screen(&reserve.saga_id).await;

    let mut posts = 0;
    while posts < config.max_attempts + 2 {
        let command = test.next_command().await;
        // On a slow machine the reserve ∥ screen group may time out once
        // before its answers are applied; its re-sends are not the post's.
        if command.is::<pb::ReserveFundsCommand>() || command.is::<pb::ScreenTransactionCommand>() {
            continue;
        }
        assert!(
            command.is::<pb::PostTransferCommand>(),
            "only the post is re-sent, got {}",
            command.message_type
        );
        posts += 1;
    }
    let saga = test
        .wait_for(&reserve.saga_id, "flagged", |saga| saga.requires_attention)
        .await;
    assert_eq!(saga.state, pb::SagaState::Running as i32);
    assert_eq!(saga.current_step, "post");

    let attention = test
        .admin()
        .list_sagas(pb::ListSagasRequest {
            requires_attention_only: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(attention.sagas.len(), 1);

    let post = test.next_command().await;
    test.succeed(&post).await;
    let complete = test.expect::<pb::CompleteTransactionCommand>().await;
    test.succeed(&complete).await;
    let saga = test
        .wait_for_state(&reserve.saga_id, pb::SagaState::Completed)
        .await;
    assert!(!saga.requires_attention);
    assert!(
        test.buffered
            .iter()
            .all(|command| !command.is::<pb::ReleaseFundsCommand>())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_reply_makes_one_transition() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.expect::<pb::ScreenTransactionCommand>().await;
    test.succeed(&reserve).await;
    test.succeed(&reserve).await;
    let more = test.drain(Duration::from_millis(700)).await;
    assert!(more.is_empty(), "the duplicate sent nothing: {more:?}");

    let saga = test.saga(&reserve.saga_id).await;
    let succeeded = history_events(&saga)
        .iter()
        .filter(|(step, event)| step == "reserve" && event == "succeeded")
        .count();
    assert_eq!(succeeded, 1);
    // At the reserve ∥ screen group, the screen alone is still awaited.
    assert_eq!(saga.current_step, "reserve");
    assert_eq!(saga.awaiting_steps, ["screen"]);
}

/// Replies queued while the orchestrator is down reach it together, so they
/// are applied in batches (one lock, one write and one outbox statement per
/// batch): each saga moves once per reply, in order, a later reply of a saga
/// applies to the state an earlier one left, and a duplicate moves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn queued_replies_move_each_saga_once_per_reply_and_in_order() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    test.request(pb::TransactionKind::Transfer, "20.00").await;
    let first = test.expect::<pb::ReserveFundsCommand>().await;
    let second = test.expect::<pb::ReserveFundsCommand>().await;
    assert_ne!(first.saga_id, second.saga_id);
    // Both screens went out with the reserves; nothing re-sends them here.
    test.expect::<pb::ScreenTransactionCommand>().await;
    test.expect::<pb::ScreenTransactionCommand>().await;

    test.stop_orchestrator().await;
    test.succeed(&first).await;
    test.succeed(&second).await;
    test.succeed(&first).await;
    // The first saga's screen approval arrives in the same batch as its
    // reserve reply: the batch applies it to the state the reserve left.
    let screen_of_first = Received {
        command_id: wire::command_id(
            first.saga_id.parse().expect("saga id"),
            "screen",
            wire::Direction::Forward,
        ),
        message_type: wire::message_type::<pb::ScreenTransactionCommand>(),
        ..first.clone()
    };
    test.succeed(&screen_of_first).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    test.start_orchestrator().await;

    let post = test.expect::<pb::PostTransferCommand>().await;
    assert_eq!(post.saga_id, first.saga_id);

    let saga = test.saga(&first.saga_id).await;
    let steps: Vec<_> = history_events(&saga)
        .into_iter()
        .filter(|(_, event)| event == "succeeded")
        .map(|(step, _)| step)
        .collect();
    assert_eq!(
        steps,
        ["reserve", "screen"],
        "one transition per reply, in order"
    );
    assert_eq!(saga.current_step, "post");
    let saga = test.saga(&second.saga_id).await;
    assert_eq!(saga.awaiting_steps, ["screen"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_transaction_request_starts_one_saga() {
    let mut test = SagaTest::start(patient()).await;
    let request = test.request(pb::TransactionKind::Transfer, "10.00").await;
    test.publish_request(&request).await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.expect::<pb::ScreenTransactionCommand>().await;
    let more = test.drain(Duration::from_millis(700)).await;
    assert!(
        more.is_empty(),
        "one saga, one reserve and one screen: {more:?}"
    );
    assert_eq!(test.saga_count().await, 1);
    assert_eq!(
        test.saga_id_of(&request.transaction_id).await,
        reserve.saga_id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saga_interrupted_by_a_restart_completes_on_the_new_instance() {
    let mut test = SagaTest::start(patient()).await;
    test.request(pb::TransactionKind::Transfer, "10.00").await;
    let reserve = test.expect::<pb::ReserveFundsCommand>().await;
    test.succeed(&reserve).await;
    test.approve_screen(&reserve.saga_id).await;
    let post = test.expect::<pb::PostTransferCommand>().await;

    test.stop_orchestrator().await;
    // The reply waits in the durable queue while nobody runs.
    test.succeed(&post).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    test.start_orchestrator().await;

    let complete = test.expect::<pb::CompleteTransactionCommand>().await;
    test.succeed(&complete).await;
    test.wait_for_state(&reserve.saga_id, pb::SagaState::Completed)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_is_screened_then_credits_the_account_and_completes() {
    let mut test = SagaTest::start(patient()).await;
    let request = test.request(pb::TransactionKind::Deposit, "99.99").await;
    let screen = test.expect::<pb::ScreenTransactionCommand>().await;
    let screening = screen.decode::<pb::ScreenTransactionCommand>();
    assert_eq!(screening.kind, pb::TransactionKind::Deposit as i32);
    assert_eq!(screening.source_account_id, "");
    test.succeed(&screen).await;
    let deposit = test.next_command().await;
    let posting = deposit.decode::<pb::PostDepositCommand>();
    assert_eq!(posting.account_id, request.destination_account_id);
    test.succeed(&deposit).await;
    let complete = test.next_command().await;
    test.succeed(&complete).await;
    let saga = test
        .wait_for_state(&deposit.saga_id, pb::SagaState::Completed)
        .await;
    assert_eq!(saga.saga_type, "deposit");
}
