//! Input hardening across every service, driven by the descriptor set: a NUL
//! character in any string field of any request is INVALID_ARGUMENT naming the
//! field and writes nothing; every mutating RPC (as the descriptor names it)
//! takes an idempotency key and refuses a blank one; OpenAccount requires a key
//! and honours it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, Value,
};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt;

use corebank_proto::v1 as pb;

use crate::helpers::{TestApp, key, reason, violated_fields};

/// Sends and receives already-encoded protobuf messages.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(corebank_proto::FILE_DESCRIPTOR_SET).expect("descriptor set")
}

/// The name prefixes of the RPCs that only read. Every corebank API names its
/// readers so (and routes them as HTTP GET); every other RPC changes
/// something and must take an idempotency key.
const READER_PREFIXES: &[&str] = &["Get", "List", "Watch", "Download"];

/// Every RPC of the corebank services. Health (`grpc.health.v1`) and
/// reflection are served too but are not corebank's: they are not in this
/// descriptor set, and the package filter would leave them out if they were.
fn corebank_methods(pool: &DescriptorPool) -> Vec<MethodDescriptor> {
    pool.services()
        .filter(|service| service.package_name() == "corebank.v1")
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .collect()
}

fn reads_only(method: &MethodDescriptor) -> bool {
    READER_PREFIXES
        .iter()
        .any(|prefix| method.name().starts_with(prefix))
}

/// The verb of a method's `google.api.http` rule, if it has one.
fn http_verb(pool: &DescriptorPool, method: &MethodDescriptor) -> Option<&'static str> {
    let http = pool.get_extension_by_name("google.api.http")?;
    let options = method.options();
    if !options.has_extension(&http) {
        return None;
    }
    let rule = options.get_extension(&http);
    let rule = rule.as_message()?;
    ["get", "put", "post", "delete", "patch", "custom"]
        .into_iter()
        .find(|verb| rule.has_field_by_name(verb))
}

/// The `/package.Service/Method` path of a method.
fn grpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// Where the test app serves a corebank gRPC service.
fn address(app: &TestApp, service: &str) -> SocketAddr {
    match service {
        "corebank.v1.CustomerService" => app.customer_addr,
        "corebank.v1.AccountService" => app.account_addr,
        "corebank.v1.TransactionService" => app.transaction_addr,
        "corebank.v1.SagaAdminService" => app.orchestrator_addr,
        "corebank.v1.FraudService" => app.fraud_addr,
        "corebank.v1.ReportingService" => app.reporting_addr,
        other => panic!("no address for {other}: name the service that serves it here"),
    }
}

/// Calls `method` (`/package.Service/Method`) with an encoded request,
/// presenting the app's credentials.
async fn call(
    app: &TestApp,
    addr: SocketAddr,
    method: &str,
    request: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    let channel = app.credentials.connect_lazy(endpoint).expect("channel");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("service ready");
    let path = http::uri::PathAndQuery::try_from(method).expect("method path");
    grpc.unary(tonic::Request::new(request), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// One request of type `descriptor` per string field reachable from it
/// (nested and repeated messages included), with a NUL in that field and
/// every other field left empty, keyed by the field's path.
fn nul_requests(descriptor: &MessageDescriptor, depth: usize) -> Vec<(String, DynamicMessage)> {
    let mut requests = Vec::new();
    if depth > 4 {
        return requests;
    }
    for field in descriptor.fields() {
        let name = field.name();
        let mut with = |path: String, value: Value| {
            let mut message = DynamicMessage::new(descriptor.clone());
            if field.is_list() {
                message.set_field(&field, Value::List(vec![value]));
            } else {
                message.set_field(&field, value);
            }
            requests.push((path, message));
        };
        let name = if field.is_list() {
            format!("{name}[0]")
        } else {
            name.to_owned()
        };
        match field.kind() {
            _ if field.is_map() => {}
            Kind::String => with(name, Value::String("bad\0value".to_owned())),
            Kind::Message(inner) => {
                for (path, nested) in nul_requests(&inner, depth + 1) {
                    with(format!("{name}.{path}"), Value::Message(nested));
                }
            }
            _ => {}
        }
    }
    requests
}

/// Row counts of the tables a request could write, across every schema.
async fn written(app: &TestApp) -> BTreeMap<&'static str, i64> {
    const TABLES: &[&str] = &[
        "customer.customer",
        "customer.kyc_event",
        "customer.idempotency_key",
        "customer.outbox",
        "account.account",
        "account.account_event",
        "account.idempotency_key",
        "account.outbox",
        "transaction.transaction",
        "transaction.idempotency_key",
        "transaction.outbox",
        "orchestrator.saga",
        "orchestrator.saga_log",
        "orchestrator.idempotency_key",
        "fraud.review",
        "fraud.watchlist_entry",
        "fraud.analyst_action",
        "fraud.idempotency_key",
        "reporting.export",
        "reporting.reconciliation",
        "reporting.idempotency_key",
    ];
    let mut counts = BTreeMap::new();
    for table in TABLES {
        counts.insert(*table, app.count(table).await);
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_in_any_string_field_of_any_request_is_invalid_argument_naming_it() {
    let app = TestApp::spawn().await;
    let pool = pool();
    let before = written(&app).await;
    let mut checked = 0;
    let mut services = 0;
    for service in pool.services() {
        if service.package_name() != "corebank.v1" {
            continue;
        }
        services += 1;
        let addr = address(&app, service.full_name());
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            for (field, request) in nul_requests(&method.input(), 0) {
                let status = call(&app, addr, &path, request.encode_to_vec())
                    .await
                    .expect_err(&format!("{path} with a NUL in {field} must be refused"));
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{path} {field}: {status:?}"
                );
                assert_eq!(reason(&status), "VALIDATION_FAILED", "{path} {field}");
                assert_eq!(
                    violated_fields(&status),
                    std::slice::from_ref(&field),
                    "{path}: the violation names the field"
                );
                assert!(
                    !status.message().contains('\0'),
                    "the message does not echo the input"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(services, 6, "every corebank service was probed");
    assert!(checked > 60, "only {checked} fields were probed");
    assert_eq!(
        written(&app).await,
        before,
        "a refused request writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_in_a_nested_money_field_is_named_by_its_path() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    let status = app
        .transaction
        .clone()
        .create_deposit(pb::CreateDepositRequest {
            idempotency_key: key(),
            account_id: account.account_id,
            amount: Some(pb::Money {
                currency: "US\0".to_owned(),
                amount: "10".to_owned(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["amount.currency"]);
    assert!(status.get_details_error_info().is_some());
    assert_eq!(app.count("transaction.transaction").await, 0);
}

#[test]
fn the_rpcs_named_as_readers_are_exactly_the_ones_routed_as_http_get() {
    let pool = pool();
    let methods = corebank_methods(&pool);
    assert!(methods.len() > 40, "only {} RPCs found", methods.len());
    for method in &methods {
        let verb = http_verb(&pool, method);
        if reads_only(method) {
            assert_eq!(
                verb,
                Some("get"),
                "{} is named as a reader: route it as GET, or rename it",
                method.full_name()
            );
        } else {
            assert!(
                verb.is_some_and(|verb| verb != "get"),
                "{} changes something by its name but is routed as {verb:?}",
                method.full_name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_with_an_idempotency_key_refuses_a_blank_or_missing_one() {
    let app = TestApp::spawn().await;
    let pool = pool();
    let mutating: Vec<_> = corebank_methods(&pool)
        .into_iter()
        .filter(|method| !reads_only(method))
        .collect();
    let keyless: Vec<_> = mutating
        .iter()
        .filter(|method| {
            method
                .input()
                .get_field_by_name("idempotency_key")
                .is_none_or(|field| field.kind() != Kind::String || field.is_list())
        })
        .map(|method| method.full_name().to_owned())
        .collect();
    assert!(
        keyless.is_empty(),
        "every mutating RPC takes a string idempotency_key; these do not: {keyless:?}"
    );
    let readers_with_a_key: Vec<_> = corebank_methods(&pool)
        .into_iter()
        .filter(reads_only)
        .filter(|method| {
            method
                .input()
                .get_field_by_name("idempotency_key")
                .is_some()
        })
        .map(|method| method.full_name().to_owned())
        .collect();
    assert!(
        readers_with_a_key.is_empty(),
        "a reader needs no key: {readers_with_a_key:?}"
    );
    let before = written(&app).await;
    for method in &mutating {
        let addr = address(&app, method.parent_service().full_name());
        let input = method.input();
        let field = input
            .get_field_by_name("idempotency_key")
            .expect("checked above");
        let path = grpc_path(method);
        for blank in ["", "   ", "\t\n", "key\u{7}bell"] {
            let mut request = DynamicMessage::new(input.clone());
            request.set_field(&field, Value::String(blank.to_owned()));
            let status = call(&app, addr, &path, request.encode_to_vec())
                .await
                .expect_err(&format!("{path} with key {blank:?} must be refused"));
            assert_eq!(status.code(), Code::InvalidArgument, "{path} {blank:?}");
            assert!(
                violated_fields(&status).contains(&"idempotency_key".to_owned()),
                "{path} {blank:?}: {:?}",
                violated_fields(&status)
            );
        }
    }
    // The 22 of today: a new one is found by its name, not by this count.
    assert!(
        mutating.len() >= 22,
        "only {} mutating RPCs found",
        mutating.len()
    );
    assert_eq!(
        written(&app).await,
        before,
        "a refused request writes nothing"
    );
}

fn open_request(customer_id: &str) -> pb::OpenAccountRequest {
    pb::OpenAccountRequest {
        idempotency_key: key(),
        customer_id: customer_id.to_owned(),
        currency: "USD".to_owned(),
        product: pb::AccountProduct::Checking as i32,
        overdraft_limit: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_an_account_replays_its_key_and_refuses_it_for_another_request() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let request = open_request(&customer_id);
    let first = app
        .account
        .clone()
        .open_account(request.clone())
        .await
        .unwrap()
        .into_inner();
    let replayed = app
        .account
        .clone()
        .open_account(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, replayed);
    assert_eq!(app.count("account.account").await, 1);

    let status = app
        .account
        .clone()
        .open_account(pb::OpenAccountRequest {
            currency: "EUR".to_owned(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("account.account").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_an_account_without_a_key_is_refused() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let status = app
        .account
        .clone()
        .open_account(pb::OpenAccountRequest {
            idempotency_key: String::new(),
            ..open_request(&customer_id)
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["idempotency_key"]);
    assert_eq!(app.count("account.account").await, 0);
}
