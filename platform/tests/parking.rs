//! Messages that fail: transient failures retried with growing delays until
//! they succeed or land in the dead-letter queue, malformed and permanently
//! failing ones parked at once, and parked messages replayed. Against the
//! real RabbitMQ and PostgreSQL, as the other messaging tests.

#[allow(dead_code)]
#[path = "common/messaging.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use corebank_platform::messaging::dlq::{ReplaySelection, replay_parked};
use corebank_platform::messaging::{Exchange, OutgoingMessage, RetryPolicy};
use harness::{TestEnv, TestHandler, eventually, fast_relay, ledger_spec};
use lapin::BasicProperties;

#[tokio::test(flavor = "multi_thread")]
async fn a_transiently_failing_handler_is_retried_with_growing_delays_and_then_succeeds() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec().with_retry(RetryPolicy {
        delays: vec![Duration::from_millis(300), Duration::from_millis(600)],
        max_attempts: 5,
    });
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());
    env.spawn_relay(fast_relay());

    let message = OutgoingMessage::event("test.thing.happened", "test.FailTransiently:2", vec![]);
    env.enqueue_committed(message.clone()).await;

    eventually("the effect after two failures", || async {
        (env.effects(message.message_id).await == 1).then_some(())
    })
    .await;
    let calls = handler.calls(message.message_id);
    assert_eq!(calls.len(), 3);
    let first_delay = calls[1] - calls[0];
    let second_delay = calls[2] - calls[1];
    assert!(
        first_delay >= Duration::from_millis(280),
        "first retry after {first_delay:?}"
    );
    assert!(
        second_delay >= Duration::from_millis(580),
        "second retry after {second_delay:?}"
    );
    let attempt: i32 = sqlx::query_scalar("select attempt from effect where message_id = $1")
        .bind(message.message_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(attempt, 3);
    assert!(env.parked("ledger").await.is_empty());
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_that_always_fails_transiently_ends_in_the_dead_letter_queue() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec().with_retry(RetryPolicy {
        delays: vec![Duration::from_millis(200)],
        max_attempts: 3,
    });
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());
    env.spawn_relay(fast_relay());

    let message = OutgoingMessage::event("test.thing.happened", "test.AlwaysTransient", vec![9]);
    env.enqueue_committed(message.clone()).await;

    let parked = env.parked_once("ledger", 1).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].message_id.as_deref(),
        Some(message.message_id.to_string().as_str())
    );
    assert_eq!(parked[0].reason.as_deref(), Some("retries-exhausted"));
    assert_eq!(parked[0].attempt, 3);
    assert_eq!(parked[0].routing_key, "test.thing.happened");
    assert_eq!(parked[0].payload, vec![9]);
    assert_eq!(handler.calls(message.message_id).len(), 3);
    assert_eq!(env.effects(message.message_id).await, 0);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_permanently_failing_messages_are_parked_at_once_and_replay_moves_them_back()
{
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());
    env.spawn_relay(fast_relay());
    let events = env.ns.exchange(Exchange::Events);

    // No message id, no type: not an envelope at all.
    env.publish_raw(
        &events,
        "test.thing.garbled",
        b"garbage",
        BasicProperties::default(),
    )
    .await;
    let refused = OutgoingMessage::event("test.thing.happened", "test.Permanent", vec![3]);
    env.enqueue_committed(refused.clone()).await;
    let fine = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![4]);
    env.enqueue_committed(fine.clone()).await;

    eventually("the next message's effect", || async {
        (env.effects(fine.message_id).await == 1).then_some(())
    })
    .await;
    let parked = env.parked_once("ledger", 2).await;
    assert_eq!(
        handler.calls(refused.message_id).len(),
        1,
        "a permanent failure is never retried"
    );
    let malformed = parked
        .iter()
        .find(|parked| parked.message_id.is_none())
        .expect("malformed parked");
    assert_eq!(malformed.reason.as_deref(), Some("malformed"));
    assert_eq!(malformed.payload, b"garbage".to_vec());
    let permanent = parked
        .iter()
        .find(|parked| parked.message_id.is_some())
        .expect("permanent parked");
    assert_eq!(permanent.reason.as_deref(), Some("permanent"));
    assert!(
        permanent
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("business rule says no")
    );
    // Listing does not consume.
    assert_eq!(env.parked("ledger").await.len(), 2);

    handler.healed.store(true, Ordering::SeqCst);
    let selection = ReplaySelection::MessageIds(vec![refused.message_id]);
    let replayed = replay_parked(env.tools(), &env.ns, "ledger", &selection, 10)
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    eventually("the replayed message's effect", || async {
        (env.effects(refused.message_id).await == 1).then_some(())
    })
    .await;
    let still_parked = env.parked("ledger").await;
    assert_eq!(still_parked.len(), 1);
    assert!(
        still_parked[0].message_id.is_none(),
        "only the malformed message stays parked"
    );
    env.teardown().await;
}
