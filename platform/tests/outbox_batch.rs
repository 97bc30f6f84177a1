//! `enqueue_all`: several messages written in one statement keep their
//! order, commit or vanish with the caller's transaction, and are published
//! in that order.

#[path = "common/messaging.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use corebank_platform::messaging::{OutgoingMessage, RelayConfig, enqueue_all};
use harness::{TestEnv, eventually};
use lapin::types::FieldTable;

#[tokio::test(flavor = "multi_thread")]
async fn messages_enqueued_together_commit_together_and_are_published_in_their_order() {
    let mut env = TestEnv::new().await;
    let sink = env.sink("batch", "test.#", FieldTable::default()).await;
    let batch: Vec<OutgoingMessage> = (0..5u8)
        .map(|n| OutgoingMessage::event("test.thing.happened", "test.Ok", vec![n]))
        .collect();
    let rolled_back: Vec<OutgoingMessage> = (0..3u8)
        .map(|n| OutgoingMessage::event("test.thing.happened", "test.Ok", vec![100 + n]))
        .collect();

    let mut tx = env.pool.begin().await.unwrap();
    enqueue_all(&mut tx, rolled_back).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = env.pool.begin().await.unwrap();
    enqueue_all(&mut tx, Vec::new()).await.unwrap();
    enqueue_all(&mut tx, batch.clone()).await.unwrap();
    tx.commit().await.unwrap();

    let stored: Vec<String> =
        sqlx::query_scalar("select message_id::text from outbox order by outbox_id")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let expected: Vec<String> = batch.iter().map(|m| m.message_id.to_string()).collect();
    assert_eq!(
        stored, expected,
        "one row per message, in the callers' order, none rolled back"
    );

    env.spawn_relay(RelayConfig {
        poll_interval: Duration::from_millis(200),
        ..RelayConfig::default()
    });
    let published = std::cell::RefCell::new(Vec::new());
    eventually("all five published", || async {
        let drained = env.drain(&sink).await;
        let mut published = published.borrow_mut();
        published.extend(drained);
        (published.len() >= 5).then_some(())
    })
    .await;
    let published = published.into_inner();
    assert_eq!(published, expected, "published once each, in order");
    assert_eq!(env.pending().await, 0);
    env.teardown().await;
}
