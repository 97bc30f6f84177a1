//! Screen commands taken as a batch are screened as a set (one statement
//! records every movement, one counts every movement's features, one
//! stores every decision with its reply): each decides what it would have
//! decided had they come one at a time, in their order.

use chrono::Utc;
use corebank_fraud::consumer::ScreenHandler;
use corebank_platform::clock::Clock;
use corebank_platform::messaging::{Handler, IncomingMessage};
use corebank_proto::wire;
use prost::{Message, Name};
use uuid::Uuid;

use super::*;

/// A screen command for a movement of 10.00 USD, as the orchestrator
/// sends it, delivered once.
fn screen(
    saga_id: Uuid,
    transaction_id: &str,
    kind: pb::TransactionKind,
    source: &str,
    destination: &str,
) -> IncomingMessage {
    let command = pb::ScreenTransactionCommand {
        command_id: wire::command_id(saga_id, "screen", wire::Direction::Forward),
        saga_id: saga_id.to_string(),
        transaction_id: transaction_id.to_owned(),
        kind: kind as i32,
        source_account_id: source.to_owned(),
        destination_account_id: destination.to_owned(),
        amount: Some(crate::helpers::usd("10.00")),
        requested_at: None,
    };
    IncomingMessage {
        message_id: Uuid::new_v4(),
        message_type: pb::ScreenTransactionCommand::full_name(),
        correlation_id: Some(saga_id),
        causation_id: None,
        traceparent: None,
        occurred_at: Some(Utc::now()),
        schema_version: 1,
        attempt: 1,
        exchange: "commands".to_owned(),
        routing_key: wire::service::FRAUD.to_owned(),
        redelivered: false,
        payload: command.encode_to_vec(),
    }
}

/// Has fraud's screen handler take `batch` as one consumer batch, in one
/// transaction.
async fn screen_as_one_batch(app: &TestApp, batch: &[IncomingMessage]) {
    let handler = ScreenHandler::new(app.clock.clone(), app.review_deadline);
    let pool = app.db.service_pool(&corebank_fraud::SCHEMA, 1).await;
    let mut tx = pool.begin().await.unwrap();
    let messages: Vec<&IncomingMessage> = batch.iter().collect();
    handler
        .handle_batch(&mut tx, &messages)
        .await
        .expect("the batch is screened");
    tx.commit().await.unwrap();
}

/// The replies fraud stored for saga `saga_id`, oldest first.
async fn replies(app: &TestApp, saga_id: Uuid) -> Vec<pb::CommandReply> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "select payload from fraud.outbox where exchange = 'replies' and correlation_id = $1
          order by outbox_id",
    )
    .bind(saga_id)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    payloads
        .iter()
        .map(|payload| pb::CommandReply::decode(payload.as_slice()).expect("a reply"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_screens_decides_each_as_if_they_came_one_at_a_time_in_its_order() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("1000.00").await.account_id;
    let payee = app.funded_account("1.00").await.account_id;
    let new_payee = app.funded_account("1.00").await.account_id;
    set_rules(
        &app,
        vec![velocity_1h(
            "velocity-1h",
            4,
            pb::TransactionKind::Transfer,
            pb::FraudAction::Review,
        )],
    )
    .await;
    // One transfer through the saga first: the batch re-sends its screen.
    let done = app.transfer(&source, &payee, "10.00").await;
    let done_saga: Uuid = decision(&app, &done.transaction_id)
        .await
        .saga_id
        .parse()
        .unwrap();
    let first_reply = replies(&app, done_saga).await;
    assert_eq!(first_reply.len(), 1);

    use pb::TransactionKind::{Transfer, Withdrawal};
    // (kind, destination) of each new movement, in the batch's order.
    let plan = [
        (Transfer, payee.as_str()),
        (Transfer, payee.as_str()),
        (Withdrawal, ""),
        (Transfer, payee.as_str()),
        (Transfer, new_payee.as_str()),
        (Transfer, new_payee.as_str()),
    ];
    let movements: Vec<(Uuid, String)> = plan
        .iter()
        .map(|_| (Uuid::new_v4(), Uuid::now_v7().to_string()))
        .collect();
    let mut batch = vec![screen(
        done_saga,
        &done.transaction_id,
        Transfer,
        &source,
        &payee,
    )];
    for ((kind, destination), (saga_id, transaction_id)) in plan.iter().zip(&movements) {
        batch.push(screen(
            *saga_id,
            transaction_id,
            *kind,
            &source,
            destination,
        ));
    }

    screen_as_one_batch(&app, &batch).await;

    // The re-sent screen is answered with its stored reply and decided once.
    let again = replies(&app, done_saga).await;
    assert_eq!(again, [first_reply[0].clone(), first_reply[0].clone()]);
    let decided: i64 =
        sqlx::query_scalar("select count(*) from fraud.decision where transaction_id = $1")
            .bind(Uuid::parse_str(&done.transaction_id).unwrap())
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(decided, 1);

    // Each new movement counts the saga's transfer and the batch's earlier
    // movements, never its later ones.
    let mut seen = Vec::new();
    for (saga_id, transaction_id) in &movements {
        let (outcome, features): (String, serde_json::Value) = sqlx::query_as(
            "select outcome, features from fraud.decision where transaction_id = $1",
        )
        .bind(Uuid::parse_str(transaction_id).unwrap())
        .fetch_one(&app.owner)
        .await
        .unwrap();
        let reply = replies(&app, *saga_id).await;
        assert_eq!(reply.len(), 1, "one reply for {transaction_id}");
        seen.push((
            outcome,
            features["count_1h"].as_i64().unwrap(),
            features["history_size"].as_i64().unwrap(),
            features["first_time_payee"].as_bool().unwrap(),
            pb::CommandOutcome::try_from(reply[0].outcome).unwrap(),
        ));
    }
    use pb::CommandOutcome::{Succeeded, Waiting};
    assert_eq!(
        seen,
        [
            ("approve".to_owned(), 2, 1, false, Succeeded),
            ("approve".to_owned(), 3, 2, false, Succeeded),
            ("approve".to_owned(), 4, 3, false, Succeeded),
            ("review".to_owned(), 5, 4, false, Waiting),
            ("review".to_owned(), 6, 5, true, Waiting),
            ("review".to_owned(), 7, 6, false, Waiting),
        ],
        "(outcome, count_1h, history_size, first_time_payee, reply) of each, in order"
    );
    let reviews: i64 = sqlx::query_scalar("select count(*) from fraud.review")
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(reviews, 3, "one review for each held movement");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_screen_whose_movement_was_recorded_before_the_batch_counts_for_the_earlier_ones() {
    let app = TestApp::spawn().await;
    let source = app.funded_account("1000.00").await.account_id;
    let payee = app.funded_account("1.00").await.account_id;
    // A movement recorded a minute ago whose screen comes only now, after
    // another's in the same batch: screened one at a time, the first one
    // would find it recorded and count it.
    let (early_saga, early) = (Uuid::new_v4(), Uuid::now_v7());
    sqlx::query(
        "insert into fraud.movement (transaction_id, kind, source_account_id,
                                     destination_account_id, amount, currency, requested_at,
                                     updated_at)
         values ($1, 'transfer', $2, $3, 10.00, 'USD', $4, $4)",
    )
    .bind(early)
    .bind(Uuid::parse_str(&source).unwrap())
    .bind(Uuid::parse_str(&payee).unwrap())
    .bind(app.clock.now() - chrono::Duration::minutes(1))
    .execute(&app.owner)
    .await
    .unwrap();
    let (first_saga, first) = (Uuid::new_v4(), Uuid::now_v7().to_string());
    let batch = [
        screen(
            first_saga,
            &first,
            pb::TransactionKind::Transfer,
            &source,
            &payee,
        ),
        screen(
            early_saga,
            &early.to_string(),
            pb::TransactionKind::Transfer,
            &source,
            &payee,
        ),
    ];

    screen_as_one_batch(&app, &batch).await;

    let mut seen = Vec::new();
    for transaction_id in [first, early.to_string()] {
        let features: serde_json::Value =
            sqlx::query_scalar("select features from fraud.decision where transaction_id = $1")
                .bind(Uuid::parse_str(&transaction_id).unwrap())
                .fetch_one(&app.owner)
                .await
                .unwrap();
        seen.push((
            features["count_1h"].as_i64().unwrap(),
            features["history_size"].as_i64().unwrap(),
            features["first_time_payee"].as_bool().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        [(2, 1, false), (2, 1, false)],
        "(count_1h, history_size, first_time_payee) of the batch's first screen, then the later one"
    );
}
