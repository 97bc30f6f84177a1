//! Money moving through a whole running corebank, and the checks that hold
//! once it has stopped moving: verified customers with funded accounts,
//! transfers among them sent in the background, the wait until every one has
//! ended, and every invariant of the system after that.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corebank_cli::services::{self, SERVICES};
use corebank_platform::auth::{
    Audience, AuthedChannel, Credentials, DevKey, PARTNER_SCOPES, STAFF_SCOPES, TokenSpec,
};
use corebank_platform::messaging::{Broker, BrokerConfig, Namespace, dlq};
use corebank_platform::service::Peers;
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use corebank_proto::v1::reporting_service_client::ReportingServiceClient;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;
use corebank_tests::harness::{key, usd};
use rust_decimal::Decimal;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;

use super::{connect, port};

/// How long one request may take before it is sent again (same key).
const REQUEST_PATIENCE: Duration = Duration::from_secs(15);

/// How long the checks wait for what trails the sagas: the last saga rows,
/// the reporting projection.
const SETTLE: Duration = Duration::from_secs(60);

/// How often a condition being waited for is looked at again.
const POLL: Duration = Duration::from_millis(200);

/// An operator with every partner and staff scope, signing with the key at
/// `key_path` (created if missing), which the system under test trusts.
pub fn operator(key_path: &Path) -> Credentials {
    let signing_key = DevKey::load_or_create_at(key_path).expect("a token signing key");
    Credentials::signed(
        signing_key,
        TokenSpec::new(
            "operator-of-a-test",
            [STAFF_SCOPES, PARTNER_SCOPES].concat().join(" "),
            Audience::Internal,
        ),
    )
}

/// Clients of the services a workload uses.
#[derive(Clone)]
pub struct Clients {
    pub customers: CustomerServiceClient<AuthedChannel>,
    pub accounts: AccountServiceClient<AuthedChannel>,
    pub transactions: TransactionServiceClient<AuthedChannel>,
    pub reporting: ReportingServiceClient<AuthedChannel>,
}

impl Clients {
    /// Connects as `operator` once every service of the system listens.
    pub async fn connect(ports: &Peers, operator: &Credentials) -> Clients {
        for service in SERVICES {
            connect(port(ports, service.name())).await;
        }
        let authed = async |service| {
            InterceptedService::new(connect(port(ports, service)).await, operator.clone())
        };
        Clients {
            customers: CustomerServiceClient::new(authed("customer").await),
            accounts: AccountServiceClient::new(authed("account").await),
            transactions: TransactionServiceClient::new(authed("transaction").await),
            reporting: ReportingServiceClient::new(authed("reporting").await),
        }
    }
}

/// `count` verified customers, each with a USD checking account funded with
/// `funding` by a deposit that completed; their account ids.
pub async fn open_funded_accounts(clients: &Clients, count: usize, funding: &str) -> Vec<String> {
    let mut clients = clients.clone();
    let mut account_ids = Vec::new();
    for i in 0..count {
        let unique = key();
        let customer = clients
            .customers
            .create_customer(pb::CreateCustomerRequest {
                idempotency_key: key(),
                legal_name: format!("Load Test {i}"),
                email: format!("load{i}.{}@example.com", &unique[24..]),
                phone: String::new(),
                date_of_birth: "1985-05-05".to_owned(),
                country: "FR".to_owned(),
                national_id: format!("LOAD{i}X"),
            })
            .await
            .expect("create a customer")
            .into_inner();
        clients
            .customers
            .verify_customer(pb::KycTransitionRequest {
                customer_id: customer.customer_id.clone(),
                idempotency_key: key(),
                actor: "test".to_owned(),
                reason: "ok".to_owned(),
            })
            .await
            .expect("verify a customer");
        let account = clients
            .accounts
            .open_account(pb::OpenAccountRequest {
                idempotency_key: key(),
                customer_id: customer.customer_id,
                currency: "USD".to_owned(),
                product: pb::AccountProduct::Checking as i32,
                overdraft_limit: String::new(),
            })
            .await
            .expect("open an account")
            .into_inner();
        let deposit = clients
            .transactions
            .create_deposit(pb::CreateDepositRequest {
                idempotency_key: key(),
                account_id: account.account_id.clone(),
                amount: Some(usd(funding)),
                description: String::new(),
                wait: Some(prost_types::Duration {
                    seconds: 20,
                    nanos: 0,
                }),
            })
            .await
            .expect("deposit")
            .into_inner();
        assert_eq!(
            deposit.status,
            pb::TransactionStatus::Completed as i32,
            "{deposit:?}"
        );
        account_ids.push(account.account_id);
    }
    account_ids
}

/// The `i`-th transfer of a fixed mix among `accounts`: each pays each other
/// in turn, 1.25 to 30.25 USD. `None` where the mix would pay an account
/// into itself.
pub fn transfer(accounts: &[String], i: usize) -> Option<pb::CreateTransferRequest> {
    let count = accounts.len();
    let source = i % count;
    let destination = (i + 1 + i / count) % count;
    (source != destination).then(|| pb::CreateTransferRequest {
        idempotency_key: key(),
        source_account_id: accounts[source].clone(),
        destination_account_id: accounts[destination].clone(),
        amount: Some(usd(&format!("{}.25", 1 + i % 30))),
        description: String::new(),
        wait: None,
    })
}

/// Sends `request` until the service accepts it, with the same idempotency
/// key every time: a request that failed because something was down may have
/// been stored or not, and the key makes sure it is stored once. Panics on a
/// refusal no retry can change, or when `patience` has passed.
pub async fn send_transfer(
    transactions: &mut TransactionServiceClient<AuthedChannel>,
    request: &pb::CreateTransferRequest,
    patience: Duration,
) {
    let deadline = Instant::now() + patience;
    loop {
        let outcome = timeout(
            REQUEST_PATIENCE,
            transactions.create_transfer(request.clone()),
        )
        .await;
        let status = match outcome {
            Ok(Ok(_)) => return,
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::deadline_exceeded("no answer"),
        };
        assert!(
            retryable(status.code()),
            "a transfer was refused: {status:?}"
        );
        assert!(
            Instant::now() < deadline,
            "a transfer was still not accepted after {patience:?}: {status:?}"
        );
        sleep(POLL).await;
    }
}

/// Whether a request that failed with `code` may be sent again with the
/// same idempotency key: something was down or busy, nothing refused it.
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
    )
}

/// Transfers sent in the background by a few concurrent senders, each
/// transfer until accepted.
pub struct Load {
    dealt: Arc<AtomicUsize>,
    task: JoinHandle<i64>,
}

impl Load {
    /// Sends the first `count` transfers of the [`transfer`] mix among
    /// `accounts` from `senders` senders at once, each pausing `pace` between
    /// two of its transfers and retrying one for up to `patience`.
    pub fn start(
        clients: &Clients,
        accounts: Vec<String>,
        count: usize,
        senders: usize,
        pace: Duration,
        patience: Duration,
    ) -> Load {
        let dealt = Arc::new(AtomicUsize::new(0));
        let accounts = Arc::new(accounts);
        let mut tasks = JoinSet::new();
        for sender in 0..senders {
            let mut transactions = clients.transactions.clone();
            let accounts = Arc::clone(&accounts);
            let dealt = Arc::clone(&dealt);
            tasks.spawn(async move {
                let mut accepted = 0;
                for i in (sender..count).step_by(senders) {
                    if let Some(request) = transfer(&accounts, i) {
                        send_transfer(&mut transactions, &request, patience).await;
                        accepted += 1;
                    }
                    dealt.fetch_add(1, Ordering::Relaxed);
                    sleep(pace).await;
                }
                accepted
            });
        }
        // A sender's panic (a transfer refused) resurfaces in `finish`.
        let task = tokio::spawn(async move { tasks.join_all().await.into_iter().sum() });
        Load { dealt, task }
    }

    /// Waits until `count` transfers of the mix have been dealt with: sent
    /// and accepted, or skipped by the mix.
    pub async fn wait_until_sent(&self, count: usize) {
        while self.dealt.load(Ordering::Relaxed) < count {
            assert!(!self.task.is_finished(), "the load stopped early");
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many transfers of the mix have been dealt with so far.
    pub fn dealt(&self) -> usize {
        self.dealt.load(Ordering::Relaxed)
    }

    /// Waits until every transfer was accepted; how many there were.
    pub async fn finish(self) -> i64 {
        self.task.await.expect("every transfer accepted")
    }
}

/// Transactions not yet COMPLETED or FAILED.
pub async fn unfinished(owner: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from transaction.transaction where status not in ('completed', 'failed')",
    )
    .fetch_one(owner)
    .await
}

/// How long it took until every transaction had ended, or how many had not
/// after `bound`. A query that fails (the database is coming back) counts as
/// not yet.
pub async fn until_every_transaction_ends(
    owner: &PgPool,
    bound: Duration,
) -> Result<Duration, i64> {
    let started = Instant::now();
    let mut last_seen = -1;
    loop {
        if let Ok(count) = unfinished(owner).await {
            if count == 0 {
                return Ok(started.elapsed());
            }
            last_seen = count;
        }
        if started.elapsed() > bound {
            return Err(last_seen);
        }
        sleep(POLL).await;
    }
}

/// Every invariant once the transactions have ended: exactly `transfers`
/// transfers; the audit's invariants (the ledger balances, no hold left
/// active, each completed transaction has exactly one journal, no failed one
/// has any, no posting applied twice, every saga terminal); customer accounts
/// holding `customer_money` between them, as before; and the reporting read
/// model, once caught up, reconciling with the ledger.
pub async fn assert_invariants(
    owner: &PgPool,
    clients: &Clients,
    transfers: i64,
    customer_money: Decimal,
) {
    let broken: Vec<String> = invariants(owner, clients, transfers, customer_money)
        .await
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|why| format!("{name}: {why}")))
        .collect();
    assert!(broken.is_empty(), "invariants broken: {broken:#?}");
}

/// Each invariant of [`assert_invariants`] by name, with why it does not
/// hold when it does not.
pub async fn invariants(
    owner: &PgPool,
    clients: &Clients,
    transfers: i64,
    customer_money: Decimal,
) -> Vec<(&'static str, Result<(), String>)> {
    let counted: i64 =
        sqlx::query_scalar("select count(*) from transaction.transaction where kind = 'transfer'")
            .fetch_one(owner)
            .await
            .expect("count transfers");
    let stored = if counted == transfers {
        Ok(())
    } else {
        Err(format!("{counted} transfers stored, {transfers} accepted"))
    };

    // The saga's own row ends a moment after its transaction's.
    let deadline = Instant::now() + SETTLE;
    let report = loop {
        let report = corebank_audit::check(owner).await.expect("audit");
        if report.ok() || Instant::now() > deadline {
            break report;
        }
        sleep(POLL).await;
    };
    let audit = if report.ok() {
        Ok(())
    } else {
        Err(format!("{:?}", report.violations()))
    };

    let held: Decimal = sqlx::query_scalar(
        "select sum(ledger_balance) from account.account where product <> 'settlement'",
    )
    .fetch_one(owner)
    .await
    .expect("sum customer balances");
    let conserved = if held == customer_money {
        Ok(())
    } else {
        Err(format!("customers hold {held}, had {customer_money}"))
    };

    vec![
        ("each accepted transfer stored once", stored),
        (
            "ledger balanced, no hold active, one journal per completed transaction, \
             every saga terminal (audit)",
            audit,
        ),
        ("customer money conserved", conserved),
        (
            "reporting reconciles with the ledger",
            reporting_reconciles(owner, clients).await,
        ),
    ]
}

/// Waits until the reporting projection has every ledger entry and none
/// waiting for a predecessor, then asks it to reconcile with the ledger.
async fn reporting_reconciles(owner: &PgPool, clients: &Clients) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (ledger, model, waiting): (i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from account.entry),
                    (select count(*) from reporting.entry),
                    (select count(*) from reporting.pending_entry)",
        )
        .fetch_one(owner)
        .await
        .expect("count entries");
        if ledger == model && waiting == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the projection never caught up: ledger {ledger} entries, \
                 read model {model}, {waiting} waiting"
            ));
        }
        sleep(POLL).await;
    }
    let request = pb::ReconcileRequest {
        as_of_ledger_seq: 0,
        idempotency_key: key(),
    };
    let mut reporting = clients.reporting.clone();
    // A channel to a process restarted meanwhile fails once, then reconnects.
    let reconciliation = loop {
        match reporting.reconcile(request.clone()).await {
            Ok(response) => break response.into_inner(),
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                sleep(POLL).await;
            }
            Err(status) => return Err(format!("reconcile: {status:?}")),
        }
    };
    if reconciliation.clean {
        Ok(())
    } else {
        Err(format!(
            "reporting differs from the ledger: {:#?}",
            reconciliation.mismatches
        ))
    }
}

/// Every parking queue of `namespace` on the broker at `amqp_url` is empty;
/// otherwise panics naming each parked message, its type and why it was
/// parked. The messages are only looked at, not taken.
pub async fn assert_nothing_parked(amqp_url: &str, namespace: &str) {
    let parked = parked(amqp_url, namespace).await;
    assert!(parked.is_empty(), "messages parked: {parked:#?}");
}

/// Each message parked in a parking queue of `namespace` on the broker at
/// `amqp_url`: where, its type, its saga and why. Only looked at, not taken.
pub async fn parked(amqp_url: &str, namespace: &str) -> Vec<String> {
    let broker = Broker::new(BrokerConfig::new(
        SecretString::from(amqp_url.to_owned()),
        Namespace::new(namespace),
        format!("{namespace}-parking-check"),
    ));
    let token = CancellationToken::new();
    let connection = timeout(SETTLE, broker.connection(&token))
        .await
        .ok()
        .flatten()
        .expect("RabbitMQ answers");
    let mut parked = Vec::new();
    for spec in services::queues() {
        let messages = dlq::list_parked(&connection, broker.namespace(), &spec.name, 100)
            .await
            .expect("read a parking queue");
        parked.extend(messages.into_iter().map(|message| {
            format!(
                "{}: {} of saga {} parked ({}): {}",
                broker.namespace().dlq(&spec.name),
                message.message_type.as_deref().unwrap_or("untyped message"),
                message.correlation_id.as_deref().unwrap_or("-"),
                message.reason.as_deref().unwrap_or("no reason"),
                message.error.as_deref().unwrap_or(""),
            )
        }));
    }
    token.cancel();
    broker.close().await;
    parked
}
