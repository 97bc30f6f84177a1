//! One money movement is one trace: a whole `corebank up` exporting its spans
//! over OTLP/gRPC to a receiver inside the test, a transfer made through the
//! REST gateway, and the trace that arrives checked link by link, from the
//! HTTP request through the transaction service and across every AMQP hop
//! of the saga to its last step.

use std::collections::BTreeMap;
use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_platform::auth::{Audience, DevKey, PARTNER_SCOPES, TokenSpec};
use corebank_proto::wire;
use corebank_tests::harness::{TestDb, amqp_url, key, lease_namespace};
use serde_json::json;

#[path = "../common/mod.rs"]
mod common;
mod gateway;
mod receiver;
mod tree;

use common::{Launch, connect, database_url, free_port, free_ports, port, signal};
use gateway::{ok, until_saga_completed};
use receiver::{Received, Receiver};
use tree::Trace;

/// With `--otlp-endpoint`, a transfer made over REST arrives at the
/// receiver as one trace: the gateway's request span is its only root; the
/// transaction service's gRPC span, every consumer batch and every handling
/// of the saga's messages (the request event, reserve, screen, post and
/// complete commands, their replies) hang below it with every parent
/// present; consumer spans take their parent from the span that enqueued
/// the message, across the AMQP hop, so the last step's handling descends
/// from every step before it; a call from one service to another (the
/// account service asking the customer service at an opening) continues its
/// caller's trace; and stopping corebank flushes it all.
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_over_rest_is_one_trace_through_every_saga_step() {
    let (receiver_addr, receiver) = Receiver::start().await;
    let db = TestDb::create(&[]).await;
    let lease = lease_namespace().await;
    let ports = free_ports();
    let key_path = std::env::temp_dir().join(format!("corebank-traces-{}.key.pem", key()));
    let signing_key = DevKey::load_or_create_at(&key_path).expect("a token signing key");
    let endpoint = format!("http://{receiver_addr}");
    let database_url = database_url(&db.name);
    let broker_url = amqp_url();
    let mut corebank = Launch {
        database_url: &database_url,
        broker_url: &broker_url,
        namespace: lease.namespace().as_str(),
        ports: &ports,
        key: &key_path,
        env: &[("COREBANK_OTLP_ENDPOINT", &endpoint)],
        metrics: free_port(),
    }
    .spawn(&["up"]);
    for service in SERVICES {
        connect(port(&ports, service.name())).await;
    }
    let gateway = port(&ports, "gateway");

    let partner = signing_key
        .issue(&TokenSpec::new(
            "partner-traces",
            PARTNER_SCOPES.join(" "),
            Audience::Partner,
        ))
        .expect("a partner token");
    let staff = signing_key
        .issue(&TokenSpec::new(
            "kyc-officer-traces",
            "kyc:write customers:read",
            Audience::Partner,
        ))
        .expect("a staff token");
    let customer = ok(
        gateway,
        "POST",
        "/v1/customers",
        &partner,
        Some(json!({
            "legalName": "Ada Lovelace",
            "email": format!("ada.{}@example.com", &key()[24..]),
            "phone": "+441234567890",
            "dateOfBirth": "1990-12-10",
            "country": "GB",
            "nationalId": "AB123456C",
        })),
    )
    .await;
    let customer_id = customer["customerId"].as_str().expect("a customer id");
    ok(
        gateway,
        "POST",
        &format!("/v1/customers/{customer_id}:verify"),
        &staff,
        Some(json!({"reason": "passport checked"})),
    )
    .await;
    let mut accounts = Vec::new();
    for _ in 0..2 {
        let account = ok(
            gateway,
            "POST",
            "/v1/accounts",
            &partner,
            Some(json!({
                "customerId": customer_id,
                "currency": "USD",
                "product": "ACCOUNT_PRODUCT_CHECKING",
            })),
        )
        .await;
        accounts.push(
            account["accountId"]
                .as_str()
                .expect("an account id")
                .to_owned(),
        );
    }
    let deposit = ok(
        gateway,
        "POST",
        "/v1/deposits",
        &partner,
        Some(json!({
            "accountId": accounts[0],
            "amount": {"currency": "USD", "amount": "100.00"},
            "wait": "20s",
        })),
    )
    .await;
    // The deposit's saga ends before the transfer starts: no batch of the
    // transfer's holds a message of the deposit's.
    until_saga_completed(&db, deposit["transactionId"].as_str().expect("an id")).await;

    let transfer = ok(
        gateway,
        "POST",
        "/v1/transfers",
        &partner,
        Some(json!({
            "sourceAccountId": accounts[0],
            "destinationAccountId": accounts[1],
            "amount": {"currency": "USD", "amount": "30.50"},
            "wait": "20s",
        })),
    )
    .await;
    let transfer_id = transfer["transactionId"].as_str().expect("a transfer id");
    until_saga_completed(&db, transfer_id).await;
    let shown = ok(
        gateway,
        "GET",
        &format!("/v1/transactions/{transfer_id}"),
        &partner,
        None,
    )
    .await;
    assert!(
        shown["status"]
            .as_str()
            .unwrap_or_default()
            .ends_with("COMPLETED"),
        "{shown}"
    );
    // What trails the saga (the ledger's events into reporting and fraud).
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Stopping flushes the spans still buffered.
    signal(&corebank, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(60), corebank.wait())
        .await
        .expect("corebank stops")
        .expect("wait for corebank");
    assert!(status.success(), "corebank exited with {status}");

    let spans = receiver.spans();
    let requests: Vec<&Received> = spans
        .iter()
        .filter(|span| span.name == "http" && span.attribute("path") == "/v1/transfers")
        .collect();
    assert_eq!(
        requests.len(),
        1,
        "one request span for the transfer among {} spans",
        spans.len()
    );
    let request = requests[0];
    let trace = Trace::of(&spans, &request.trace_id);
    let tree = trace.tree();

    assert!(
        trace.spans.iter().all(|span| span.service == "corebank"),
        "every span says service.name = corebank:\n{tree}"
    );
    let roots = trace.roots();
    assert!(
        roots.len() == 1 && roots[0].span_id == request.span_id && request.parent_id.is_empty(),
        "the request span is the trace's only root, every other parent is present:\n{tree}"
    );
    let create = trace
        .spans
        .iter()
        .find(|span| span.name == "grpc" && span.attribute("method").ends_with("/CreateTransfer"))
        .unwrap_or_else(|| panic!("no CreateTransfer gRPC span in the trace:\n{tree}"));
    assert_eq!(
        create.parent_id, request.span_id,
        "the gateway's backend call continues the request's trace:\n{tree}"
    );
    for queue in [
        wire::queue::ORCHESTRATOR_REQUESTS,
        wire::queue::ORCHESTRATOR_REPLIES,
        wire::queue::ACCOUNT_COMMANDS,
        wire::queue::FRAUD_COMMANDS,
        wire::queue::TRANSACTION_COMMANDS,
    ] {
        assert!(
            trace.spans.iter().any(|span| span.name == "handle_batch"
                && span.attribute("queue").ends_with(&format!(".{queue}"))),
            "no batch of {queue} in the trace:\n{tree}"
        );
    }
    // Reserve and screen run at once, both from the saga's start; the post
    // follows whichever of their replies came last, so the completion
    // descends from one of the two.
    let descends_from = |span: &Received, step: &str| {
        trace.ancestry(span).iter().any(|ancestor| {
            ancestor.name == "handle_message" && ancestor.attribute("message_type").ends_with(step)
        })
    };
    for parallel in ["ReserveFundsCommand", "ScreenTransactionCommand"] {
        let handling = trace
            .handling(parallel)
            .unwrap_or_else(|| panic!("no handling of a {parallel} in the trace:\n{tree}"));
        assert!(
            descends_from(handling, "TransactionRequestedEvent"),
            "the {parallel} does not descend from the saga's start:\n{tree}"
        );
    }
    let last = trace
        .handling("CompleteTransactionCommand")
        .unwrap_or_else(|| panic!("the completion was not handled in the trace:\n{tree}"));
    for step in [
        "TransactionRequestedEvent",
        "PostTransferCommand",
        "CommandReply",
    ] {
        assert!(
            trace.handling(step).is_some(),
            "no handling of a {step} in the trace:\n{tree}"
        );
        assert!(
            descends_from(last, step),
            "the completion does not descend from the handling of a {step}:\n{tree}"
        );
    }
    assert!(
        descends_from(last, "ReserveFundsCommand")
            || descends_from(last, "ScreenTransactionCommand"),
        "the completion descends from neither the reserve nor the screen:\n{tree}"
    );
    let lineage = trace.ancestry(last);
    assert!(
        lineage.iter().any(|span| span.span_id == create.span_id),
        "the completion does not descend from the CreateTransfer request:\n{tree}"
    );
    let hops = trace.hops();
    assert!(
        !hops.is_empty(),
        "no consumer span has its parent in another part of the system:\n{tree}"
    );

    // A call between services continues the trace too: opening an account
    // asks the customer service.
    let opening = spans
        .iter()
        .find(|span| span.name == "http" && span.attribute("path") == "/v1/accounts")
        .expect("a request span for an account opening");
    let opened = Trace::of(&spans, &opening.trace_id);
    let asked = opened
        .spans
        .iter()
        .find(|span| span.name == "grpc" && span.attribute("service") == "customer")
        .unwrap_or_else(|| {
            panic!(
                "the account opening's trace holds no customer call:\n{}",
                opened.tree()
            )
        });
    assert!(
        opened
            .ancestry(asked)
            .iter()
            .any(|span| span.name == "grpc" && span.attribute("service") == "account")
            && opened.roots().len() == 1,
        "the customer call descends from the account service's request span:\n{}",
        opened.tree()
    );

    let by_name = trace.spans.iter().fold(BTreeMap::new(), |mut count, span| {
        *count.entry(span.name.as_str()).or_insert(0) += 1;
        count
    });
    eprintln!(
        "{} spans received, {} in the transfer's trace {} ({by_name:?}), {} parent links \
         across AMQP hops, the completion {} spans deep:\n{tree}",
        spans.len(),
        trace.spans.len(),
        request.trace_id,
        hops.len(),
        lineage.len()
    );
}
