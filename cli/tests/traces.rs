//! One money movement is one trace: a whole `corebank up` exporting its spans
//! over OTLP/gRPC to a receiver inside the test, a transfer made through the
//! REST gateway, and the trace that arrives checked link by link, from the
//! HTTP request through the transaction service and across every AMQP hop
//! of the saga to its last step.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corebank_cli::services::SERVICES;
use corebank_platform::auth::{Audience, DevKey, PARTNER_SCOPES, TokenSpec};
use corebank_proto::wire;
use corebank_tests::harness::{TestDb, amqp_url, key, lease_namespace};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/mod.rs"]
mod common;
use common::{Launch, connect, database_url, free_port, free_ports, port, signal};

/// One span as the receiver got it, ids in hex.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    /// Empty for a root.
    parent_id: String,
    name: String,
    /// The resource's `service.name`.
    service: String,
    attributes: BTreeMap<String, String>,
    start: u64,
    end: u64,
}

impl Received {
    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }

    /// What tells this span from its siblings in a tree.
    fn detail(&self) -> String {
        ["message_type", "method", "path", "queue"]
            .iter()
            .filter_map(|key| self.attributes.get(*key))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An OTLP/gRPC trace receiver: keeps every span exported to it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| text_of(&resource.attributes, "service.name"))
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                received.push(Received {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_id: hex(&span.parent_span_id),
                    name: span.name,
                    service: service.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|pair| (pair.key.clone(), value_text(pair)))
                        .collect(),
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                });
            }
        }
        self.spans.lock().expect("spans lock").extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves on a port of its own until the test ends; where.
    async fn start() -> (SocketAddr, Receiver) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let receiver = Receiver::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        (addr, receiver)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans lock").clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn value_text(pair: &KeyValue) -> String {
    match pair.value.as_ref().and_then(|value| value.value.as_ref()) {
        Some(AnyValue::StringValue(text)) => text.clone(),
        Some(AnyValue::IntValue(number)) => number.to_string(),
        Some(AnyValue::BoolValue(flag)) => flag.to_string(),
        Some(AnyValue::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|pair| pair.key == key)
        .map(value_text)
}

/// One REST call (HTTP/1.0, a fresh idempotency key): its status and JSON body.
async fn rest(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect to the gateway");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: corebank\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {}\r\nContent-Length: {}\r\n\r\n{body}",
        key(),
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .await
        .expect("read the response");
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(payload).unwrap_or(Value::Null))
}

/// A REST call that must answer 200; its body.
async fn ok(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let (status, answer) = rest(gateway, method, path, token, body).await;
    assert_eq!(status, 200, "{method} {path} answered {status}: {answer}");
    answer
}

/// Waits until the saga of `transaction_id` has completed.
async fn until_saga_completed(db: &TestDb, transaction_id: &str) {
    let transaction_id: uuid::Uuid = transaction_id.parse().expect("a transaction id");
    for _ in 0..300 {
        let state: Option<String> =
            sqlx::query_scalar("select state from orchestrator.saga where transaction_id = $1")
                .bind(transaction_id)
                .fetch_optional(&db.owner)
                .await
                .expect("read the saga");
        if state.as_deref() == Some("completed") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the saga of {transaction_id} did not complete");
}

/// The spans of one trace, by id, with the tree and the parent links.
struct Trace<'a> {
    by_id: HashMap<&'a str, &'a Received>,
    spans: Vec<&'a Received>,
}

impl<'a> Trace<'a> {
    fn of(spans: &'a [Received], trace_id: &str) -> Trace<'a> {
        let spans: Vec<&Received> = spans
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .collect();
        let by_id = spans
            .iter()
            .map(|span| (span.span_id.as_str(), *span))
            .collect();
        Trace { by_id, spans }
    }

    fn parent(&self, span: &Received) -> Option<&'a Received> {
        self.by_id.get(span.parent_id.as_str()).copied()
    }

    /// `span`, its parent, its parent's parent… up to the root.
    fn ancestry(&self, span: &'a Received) -> Vec<&'a Received> {
        let mut chain = vec![span];
        while let Some(parent) = self.parent(chain[chain.len() - 1]) {
            if chain.len() > self.spans.len() {
                break;
            }
            chain.push(parent);
        }
        chain
    }

    /// Which part of the system a span ran in: the consumer (its queue),
    /// the gRPC service or the gateway of its nearest span that says.
    fn component(&self, span: &'a Received) -> String {
        for at in self.ancestry(span) {
            match at.name.as_str() {
                "handle_batch" => return format!("consumer {}", at.attribute("queue")),
                "grpc" => return format!("grpc {}", at.attribute("service")),
                "http" => return "gateway".to_owned(),
                _ => {}
            }
        }
        "unknown".to_owned()
    }

    /// The spans whose parent is not in the trace.
    fn roots(&self) -> Vec<&'a Received> {
        self.spans
            .iter()
            .filter(|span| self.parent(span).is_none())
            .copied()
            .collect()
    }

    /// Consumer spans whose parent ran in another part of the system: a
    /// parent link across an AMQP hop.
    fn hops(&self) -> Vec<(&'a Received, &'a Received)> {
        self.spans
            .iter()
            .filter(|span| matches!(span.name.as_str(), "handle_batch" | "handle_message"))
            .filter_map(|span| Some((*span, self.parent(span)?)))
            .filter(|(span, parent)| self.component(span) != self.component(parent))
            .collect()
    }

    /// The handling span of the first message of type `…{suffix}`.
    fn handling(&self, suffix: &str) -> Option<&'a Received> {
        self.spans
            .iter()
            .filter(|span| {
                span.name == "handle_message" && span.attribute("message_type").ends_with(suffix)
            })
            .min_by_key(|span| span.start)
            .copied()
    }

    /// The trace as an indented tree, children in start order.
    fn tree(&self) -> String {
        let mut children: HashMap<&str, Vec<&Received>> = HashMap::new();
        for span in &self.spans {
            children
                .entry(span.parent_id.as_str())
                .or_default()
                .push(span);
        }
        for siblings in children.values_mut() {
            siblings.sort_by_key(|span| span.start);
        }
        let mut out = String::new();
        let mut roots = self.roots();
        roots.sort_by_key(|span| span.start);
        let mut stack: Vec<(&Received, usize)> =
            roots.into_iter().rev().map(|span| (span, 0)).collect();
        while let Some((span, depth)) = stack.pop() {
            let orphan = if !span.parent_id.is_empty() && self.parent(span).is_none() {
                format!(" ORPHAN (parent {} not received)", span.parent_id)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{:indent$}{} {} [{}] {:.1} ms{orphan}",
                "",
                span.name,
                span.detail(),
                self.component(span),
                span.end.saturating_sub(span.start) as f64 / 1e6,
                indent = depth * 2
            );
            if let Some(kids) = children.get(span.span_id.as_str()) {
                stack.extend(kids.iter().rev().map(|kid| (*kid, depth + 1)));
            }
        }
        out
    }
}

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
    let steps = [
        "TransactionRequestedEvent",
        "ReserveFundsCommand",
        "ScreenTransactionCommand",
        "PostTransferCommand",
        "CommandReply",
    ];
    let last = trace
        .handling("CompleteTransactionCommand")
        .unwrap_or_else(|| panic!("the completion was not handled in the trace:\n{tree}"));
    let lineage = trace.ancestry(last);
    for step in steps {
        assert!(
            trace.handling(step).is_some(),
            "no handling of a {step} in the trace:\n{tree}"
        );
        assert!(
            lineage.iter().any(|span| span.name == "handle_message"
                && span.attribute("message_type").ends_with(step)),
            "the completion does not descend from the handling of a {step}:\n{tree}"
        );
    }
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
