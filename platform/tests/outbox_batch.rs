//! `enqueue_all`: several messages written in one statement keep their
//! order, commit or vanish with the caller's transaction, and are published
//! in that order; inside `waking_relay_after` they are handed to the relay
//! of this process without a NOTIFY, which publishes only what committed
//! and marks it sent later, before any claim round.

#[path = "common/messaging.rs"]
#[allow(dead_code)]
mod harness;

use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_platform::messaging::{
    OutboxRows, OutgoingMessage, RelayConfig, enqueue_all, notify_channel, outbox_key,
    waking_relay_after,
};
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
    let published = published_at_least(&env, &sink, 5).await;
    assert_eq!(published, expected, "published once each, in order");
    // The round marks its rows after the broker's confirms, which may come
    // after the sink has already seen the messages.
    eventually("the published rows marked sent", || async {
        (env.pending().await == 0).then_some(())
    })
    .await;
    env.teardown().await;
}

/// What `sink` gets, read until it has at least `count` deliveries.
async fn published_at_least(env: &TestEnv, sink: &str, count: usize) -> Vec<String> {
    let published = std::cell::RefCell::new(Vec::new());
    eventually("the messages published", || async {
        let drained = env.drain(sink).await;
        let mut published = published.borrow_mut();
        published.extend(drained);
        (published.len() >= count).then_some(())
    })
    .await;
    published.into_inner()
}

/// A relay that never polls in a test's time: only a wake-up moves it.
fn woken_only() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_secs(600),
        ..RelayConfig::default()
    }
}

async fn write_in(env: &TestEnv, key: &str, message: OutgoingMessage) {
    write_in_and(env, key, message, true).await;
}

/// Writes `message` in a transaction inside `key`'s handover scope, and
/// commits it, or rolls it back.
async fn write_in_and(env: &TestEnv, key: &str, message: OutgoingMessage, commit: bool) {
    waking_relay_after(Some(key), async {
        let mut tx = env.pool.begin().await.unwrap();
        enqueue_all(&mut tx, vec![message]).await.unwrap();
        match commit {
            true => tx.commit().await.unwrap(),
            false => tx.rollback().await.unwrap(),
        }
    })
    .await;
}

/// A relay of `config` that is running (a first message, by NOTIFY, is
/// out), the sink it publishes to, and its outbox key.
async fn running_relay(env: &mut TestEnv, sink: &str, config: RelayConfig) -> (String, String) {
    let sink = env.sink(sink, "test.#", FieldTable::default()).await;
    env.spawn_relay(config);
    let first = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![0]);
    env.enqueue_committed(first).await;
    eventually("the first message published", || async {
        (env.drain(&sink).await.len() == 1).then_some(())
    })
    .await;
    let key = outbox_key(&env.pool).await.unwrap();
    (sink, key)
}

/// Every delivery `sink` gets within `window`.
async fn drained_within(env: &TestEnv, sink: &str, window: Duration) -> Vec<String> {
    let until = tokio::time::Instant::now() + window;
    let mut all = Vec::new();
    while tokio::time::Instant::now() < until {
        all.extend(env.drain(sink).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handed_over_write_that_rolled_back_is_never_published() {
    let mut env = TestEnv::new().await;
    let (sink, key) = running_relay(&mut env, "rolled", woken_only()).await;
    let rolled_back = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![1]);
    let committed = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![2]);

    write_in_and(&env, &key, rolled_back, false).await;
    write_in(&env, &key, committed.clone()).await;

    let published = drained_within(&env, &sink, Duration::from_secs(2)).await;
    assert_eq!(published, vec![committed.message_id.to_string()]);
    eventually("the published row marked sent", || async {
        (env.pending().await == 0).then_some(())
    })
    .await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handed_over_row_is_marked_sent_after_the_mark_delay_with_its_rounds_start() {
    let mut env = TestEnv::new().await;
    let config = RelayConfig {
        mark_delay: Duration::from_secs(2),
        ..woken_only()
    };
    let (sink, key) = running_relay(&mut env, "marked", config).await;
    let message = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![3]);

    write_in(&env, &key, message.clone()).await;
    eventually("the message published", || async {
        (env.drain(&sink).await == vec![message.message_id.to_string()]).then_some(())
    })
    .await;
    let published_by = Utc::now();
    assert_eq!(env.pending().await, 1, "marked before its mark delay");

    let (created, sent): (DateTime<Utc>, DateTime<Utc>) = eventually("the row marked", || async {
        sqlx::query_as(
            "select created_at, sent_at from outbox where message_id = $1 and sent_at is not null",
        )
        .bind(message.message_id)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(
        created <= sent && sent <= published_by,
        "sent_at {sent} is the start of the round that published it (created {created}, seen published by {published_by})"
    );
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_round_marks_the_handed_rows_first_so_none_goes_out_twice() {
    let mut env = TestEnv::new().await;
    // Polls that take rows of any age, as a NOTIFY's claim round does.
    let config = RelayConfig {
        poll_interval: Duration::from_millis(200),
        poll_min_age: Duration::ZERO,
        mark_delay: Duration::from_secs(600),
        ..RelayConfig::default()
    };
    let (sink, key) = running_relay(&mut env, "claimed", config).await;
    let messages: Vec<OutgoingMessage> = (4..8u8)
        .map(|n| OutgoingMessage::event("test.thing.happened", "test.Ok", vec![n]))
        .collect();

    for message in &messages {
        write_in(&env, &key, message.clone()).await;
    }

    // Several polling claim rounds run in this window, long before the
    // mark delay: each must mark the handed rows before it claims.
    let published = drained_within(&env, &sink, Duration::from_secs(2)).await;
    let expected: Vec<String> = messages.iter().map(|m| m.message_id.to_string()).collect();
    assert_eq!(published, expected, "each published once, in order");
    assert_eq!(env.pending().await, 0);
    env.teardown().await;
}

async fn listener(env: &TestEnv) -> sqlx::postgres::PgListener {
    let schema: String = sqlx::query_scalar("select current_schema()")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let mut listener = sqlx::postgres::PgListener::connect_with(&env.pool)
        .await
        .unwrap();
    listener.listen(&notify_channel(&schema)).await.unwrap();
    listener
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_in_the_relays_process_wakes_it_in_memory_without_a_notify() {
    let mut env = TestEnv::new().await;
    let sink = env.sink("woken", "test.#", FieldTable::default()).await;
    env.spawn_relay(woken_only());
    // A first message by NOTIFY: once it is out, the relay runs (and is registered).
    let first = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![1]);
    env.enqueue_committed(first).await;
    eventually("the first message published", || async {
        (env.drain(&sink).await.len() == 1).then_some(())
    })
    .await;

    let mut notifications = listener(&env).await;
    let key = outbox_key(&env.pool).await.unwrap();
    let second = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![2]);
    write_in(&env, &key, second.clone()).await;
    let published = eventually("the second message published", || async {
        let ids = env.drain(&sink).await;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert_eq!(published, vec![second.message_id.to_string()]);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), notifications.recv())
            .await
            .is_err(),
        "the write notified, though its relay was woken in memory"
    );
    assert_eq!(env.pending().await, 0);
    // The listener holds one of the pool's connections.
    drop(notifications);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_relay_runs_elsewhere_notifies() {
    let env = TestEnv::new().await;
    let mut notifications = listener(&env).await;
    let message = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![3]);
    write_in(&env, "another-database/another-schema", message).await;
    tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("a NOTIFY for the relay of another process")
        .unwrap();
    drop(notifications);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_handed_over_within_the_gather_go_out_in_one_round() {
    let mut env = TestEnv::new().await;
    let config = RelayConfig {
        handover_gather: Duration::from_secs(2),
        ..woken_only()
    };
    let (sink, key) = running_relay(&mut env, "gathered", config).await;
    let messages: Vec<OutgoingMessage> = (20..22u8)
        .map(|n| OutgoingMessage::event("test.thing.happened", "test.Ok", vec![n]))
        .collect();

    write_in(&env, &key, messages[0].clone()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        env.drain(&sink).await,
        Vec::<String>::new(),
        "published before its gather ran out"
    );
    write_in(&env, &key, messages[1].clone()).await;

    let expected: Vec<String> = messages.iter().map(|m| m.message_id.to_string()).collect();
    let published = published_at_least(&env, &sink, 2).await;
    assert_eq!(published, expected, "published once each, in order");
    let rounds: i64 = eventually("both marked sent", || async {
        let (rounds, unmarked): (i64, i64) = sqlx::query_as(
            "select count(distinct sent_at), count(*) filter (where sent_at is null)
               from outbox where message_id = any($1)",
        )
        .bind(messages.iter().map(|m| m.message_id).collect::<Vec<_>>())
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (unmarked == 0).then_some(rounds)
    })
    .await;
    assert_eq!(
        rounds, 1,
        "marked with the start of the one round that published both"
    );
    env.teardown().await;
}

/// A claim round that only the poll asked for leaves the rows younger than
/// `poll_min_age`: with several replicas those are rows another replica's
/// writers handed to their own relay, which publishes them, and taking them
/// here as well would publish them twice. Such a row (committed with no
/// NOTIFY, as a writer inside that replica's handover scope commits it) goes
/// out here only once it is that old, although the relay polls every 100 ms
/// meanwhile. (A NOTIFY still has the relay claim every pending row,
/// however young: `a_write_whose_relay_runs_elsewhere_notifies`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_poll_leaves_rows_younger_than_its_min_age_to_the_replica_that_handed_them() {
    let mut env = TestEnv::new().await;
    let config = RelayConfig {
        poll_interval: Duration::from_millis(100),
        poll_min_age: Duration::from_secs(5),
        ..RelayConfig::default()
    };
    let (sink, _key) = running_relay(&mut env, "poll_min_age", config).await;

    let handed_elsewhere = write_unannounced(&env, 1).await;
    let early = drained_within(&env, &sink, Duration::from_secs(3)).await;
    assert!(early.is_empty(), "polls took a young row: {early:?}");

    let published = published_at_least(&env, &sink, 1).await;
    assert_eq!(
        published,
        vec![handed_elsewhere.message_id.to_string()],
        "once old enough, a poll takes the row nobody else published"
    );
    assert_eq!(env.pending().await, 0);
    env.teardown().await;
}

/// Commits an outbox row with no NOTIFY and outside any handover scope, as
/// a writer of another replica, inside its own scope, commits it.
async fn write_unannounced(env: &TestEnv, byte: u8) -> OutgoingMessage {
    let message = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![byte]);
    sqlx::query(
        "insert into outbox (message_id, exchange, routing_key, message_type, payload, occurred_at)
         values ($1, 'events', $2, $3, $4, now())",
    )
    .bind(message.message_id)
    .bind(&message.routing_key)
    .bind(&message.message_type)
    .bind(&message.payload)
    .execute(&env.pool)
    .await
    .unwrap();
    message
}

/// Work inside a handover scope that writes no outbox row (a consumer batch
/// with nothing to send binds an empty set of rows) leaves the relay alone.
/// It used to ask for a claim round, which found nothing of this process's
/// and, with several replicas, took the rows another replica's writers had
/// handed to their own relay, publishing them a second time. Here such a
/// row stays unpublished by this relay (which never polls in the test's
/// time), and a row then written in the scope goes out on its own.
#[tokio::test(flavor = "multi_thread")]
async fn work_that_wrote_no_outbox_row_starts_no_claim_round() {
    let mut env = TestEnv::new().await;
    let (sink, key) = running_relay(&mut env, "wrote_nothing", woken_only()).await;
    write_unannounced(&env, 1).await;

    static NOTHING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "with {} select count(*) from sent_woken",
            OutboxRows::cte("sent", 1, "true")
        )
    });
    waking_relay_after(Some(&key), async {
        let mut tx = env.pool.begin().await.unwrap();
        OutboxRows::new(Vec::new())
            .bind(sqlx::query(sqlx::AssertSqlSafe(NOTHING.as_str())))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    })
    .await;
    let published = drained_within(&env, &sink, Duration::from_secs(2)).await;
    assert!(published.is_empty(), "a claim round ran: {published:?}");

    let own = OutgoingMessage::event("test.thing.happened", "test.Ok", vec![2]);
    write_in(&env, &key, own.clone()).await;
    let published = published_at_least(&env, &sink, 1).await;
    assert_eq!(published, vec![own.message_id.to_string()]);
    // Its own row is marked sent within the mark delay; the other
    // replica's is left to it.
    eventually("the relay's own row marked sent", || async {
        (env.pending().await == 1).then_some(())
    })
    .await;
    env.teardown().await;
}
