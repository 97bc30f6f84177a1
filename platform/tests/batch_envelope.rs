//! The batch envelope: what one relay round has for one destination goes out
//! as one AMQP message, and the consumer treats each inner message as a
//! delivery of its own (inbox row, retry, parking).

#[path = "common/messaging.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use corebank_platform::messaging::{
    BATCH_MESSAGE_TYPE, Exchange, OutgoingMessage, QueueSpec, RelayConfig, RetryPolicy, enqueue,
    unpack,
};
use harness::{TestEnv, TestHandler, eventually};
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;

fn ledger_spec() -> QueueSpec {
    QueueSpec::new("ledger")
        .bind(Exchange::Events, "test.#")
        .with_retry(RetryPolicy {
            delays: vec![Duration::from_millis(200)],
            max_attempts: 3,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_round_for_one_destination_is_one_amqp_message_and_each_inner_message_is_applied_once()
{
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let raw = env.sink("raw", "test.#", FieldTable::default()).await;

    // Five messages for one routing key and one for another, committed
    // together so that one relay round takes them all.
    let ok: Vec<OutgoingMessage> = (0..3u8)
        .map(|n| OutgoingMessage::event("test.thing.happened", "test.Ok", vec![n]))
        .collect();
    let flaky = OutgoingMessage::event("test.thing.happened", "test.FailTransiently:1", vec![7]);
    let refused = OutgoingMessage::event("test.thing.happened", "test.Permanent", vec![8]);
    let other = OutgoingMessage::event("test.other.happened", "test.Ok", vec![9]);
    let batched = [
        ok[0].clone(),
        flaky.clone(),
        ok[1].clone(),
        refused.clone(),
        ok[2].clone(),
    ];
    let mut tx = env.pool.begin().await.unwrap();
    for message in batched.iter().chain([&other]) {
        enqueue(&mut tx, message.clone()).await.unwrap();
    }
    tx.commit().await.unwrap();

    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());
    env.spawn_relay(RelayConfig {
        poll_interval: Duration::from_millis(200),
        ..RelayConfig::default()
    });

    // On the wire: one batch for the first routing key, in outbox order, and
    // the lone message for the other as it is.
    let deliveries = std::cell::RefCell::new(Vec::new());
    eventually("both AMQP messages", || async {
        while let Some(got) = env
            .channel
            .basic_get(raw.clone().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            got.delivery.ack(BasicAckOptions::default()).await.unwrap();
            deliveries.borrow_mut().push(got.delivery);
        }
        (deliveries.borrow().len() >= 2).then_some(())
    })
    .await;
    let mut deliveries = deliveries.into_inner();
    assert_eq!(deliveries.len(), 2, "one AMQP message per destination");
    let batch = deliveries.remove(0);
    assert_eq!(batch.routing_key.as_str(), "test.thing.happened");
    assert_eq!(
        batch
            .properties
            .kind()
            .as_ref()
            .map(|kind| kind.to_string()),
        Some(BATCH_MESSAGE_TYPE.to_owned())
    );
    let inner = unpack(batch);
    let inner_ids: Vec<String> = inner
        .iter()
        .map(|message| message.properties.message_id().clone().unwrap().to_string())
        .collect();
    let expected: Vec<String> = batched
        .iter()
        .map(|message| message.message_id.to_string())
        .collect();
    assert_eq!(inner_ids, expected, "every message, in outbox order");
    assert_eq!(inner[3].data, vec![8], "each keeps its own payload");
    assert_eq!(
        inner[1]
            .properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str()),
        Some("test.FailTransiently:1")
    );
    let lone = deliveries.remove(0);
    assert_eq!(
        lone.properties.message_id().clone().unwrap().to_string(),
        other.message_id.to_string()
    );

    // In the consumer: each inner message has its own outcome.
    eventually("the ok messages and the retried one applied", || async {
        let mut applied = 0;
        for message in ok.iter().chain([&flaky, &other]) {
            applied += env.effects(message.message_id).await;
        }
        (applied == 5).then_some(())
    })
    .await;
    let parked = env.parked_once("ledger", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for message in ok.iter().chain([&other]) {
        assert_eq!(env.effects(message.message_id).await, 1);
        assert_eq!(
            env.scalar(
                "select count(*) from inbox where message_id = $1",
                message.message_id
            )
            .await,
            1
        );
    }
    assert_eq!(
        env.scalar(
            "select count(*) from effect where message_id = $1 and attempt = 2",
            flaky.message_id
        )
        .await,
        1,
        "the flaky message alone came back, as attempt 2, and applied once"
    );
    assert_eq!(env.effects(flaky.message_id).await, 1);
    assert_eq!(env.effects(refused.message_id).await, 0);
    assert_eq!(parked.len(), 1, "only the refused message is parked");
    assert_eq!(parked[0].message_id, Some(refused.message_id.to_string()));
    assert_eq!(parked[0].message_type.as_deref(), Some("test.Permanent"));
    assert_eq!(parked[0].reason.as_deref(), Some("permanent"));
    assert_eq!(parked[0].routing_key, "test.thing.happened");
    assert_eq!(parked[0].payload, vec![8]);
    assert_eq!(env.pending().await, 0);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_does_not_decode_is_parked_whole_and_the_consumer_goes_on() {
    let mut env = TestEnv::new().await;
    let spec = ledger_spec();
    env.declare(&spec).await;
    let handler = TestHandler::default();
    env.spawn_consumer(spec, handler.clone());

    let events = env.ns.exchange(Exchange::Events);
    let broken = BasicProperties::default()
        .with_message_id(uuid::Uuid::now_v7().to_string().into())
        .with_type(BATCH_MESSAGE_TYPE.into());
    // Field 1 with wire type 2 and a length past the end: not a batch.
    env.publish_raw(&events, "test.thing.happened", &[0x0a, 0x7f, 0x01], broken)
        .await;
    let after = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![1]);
    env.publish_events([&after]).await;

    eventually("the message after the broken batch applied", || async {
        (env.effects(after.message_id).await == 1).then_some(())
    })
    .await;
    let parked = env.parked_once("ledger", 1).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].reason.as_deref(), Some("malformed"));
    assert_eq!(parked[0].message_type, Some(BATCH_MESSAGE_TYPE.to_owned()));
    assert_eq!(parked[0].payload, vec![0x0a, 0x7f, 0x01]);
    env.teardown().await;
}
