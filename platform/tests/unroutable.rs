//! A command published before any queue is bound to its routing key is not
//! lost: the relay keeps it pending until a consumer's queue exists. An event
//! nobody subscribes to is simply done.

#[path = "common/messaging.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use corebank_platform::messaging::{Exchange, OutgoingMessage, QueueSpec};
use harness::{TestEnv, TestHandler, eventually, fast_relay};

#[tokio::test(flavor = "multi_thread")]
async fn a_command_sent_before_its_queue_exists_is_delivered_once_the_queue_appears() {
    let mut env = TestEnv::new().await;
    env.spawn_relay(fast_relay());
    let command = OutgoingMessage::command("ledger", "test.Ok", vec![7]);
    let event = OutgoingMessage::event("test.nobody.listens", "test.Ok", vec![8]);
    env.enqueue_committed(command.clone()).await;
    env.enqueue_committed(event.clone()).await;

    // The event is done; the command waits for a queue.
    eventually("the unsubscribed event to be marked sent", || async {
        (env.scalar(
            "select count(*) from outbox where message_id = $1 and sent_at is not null",
            event.message_id,
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        env.scalar(
            "select count(*) from outbox where message_id = $1 and sent_at is null",
            command.message_id
        )
        .await,
        1,
        "an unroutable command stays pending"
    );

    let spec = QueueSpec::new("ledger").bind(Exchange::Commands, "ledger");
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());
    eventually("the command's effect", || async {
        (env.effects(command.message_id).await == 1).then_some(())
    })
    .await;
    assert_eq!(env.pending().await, 0);
    env.teardown().await;
}
