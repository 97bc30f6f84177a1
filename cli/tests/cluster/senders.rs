//! The load: closed-loop senders of transfers, half through the REST gateway
//! as a partner, half over gRPC as an operator, each waiting for its
//! transfer's end (`wait`, as `corebank bench` does) before sending the next.
//!
//! Each sender has both replicas of its entry point (gateway or transaction
//! service), starts on one of them (alternating by sender) and, like a load
//! balancer, moves to the other when a request fails for want of an answer;
//! the request goes again with the same idempotency key, so it is stored
//! once whichever replica took it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corebank_gateway::testing::{HttpClient, HttpResponse};
use corebank_platform::auth::{Audience, AuthedChannel, DevKey, PARTNER_SCOPES, STAFF_SCOPES};
use corebank_platform::auth::{Credentials, TokenSpec};
use corebank_proto::v1 as pb;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;
use corebank_tests::harness::key;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;

use crate::common::connect;
use crate::common::workload::{self, transfer};

/// How long a transfer may wait for its end inside the request.
const WAIT_SECONDS: i64 = 30;
/// How long one request may take before it is sent again (same key).
const REQUEST_PATIENCE: Duration = Duration::from_secs(45);
/// How long a transfer may take to be accepted, retries included.
const PATIENCE: Duration = Duration::from_secs(180);
/// The pause before a retry.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What the senders of one path did.
#[derive(Default)]
pub struct Tally {
    /// Transfers accepted (each stored once).
    pub accepted: AtomicU64,
    /// Requests that failed for want of an answer and went again.
    pub retries: AtomicU64,
    /// Retries sent to the other replica than the one that failed.
    pub failovers: AtomicU64,
}

/// Senders running in the background until [`Senders::finish`].
pub struct Senders {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Senders {
    /// Stops sending new transfers and waits until the ones in flight were
    /// accepted.
    pub async fn finish(mut self) {
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            joined.expect("every transfer accepted");
        }
    }
}

/// Transfers among `accounts` over gRPC, `senders` at once, spread over the
/// transaction service's replicas at `replicas`.
pub async fn grpc(
    replicas: &[SocketAddr],
    operator: &Credentials,
    accounts: Vec<String>,
    senders: usize,
    tally: Arc<Tally>,
) -> Senders {
    let mut clients = Vec::new();
    for addr in replicas {
        let channel = InterceptedService::new(connect(*addr).await, operator.clone());
        clients.push(TransactionServiceClient::new(channel));
    }
    let accounts = Arc::new(accounts);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for sender in 0..senders {
        let clients = clients.clone();
        let accounts = Arc::clone(&accounts);
        let stop = stop.clone();
        let tally = Arc::clone(&tally);
        tasks.spawn(async move {
            let mut at = sender % clients.len();
            for i in (sender..).step_by(senders) {
                if stop.is_cancelled() {
                    break;
                }
                let Some(mut request) = transfer(&accounts, i) else {
                    continue;
                };
                request.wait = Some(prost_types::Duration {
                    seconds: WAIT_SECONDS,
                    nanos: 0,
                });
                at = send_grpc(&clients, at, &request, &tally).await;
                tally.accepted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Senders { stop, tasks }
}

/// Sends `request` from replica `at` on until one accepts it; the replica
/// that did.
async fn send_grpc(
    clients: &[TransactionServiceClient<AuthedChannel>],
    mut at: usize,
    request: &pb::CreateTransferRequest,
    tally: &Tally,
) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut client = clients[at].clone();
        let status = match timeout(REQUEST_PATIENCE, client.create_transfer(request.clone())).await
        {
            Ok(Ok(_)) => return at,
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::deadline_exceeded("no answer"),
        };
        assert!(
            workload::retryable(status.code()),
            "a transfer was refused: {status:?}"
        );
        assert!(
            Instant::now() < deadline,
            "a transfer was still not accepted after {PATIENCE:?}: {status:?}"
        );
        tally.retries.fetch_add(1, Ordering::Relaxed);
        // Aborted is the same key still in flight on this replica: stay.
        if status.code() != Code::Aborted {
            at = (at + 1) % clients.len();
            tally.failovers.fetch_add(1, Ordering::Relaxed);
        }
        sleep(RETRY_PAUSE).await;
    }
}

/// The REST gateway's replicas as one partner sees them.
#[derive(Clone)]
pub struct Rest {
    gateways: Vec<HttpClient>,
    partner: String,
    staff: String,
}

impl Rest {
    /// A partner of its own (and a KYC officer) with tokens signed by the
    /// key at `key_path`, which the services trust.
    pub fn new(gateways: &[SocketAddr], key_path: &Path) -> Rest {
        let signing = DevKey::load_or_create_at(key_path).expect("the signing key");
        let bearer = |subject: &str, scopes: &[&str]| {
            let token = signing
                .issue(&TokenSpec::new(
                    subject,
                    scopes.join(" "),
                    Audience::Partner,
                ))
                .expect("sign a token");
            format!("Bearer {token}")
        };
        Rest {
            gateways: gateways.iter().map(|addr| HttpClient::new(*addr)).collect(),
            partner: bearer("partner-of-the-cluster-test", PARTNER_SCOPES),
            staff: bearer("kyc-officer-of-the-cluster-test", STAFF_SCOPES),
        }
    }

    /// `count` verified customers of the partner, each with a USD account
    /// funded with `funding` by a deposit that completed: their account ids.
    pub async fn open_funded_accounts(&self, count: usize, funding: &str) -> Vec<String> {
        let mut accounts = Vec::new();
        for i in 0..count {
            let unique = key();
            let tail = &unique[unique.len() - 8..];
            let customer = self
                .post_once(
                    &self.partner,
                    "/v1/customers",
                    json!({
                        "legalName": format!("Cluster Partner Customer {i}"),
                        "email": format!("cluster{i}.{tail}@example.com"),
                        "phone": "+441234567890",
                        "dateOfBirth": "1990-12-10",
                        "country": "GB",
                        "nationalId": format!("CL{i}X{tail}").to_uppercase(),
                    }),
                )
                .await;
            let customer_id = text(&customer, "customerId");
            self.post_once(
                &self.staff,
                &format!("/v1/customers/{customer_id}:verify"),
                json!({"reason": "cluster test"}),
            )
            .await;
            let account = self
                .post_once(
                    &self.partner,
                    "/v1/accounts",
                    json!({"customerId": customer_id, "currency": "USD",
                           "product": "ACCOUNT_PRODUCT_CHECKING"}),
                )
                .await;
            let account_id = text(&account, "accountId");
            let deposit = self
                .post_once(
                    &self.partner,
                    "/v1/deposits",
                    json!({"accountId": account_id,
                           "amount": {"currency": "USD", "amount": funding},
                           "wait": "20s"}),
                )
                .await;
            assert_eq!(
                deposit["status"], "TRANSACTION_STATUS_COMPLETED",
                "the funding deposit did not complete: {deposit}"
            );
            accounts.push(account_id);
        }
        accounts
    }

    /// A POST to the first gateway that must succeed at once (setup).
    async fn post_once(&self, token: &str, path: &str, body: Value) -> Value {
        let idempotency_key = key();
        let headers = [
            ("authorization", token),
            ("idempotency-key", idempotency_key.as_str()),
        ];
        let response = self.gateways[0]
            .post(path, &headers, &body)
            .await
            .unwrap_or_else(|error| panic!("POST {path}: {error}"));
        assert!(
            response.status.is_success(),
            "POST {path}: {} {}",
            response.status,
            response.text()
        );
        response.json()
    }

    /// Transfers among `accounts` through the gateway, `senders` at once,
    /// spread over its replicas.
    pub fn senders(&self, accounts: Vec<String>, senders: usize, tally: Arc<Tally>) -> Senders {
        let accounts = Arc::new(accounts);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for sender in 0..senders {
            let rest = self.clone();
            let accounts = Arc::clone(&accounts);
            let stop = stop.clone();
            let tally = Arc::clone(&tally);
            tasks.spawn(async move {
                let mut at = sender % rest.gateways.len();
                for i in (sender..).step_by(senders) {
                    if stop.is_cancelled() {
                        break;
                    }
                    let Some(request) = transfer(&accounts, i) else {
                        continue;
                    };
                    let amount = request.amount.expect("an amount");
                    let body = json!({
                        "sourceAccountId": request.source_account_id,
                        "destinationAccountId": request.destination_account_id,
                        "amount": {"currency": amount.currency, "amount": amount.amount},
                        "wait": format!("{WAIT_SECONDS}s"),
                    });
                    at = rest.send_transfer(at, &body, &tally).await;
                    tally.accepted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Senders { stop, tasks }
    }

    /// POSTs a transfer from gateway `at` on, with one idempotency key, until
    /// one accepts it; the gateway that did.
    async fn send_transfer(&self, mut at: usize, body: &Value, tally: &Tally) -> usize {
        let idempotency_key = key();
        let headers = [
            ("authorization", self.partner.as_str()),
            ("idempotency-key", idempotency_key.as_str()),
        ];
        let deadline = Instant::now() + PATIENCE;
        loop {
            let sent = timeout(
                REQUEST_PATIENCE,
                self.gateways[at].post("/v1/transfers", &headers, body),
            )
            .await;
            let why = match sent {
                Ok(Ok(response)) if response.status.is_success() => return at,
                Ok(Ok(response)) => {
                    assert!(
                        retryable(&response),
                        "a transfer was refused: {} {}",
                        response.status,
                        response.text()
                    );
                    format!("{} {}", response.status, response.text())
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "no answer".to_owned(),
            };
            assert!(
                Instant::now() < deadline,
                "a transfer was still not accepted after {PATIENCE:?}: {why}"
            );
            tally.retries.fetch_add(1, Ordering::Relaxed);
            // 409: the same key still in flight behind this gateway: stay.
            if !why.starts_with("409") {
                at = (at + 1) % self.gateways.len();
                tally.failovers.fetch_add(1, Ordering::Relaxed);
            }
            sleep(RETRY_PAUSE).await;
        }
    }
}

/// Whether a gateway's answer says "later" rather than "no": a backend down
/// or slow (5xx), the same key in flight (409), a limit (429).
fn retryable(response: &HttpResponse) -> bool {
    let status = response.status.as_u16();
    status >= 500 || status == 409 || status == 429 || status == 408
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}
