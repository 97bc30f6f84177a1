//! Messaging against the real RabbitMQ and PostgreSQL of the machine: each
//! test has its own database and broker namespace, and every wait is bounded.
//! Here, delivery: exactly once through outbox, relay, consumer and inbox,
//! also with two relays, redeliveries, failing batches and lost connections
//! (what becomes of failing messages is in `parking.rs`).

#[path = "common/messaging.rs"]
mod harness;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use corebank_platform::messaging::{
    ConsumerConfig, Exchange, OutgoingMessage, RelayConfig, enqueue,
};
use harness::{TestEnv, TestHandler, close_connections_named, eventually, fast_relay, ledger_spec};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn a_committed_message_is_consumed_exactly_once_and_a_rolled_back_one_is_never_published() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());
    env.spawn_relay(fast_relay());

    let committed = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![1]);
    let rolled_back = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![2]);
    let mut tx = env.pool.begin().await.unwrap();
    enqueue(&mut tx, rolled_back.clone()).await.unwrap();
    tx.rollback().await.unwrap();
    env.enqueue_committed(committed.clone()).await;

    eventually("the committed message's effect", || async {
        (env.effects(committed.message_id).await == 1).then_some(())
    })
    .await;
    // Give a duplicate or the rolled-back message time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(env.effects(committed.message_id).await, 1);
    assert_eq!(handler.calls(committed.message_id).len(), 1);
    assert_eq!(env.effects(rolled_back.message_id).await, 0);
    assert!(handler.calls(rolled_back.message_id).is_empty());
    let outbox_rows: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(outbox_rows, 1, "the rolled-back row never existed");
    assert_eq!(env.pending().await, 0);
    assert_eq!(
        env.scalar(
            "select count(*) from inbox where message_id = $1",
            committed.message_id
        )
        .await,
        1
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_marks_rows_sent_only_after_the_broker_confirms_them() {
    let mut env = TestEnv::new().await;
    // A queue that holds one message and makes the broker nack the rest.
    let mut capped = FieldTable::default();
    capped.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("classic")),
    );
    capped.insert("x-max-length".into(), AMQPValue::LongInt(1));
    capped.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    let queue = env.sink("capped", "capped.#", capped).await;
    // Three destinations, so the relay cannot pack them into one batch.
    let messages: Vec<OutgoingMessage> = (0..3)
        .map(|i| OutgoingMessage::event(&format!("capped.thing.{i}"), "test.Ok", vec![i]))
        .collect();
    for message in &messages {
        env.enqueue_committed(message.clone()).await;
    }
    env.spawn_relay(fast_relay());

    eventually("one confirmed row", || async {
        (env.pending().await == 2).then_some(())
    })
    .await;
    // Several relay rounds later the nacked rows are still pending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(env.pending().await, 2, "nacked rows must stay pending");
    assert_eq!(env.queue_depth(&queue).await, 1);

    // Room in the queue: the relay retries the nacked rows until all are confirmed.
    let received: RefCell<HashMap<String, usize>> = RefCell::default();
    eventually("every row confirmed and delivered", || async {
        for id in env.drain(&queue).await {
            *received.borrow_mut().entry(id).or_default() += 1;
        }
        (env.pending().await == 0 && received.borrow().len() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut received = received.into_inner();
    for id in env.drain(&queue).await {
        *received.entry(id).or_default() += 1;
    }
    for message in &messages {
        assert_eq!(received.get(&message.message_id.to_string()), Some(&1));
    }
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_relays_on_one_outbox_publish_each_row_once() {
    let mut env = TestEnv::new().await;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let queue = env.sink("bulk", "bulk.#", quorum).await;
    let mut ids = Vec::new();
    for chunk in 0..20 {
        let mut tx = env.pool.begin().await.unwrap();
        for i in 0..15u8 {
            let message = OutgoingMessage::event("bulk.thing.happened", "test.Ok", vec![chunk, i]);
            ids.push(message.message_id.to_string());
            enqueue(&mut tx, message).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let small_batches = RelayConfig {
        batch_size: 10,
        ..fast_relay()
    };
    env.spawn_relay(small_batches.clone());
    env.spawn_relay(small_batches);

    let received: RefCell<HashMap<String, usize>> = RefCell::default();
    eventually("all rows delivered", || async {
        for id in env.drain(&queue).await {
            *received.borrow_mut().entry(id).or_default() += 1;
        }
        (env.pending().await == 0 && received.borrow().len() == ids.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut received = received.into_inner();
    for id in env.drain(&queue).await {
        *received.entry(id).or_default() += 1;
    }
    assert_eq!(received.len(), 300);
    let duplicates: Vec<_> = received.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        duplicates.is_empty(),
        "published more than once: {duplicates:?}"
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_message_is_acknowledged_without_a_second_effect() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());

    let events = env.ns.exchange(Exchange::Events);
    let message = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![7]);
    let properties = message.properties("test");
    env.publish_raw(
        &events,
        &message.routing_key,
        &message.payload,
        properties.clone(),
    )
    .await;
    env.publish_raw(&events, &message.routing_key, &message.payload, properties)
        .await;
    // The queue is ordered and has one consumer: once the marker is handled,
    // both copies before it were too.
    let marker = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![8]);
    env.publish_events([&marker]).await;

    eventually("the marker's effect", || async {
        (env.effects(marker.message_id).await == 1).then_some(())
    })
    .await;
    assert_eq!(env.effects(message.message_id).await, 1);
    assert_eq!(
        handler.calls(message.message_id).len(),
        1,
        "the duplicate never reached the handler"
    );
    assert_eq!(env.queue_depth(&env.ns.queue("ledger")).await, 0);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_message_in_a_batch_does_not_undo_its_neighbours() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    // Queued before the consumer starts, so they arrive prefetched together.
    let first = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![1]);
    let refused = OutgoingMessage::event("test.thing.happened", "test.Permanent", vec![2]);
    let last = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![3]);
    env.publish_events([&first, &refused, &last]).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());

    eventually("the last effect", || async {
        (env.effects(last.message_id).await == 1).then_some(())
    })
    .await;
    assert_eq!(env.effects(first.message_id).await, 1);
    assert_eq!(env.effects(refused.message_id).await, 0);
    let inboxed = env
        .scalar(
            "select count(*) from inbox where message_id = $1",
            refused.message_id,
        )
        .await;
    assert_eq!(
        inboxed, 0,
        "the failed message's inbox row rolled back with its effect"
    );
    let parked = env.parked_once("ledger", 1).await;
    assert_eq!(parked[0].message_id, Some(refused.message_id.to_string()));
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_that_gathers_applies_messages_arriving_within_its_window_in_one_transaction() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let handler = TestHandler::default();
    let gathering = ConsumerConfig {
        gather: Duration::from_secs(3),
        ..ConsumerConfig::default()
    };
    env.spawn_consumer_with(spec, handler.clone(), gathering);
    let first = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![1]);
    let second = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![2]);
    env.publish_events([&first]).await;
    // Long enough for a consumer that does not gather to apply the first
    // on its own; well inside the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.effects(first.message_id).await, 0, "still gathering");
    env.publish_events([&second]).await;
    for message in [&first, &second] {
        eventually("both effects", || async {
            (env.effects(message.message_id).await == 1).then_some(())
        })
        .await;
    }
    assert_eq!(
        env.applied_at(first.message_id).await,
        env.applied_at(second.message_id).await,
        "one transaction applied both"
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_fails_as_a_whole_is_rolled_back_and_applied_again_one_message_at_a_time() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let messages: Vec<_> = (0..3u8)
        .map(|n| OutgoingMessage::event("test.thing.happened", "test.Ok", vec![n]))
        .collect();
    env.publish_events(&messages).await;
    let handler = TestHandler::default();
    handler.batches_fail.store(true, Ordering::SeqCst);
    env.spawn_consumer(spec, handler.clone());

    for message in &messages {
        eventually("every effect", || async {
            (env.effects(message.message_id).await == 1).then_some(())
        })
        .await;
    }
    for message in &messages {
        assert_eq!(env.effects(message.message_id).await, 1, "applied once");
        let inboxed = env
            .scalar(
                "select count(*) from inbox where message_id = $1",
                message.message_id,
            )
            .await;
        assert_eq!(inboxed, 1);
        // Once in the failed batch (rolled back), once on its own.
        assert_eq!(handler.calls(message.message_id).len(), 2);
    }
    let parked = env.parked("ledger").await;
    assert!(parked.is_empty(), "nothing parked: {parked:?}");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_consumer_and_relay_recover_when_the_broker_closes_their_connection() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());
    env.spawn_relay(fast_relay());

    let before = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![1]);
    env.enqueue_committed(before.clone()).await;
    eventually("the first effect", || async {
        (env.effects(before.message_id).await == 1).then_some(())
    })
    .await;
    let opened = env.broker.connections_opened();

    let closed = close_connections_named(env.broker.connection_name()).await;
    assert_eq!(closed, 1);

    let after = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![2]);
    env.enqueue_committed(after.clone()).await;
    eventually("the effect of a message sent after the close", || async {
        (env.effects(after.message_id).await == 1).then_some(())
    })
    .await;
    assert!(
        env.broker.connections_opened() > opened,
        "the broker handle reconnected"
    );
    assert_eq!(env.effects(before.message_id).await, 1);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_flushes_pending_rows_when_shut_down() {
    let mut env = TestEnv::new().await;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let queue = env.sink("flush", "flush.#", quorum).await;
    // Polls so rarely that only the shutdown flush can publish in time.
    let relay =
        corebank_platform::messaging::OutboxRelay::new(env.pool.clone(), env.broker.clone())
            .with_config(RelayConfig {
                poll_interval: Duration::from_secs(3600),
                ..RelayConfig::default()
            });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Written without NOTIFY, as if the notification had been lost.
    sqlx::query(
        "insert into outbox (message_id, exchange, routing_key, message_type, payload, occurred_at) \
         values ($1, 'events', 'flush.thing.happened', 'test.Ok', '\\x01', now())",
    )
    .bind(Uuid::now_v7())
    .execute(&env.pool)
    .await
    .unwrap();
    shutdown.cancel();
    tokio::time::timeout(harness::WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(env.pending().await, 0);
    assert_eq!(env.drain(&queue).await.len(), 1);
    env.teardown().await;
}
