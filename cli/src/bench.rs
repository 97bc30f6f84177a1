//! `corebank bench`: opens and funds a set of accounts, runs transfers against
//! the running services in a closed loop (a fixed number in flight) or an open
//! loop (a fixed send rate, latency counted from the intended send time, so a
//! stall is not hidden by the sender slowing down), follows every transfer to
//! its terminal status, checks the invariants, and prints throughput, latency
//! percentiles and the cost of a saga in PostgreSQL commits and broker messages.
//!
//! The numbers are what they are: no targets, and a run that saw RPC errors,
//! unfinished transfers or broken invariants prints its figures and fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use corebank_audit::InvariantReport;
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;

use crate::client::{ClientArgs, channel};

const CURRENCY: &str = "USD";
/// How long the transaction service may hold a create call open for a terminal
/// status; below the channel's 30 s request timeout so the answer always arrives.
const SERVER_WAIT: Duration = Duration::from_secs(20);
/// HTTP/2 connections to the transaction service, shared round-robin.
const CONNECTIONS: usize = 4;
/// Accounts opened and funded at once during setup.
const SETUP_PARALLELISM: usize = 8;
/// Longest pause between two status polls of a transfer that is not terminal yet.
const MAX_POLL: Duration = Duration::from_millis(50);
/// How long the invariants may take to settle after the last transfer.
const AUDIT_SETTLE: Duration = Duration::from_secs(30);
/// Schemas whose outbox rows are broker messages.
const OUTBOX_SCHEMAS: [&str; 4] = ["customer", "account", "transaction", "orchestrator"];
const ERROR_SAMPLES: usize = 5;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Owner login that reads every schema: invariants, commit and message counts.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/corebank",
        hide_env_values = true
    )]
    database_url: String,
    /// Accounts to open and fund; each transfer picks two of them at random.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..))]
    accounts: u32,
    /// Transfers to run.
    #[arg(long, default_value_t = 1000)]
    transfers: u64,
    /// Closed loop: this many workers, each sending its next transfer once the last is terminal.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Open loop instead: send this many transfers per second whatever the answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Opening deposit of every account, in USD.
    #[arg(long, default_value = "1000000.00")]
    funding: String,
    /// Pause before reading PostgreSQL's statistics at each end of the transfer phase:
    /// an idle backend reports its commits up to 10 s late.
    #[arg(long, default_value_t = 11_000)]
    stats_settle_ms: u64,
    /// Give up after this long, report what was measured, and fail.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Seed of the transfer plan (accounts and amounts); random when omitted.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Clone)]
struct Clients {
    customers: CustomerServiceClient<Channel>,
    accounts: AccountServiceClient<Channel>,
    transactions: Vec<TransactionServiceClient<Channel>>,
}

impl Clients {
    async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let mut transactions = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            transactions.push(TransactionServiceClient::new(
                channel(&args.transaction_endpoint).await?,
            ));
        }
        Ok(Self {
            customers: CustomerServiceClient::new(channel(&args.customer_endpoint).await?),
            accounts: AccountServiceClient::new(channel(&args.account_endpoint).await?),
            transactions,
        })
    }

    fn transactions(&self, index: usize) -> TransactionServiceClient<Channel> {
        self.transactions[index % self.transactions.len()].clone()
    }
}

/// One planned transfer: indexes into the funded accounts, amount in cents.
#[derive(Debug, Clone, Copy)]
struct Planned {
    source: usize,
    destination: usize,
    cents: u32,
}

fn plan(transfers: u64, accounts: usize, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..transfers)
        .map(|_| {
            let source = rng.random_range(0..accounts);
            // Any other account: shift past the source.
            let destination = (source + rng.random_range(1..accounts)) % accounts;
            Planned {
                source,
                destination,
                cents: rng.random_range(1..=500),
            }
        })
        .collect()
}

fn usd(amount: String) -> Option<pb::Money> {
    Some(pb::Money {
        currency: CURRENCY.to_owned(),
        amount,
    })
}

fn wait() -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: SERVER_WAIT.as_secs() as i64,
        nanos: 0,
    })
}

fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

/// The `ErrorInfo` reason of a refusal, or its code when it has none.
fn reason_of(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_else(|| format!("{:?}", status.code()))
}

fn describe(rpc: &str, status: &tonic::Status) -> String {
    format!(
        "{rpc}: {:?} {} ({})",
        status.code(),
        status.message(),
        reason_of(status)
    )
}

fn is_terminal(transaction: &pb::Transaction) -> bool {
    matches!(
        transaction.status(),
        pb::TransactionStatus::Completed | pb::TransactionStatus::Failed
    )
}

enum Followed {
    Terminal(Box<pb::Transaction>),
    Deadline,
    Rpc(String),
}

/// Follows a transaction to its terminal status: the stream of status
/// changes when the service offers it, polling otherwise.
async fn follow(
    client: &mut TransactionServiceClient<Channel>,
    current: pb::Transaction,
    deadline: Instant,
) -> Followed {
    if is_terminal(&current) {
        return Followed::Terminal(Box::new(current));
    }
    let transaction_id = current.transaction_id.clone();
    let request = || pb::GetTransactionRequest {
        transaction_id: transaction_id.clone(),
    };
    match timeout_at(deadline, client.watch_transaction(request())).await {
        Err(_) => return Followed::Deadline,
        Ok(Err(status)) if status.code() == Code::Unimplemented => {}
        Ok(Err(status)) => return Followed::Rpc(describe("WatchTransaction", &status)),
        Ok(Ok(response)) => {
            let mut stream = response.into_inner();
            loop {
                match timeout_at(deadline, stream.message()).await {
                    Err(_) => return Followed::Deadline,
                    Ok(Err(status)) => return Followed::Rpc(describe("WatchTransaction", &status)),
                    // The stream ended early: poll for the rest.
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(update))) if is_terminal(&update) => {
                        return Followed::Terminal(Box::new(update));
                    }
                    Ok(Ok(Some(_))) => {}
                }
            }
        }
    }
    let mut pause = Duration::from_millis(2);
    loop {
        if Instant::now() + pause >= deadline {
            return Followed::Deadline;
        }
        sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
        match timeout_at(deadline, client.get_transaction(request())).await {
            Err(_) => return Followed::Deadline,
            Ok(Err(status)) => return Followed::Rpc(describe("GetTransaction", &status)),
            Ok(Ok(response)) if is_terminal(response.get_ref()) => {
                return Followed::Terminal(Box::new(response.into_inner()));
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Registers and verifies a customer, opens a USD checking account and funds it.
async fn open_funded_account(
    mut clients: Clients,
    run_id: &str,
    index: u32,
    funding: &str,
    deadline: Instant,
) -> anyhow::Result<String> {
    let customer = clients
        .customers
        .create_customer(pb::CreateCustomerRequest {
            idempotency_key: key(),
            legal_name: format!("Bench Customer {index}"),
            email: format!("bench-{run_id}-{index}@example.com"),
            phone: String::new(),
            date_of_birth: "1990-01-01".to_owned(),
            country: "DE".to_owned(),
            national_id: format!("BENCH-{run_id}-{index}"),
        })
        .await
        .context("CreateCustomer")?
        .into_inner();
    clients
        .customers
        .verify_customer(pb::KycTransitionRequest {
            customer_id: customer.customer_id.clone(),
            idempotency_key: key(),
            actor: "corebank-bench".to_owned(),
            reason: "benchmark customer".to_owned(),
        })
        .await
        .context("VerifyCustomer")?;
    let account = clients
        .accounts
        .open_account(pb::OpenAccountRequest {
            idempotency_key: key(),
            customer_id: customer.customer_id,
            currency: CURRENCY.to_owned(),
            product: pb::AccountProduct::Checking as i32,
            overdraft_limit: String::new(),
        })
        .await
        .context("OpenAccount")?
        .into_inner();
    let mut transactions = clients.transactions(index as usize);
    let deposit = transactions
        .create_deposit(pb::CreateDepositRequest {
            idempotency_key: key(),
            account_id: account.account_id.clone(),
            amount: usd(funding.to_owned()),
            description: "corebank bench funding".to_owned(),
            wait: wait(),
        })
        .await
        .context("CreateDeposit")?
        .into_inner();
    match follow(&mut transactions, deposit, deadline).await {
        Followed::Terminal(done) if done.status() == pb::TransactionStatus::Completed => {
            Ok(account.account_id)
        }
        Followed::Terminal(failed) => anyhow::bail!(
            "the funding deposit {} failed: {} {}",
            failed.transaction_id,
            failed.failure_reason,
            failed.failure_detail
        ),
        Followed::Deadline => {
            anyhow::bail!("the funding deposit did not finish before the deadline")
        }
        Followed::Rpc(error) => anyhow::bail!("following the funding deposit: {error}"),
    }
}

async fn setup(
    clients: &Clients,
    args: &BenchArgs,
    deadline: Instant,
) -> anyhow::Result<Vec<String>> {
    let run_id = format!("{:08x}", rand::rng().random::<u32>());
    futures::stream::iter(0..args.accounts)
        .map(|index| open_funded_account(clients.clone(), &run_id, index, &args.funding, deadline))
        .buffered(SETUP_PARALLELISM)
        .try_collect()
        .await
}

enum Outcome {
    Completed {
        id: String,
        finished: Instant,
    },
    Failed {
        id: Option<String>,
        finished: Instant,
        reason: String,
    },
    Error {
        id: Option<String>,
        message: String,
    },
    Unfinished {
        id: Option<String>,
    },
}

/// Sends one transfer and follows it to its end, noting when that end was seen.
async fn transfer(
    mut client: TransactionServiceClient<Channel>,
    accounts: &[String],
    planned: Planned,
    deadline: Instant,
) -> Outcome {
    let request = pb::CreateTransferRequest {
        idempotency_key: key(),
        source_account_id: accounts[planned.source].clone(),
        destination_account_id: accounts[planned.destination].clone(),
        amount: usd(format!(
            "{}.{:02}",
            planned.cents / 100,
            planned.cents % 100
        )),
        description: "corebank bench".to_owned(),
        wait: wait(),
    };
    let created = match timeout_at(deadline, client.create_transfer(request)).await {
        Err(_) => return Outcome::Unfinished { id: None },
        // Refused up front (a business rule): a terminal outcome like a failed saga.
        Ok(Err(status)) if status.code() == Code::FailedPrecondition => {
            return Outcome::Failed {
                id: None,
                finished: Instant::now(),
                reason: reason_of(&status),
            };
        }
        Ok(Err(status)) => {
            return Outcome::Error {
                id: None,
                message: describe("CreateTransfer", &status),
            };
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    let id = Some(created.transaction_id.clone());
    match follow(&mut client, created, deadline).await {
        Followed::Terminal(done) if done.status() == pb::TransactionStatus::Completed => {
            Outcome::Completed {
                id: done.transaction_id,
                finished: Instant::now(),
            }
        }
        Followed::Terminal(failed) => Outcome::Failed {
            finished: Instant::now(),
            id,
            reason: failed.failure_reason,
        },
        Followed::Deadline => Outcome::Unfinished { id },
        Followed::Rpc(message) => Outcome::Error { id, message },
    }
}

/// What a set of transfers came to.
struct Tally {
    latency_us: Histogram<u64>,
    started: u64,
    completed: u64,
    failed: u64,
    errors: u64,
    unfinished: u64,
    failure_reasons: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    ids: Vec<String>,
    last_terminal: Option<Instant>,
}

impl Tally {
    fn new() -> Self {
        Self {
            // One microsecond to one hour, three significant digits.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            started: 0,
            completed: 0,
            failed: 0,
            errors: 0,
            unfinished: 0,
            failure_reasons: BTreeMap::new(),
            error_samples: Vec::new(),
            ids: Vec::new(),
            last_terminal: None,
        }
    }

    fn terminal(&mut self, intended: Instant, finished: Instant) {
        let latency = finished.duration_since(intended);
        self.latency_us
            .saturating_record(latency.as_micros().try_into().unwrap_or(u64::MAX));
        self.last_terminal = self.last_terminal.max(Some(finished));
    }

    /// Counts one transfer meant to be sent at `intended`.
    fn add(&mut self, intended: Instant, outcome: Outcome) {
        self.started += 1;
        match outcome {
            Outcome::Completed { id, finished } => {
                self.completed += 1;
                self.ids.push(id);
                self.terminal(intended, finished);
            }
            Outcome::Failed {
                id,
                finished,
                reason,
            } => {
                self.failed += 1;
                self.ids.extend(id);
                *self.failure_reasons.entry(reason).or_default() += 1;
                self.terminal(intended, finished);
            }
            Outcome::Error { id, message } => {
                self.errors += 1;
                self.ids.extend(id);
                if self.error_samples.len() < ERROR_SAMPLES
                    && !self.error_samples.contains(&message)
                {
                    self.error_samples.push(message);
                }
            }
            Outcome::Unfinished { id } => {
                self.unfinished += 1;
                self.ids.extend(id);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds");
        self.started += other.started;
        self.completed += other.completed;
        self.failed += other.failed;
        self.errors += other.errors;
        self.unfinished += other.unfinished;
        for (reason, count) in other.failure_reasons {
            *self.failure_reasons.entry(reason).or_default() += count;
        }
        for message in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
                self.error_samples.push(message);
            }
        }
        self.ids.extend(other.ids);
        self.last_terminal = self.last_terminal.max(other.last_terminal);
    }
}

/// `concurrency` workers, each sending its next transfer when the last one is terminal.
async fn closed_loop(
    clients: &Clients,
    accounts: Arc<Vec<String>>,
    plan: Arc<Vec<Planned>>,
    concurrency: u32,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for worker in 0..concurrency as usize {
        let client = clients.transactions(worker);
        let (accounts, plan, next) = (accounts.clone(), plan.clone(), next.clone());
        workers.spawn(async move {
            let mut tally = Tally::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= plan.len() || Instant::now() >= deadline {
                    return tally;
                }
                let sent = Instant::now();
                let outcome = transfer(client.clone(), &accounts, plan[index], deadline).await;
                tally.add(sent, outcome);
            }
        });
    }
    let mut total = Tally::new();
    while let Some(worker) = workers.join_next().await {
        total.merge(worker.context("a bench worker panicked")?);
    }
    Ok(total)
}

/// Transfer `i` goes out at `start + i / rate`, whether or not earlier ones
/// have answered; its latency counts from that intended time.
async fn open_loop(
    clients: &Clients,
    accounts: Arc<Vec<String>>,
    plan: &[Planned],
    rate: f64,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    let mut total = Tally::new();
    for (index, planned) in plan.iter().copied().enumerate() {
        let intended = start + Duration::from_secs_f64(index as f64 / rate);
        if intended >= deadline {
            break;
        }
        sleep_until(intended).await;
        let (client, accounts) = (clients.transactions(index), accounts.clone());
        in_flight.spawn(async move {
            (
                intended,
                transfer(client, &accounts, planned, deadline).await,
            )
        });
        while let Some(done) = in_flight.try_join_next() {
            let (intended, outcome) = done.context("a bench transfer panicked")?;
            total.add(intended, outcome);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        let (intended, outcome) = done.context("a bench transfer panicked")?;
        total.add(intended, outcome);
    }
    Ok(total)
}

/// Database-wide counters at one moment.
struct Snapshot {
    commits: i64,
    /// The database clock, as text, to compare `created_at` columns with.
    at: String,
}

async fn snapshot(db: &PgPool) -> anyhow::Result<Snapshot> {
    sqlx::query("select pg_stat_clear_snapshot()")
        .execute(db)
        .await?;
    let (commits, at): (i64, String) = sqlx::query_as(
        "select xact_commit, now()::text from pg_stat_database where datname = current_database()",
    )
    .fetch_one(db)
    .await
    .context("reading pg_stat_database")?;
    Ok(Snapshot { commits, at })
}

/// Outbox rows written since `since` in every service schema that has an outbox.
async fn messages_since(db: &PgPool, since: &str) -> anyhow::Result<i64> {
    let mut total = 0;
    for schema in OUTBOX_SCHEMAS {
        let table = format!("{schema}.outbox");
        let exists: bool = sqlx::query_scalar("select to_regclass($1) is not null")
            .bind(&table)
            .fetch_one(db)
            .await?;
        if !exists {
            continue;
        }
        let sql = format!("select count(*) from {table} where created_at >= $1::timestamptz");
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .fetch_one(db)
            .await?;
        total += count;
    }
    Ok(total)
}

/// Waits until none of this run's sagas is still running or compensating;
/// returns how many still are, and how many queries that took.
async fn wait_for_sagas(
    db: &PgPool,
    ids: &[String],
    deadline: Instant,
) -> anyhow::Result<(i64, u64)> {
    let ids: Vec<uuid::Uuid> = ids.iter().filter_map(|id| id.parse().ok()).collect();
    let exists: bool = sqlx::query_scalar("select to_regclass('orchestrator.saga') is not null")
        .fetch_one(db)
        .await?;
    let mut queries = 1;
    if !exists || ids.is_empty() {
        return Ok((0, queries));
    }
    loop {
        let active: i64 = sqlx::query_scalar(
            "select count(*) from orchestrator.saga
             where transaction_id = any($1) and state in ('running', 'compensating')",
        )
        .bind(&ids)
        .fetch_one(db)
        .await?;
        queries += 1;
        if active == 0 || Instant::now() >= deadline {
            return Ok((active, queries));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The invariants, given a little time to settle (a saga's last commit may
/// trail its transaction's terminal status).
async fn audit(db: &PgPool, deadline: Instant) -> anyhow::Result<InvariantReport> {
    let until = (Instant::now() + AUDIT_SETTLE).min(deadline);
    loop {
        let report = corebank_audit::check(db).await?;
        if report.ok() || Instant::now() >= until {
            return Ok(report);
        }
        sleep(Duration::from_millis(250)).await;
    }
}

async fn settle(pause: Duration, deadline: Instant) {
    sleep_until((Instant::now() + pause).min(deadline)).await;
}

#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    transfers: u64,
    accounts: u32,
    concurrency: Option<u32>,
    rate: Option<f64>,
    started: u64,
    completed: u64,
    failed: u64,
    errors: u64,
    unfinished: u64,
    not_started: u64,
    unfinished_sagas: i64,
    elapsed_s: f64,
    sagas_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    commits_per_saga: Option<f64>,
    messages_per_saga: Option<f64>,
    failure_reasons: BTreeMap<String, u64>,
    error_samples: Vec<String>,
    invariants_ok: bool,
    violations: Vec<String>,
    invariants: Option<InvariantReport>,
    timed_out: bool,
}

impl Report {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.errors > 0 {
            problems.push(format!("{} transfers ended in an RPC error", self.errors));
        }
        if self.unfinished + self.not_started > 0 || self.unfinished_sagas > 0 {
            problems.push(format!(
                "{} transfers and {} sagas did not finish, {} were never sent",
                self.unfinished, self.unfinished_sagas, self.not_started
            ));
        }
        if !self.invariants_ok {
            problems.push(format!("invariants broken: {}", self.violations.join("; ")));
        }
        if self.timed_out {
            problems.push("the run hit --timeout-secs".to_owned());
        }
        problems
    }

    fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} transfers/s"),
            None => format!(
                "closed loop, concurrency {}",
                self.concurrency.unwrap_or_default()
            ),
        };
        writeln!(
            out,
            "corebank bench: {} transfers over {} accounts, {load}",
            self.transfers, self.accounts
        )?;
        let reasons: Vec<String> = self
            .failure_reasons
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let per_saga =
            |value: Option<f64>| value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let rows = [
            ("completed", self.completed.to_string()),
            ("failed", format!("{} {}", self.failed, reasons.join(", "))),
            ("errors", self.errors.to_string()),
            (
                "unfinished",
                format!("{} (+{} never sent)", self.unfinished, self.not_started),
            ),
            ("elapsed", format!("{:.2} s", self.elapsed_s)),
            ("sagas/s", format!("{:.1}", self.sagas_per_sec)),
            ("latency p50", format!("{:.2} ms", self.p50_ms)),
            ("latency p90", format!("{:.2} ms", self.p90_ms)),
            ("latency p99", format!("{:.2} ms", self.p99_ms)),
            ("latency p99.9", format!("{:.2} ms", self.p999_ms)),
            ("latency max", format!("{:.2} ms", self.max_ms)),
            ("commits/saga", per_saga(self.commits_per_saga)),
            ("messages/saga", per_saga(self.messages_per_saga)),
            (
                "invariants",
                if self.invariants_ok {
                    "ok".to_owned()
                } else {
                    format!("BROKEN: {}", self.violations.join("; "))
                },
            ),
        ];
        for (name, value) in rows {
            writeln!(out, "  {name:<15} {}", value.trim_end())?;
        }
        for sample in &self.error_samples {
            writeln!(out, "  error: {sample}")?;
        }
        Ok(())
    }
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of transfers per second"
        );
    }
    let db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL (--database-url / DATABASE_URL)")?;
    let clients = Clients::connect(&args.client).await?;

    progress(&format!("opening and funding {} accounts", args.accounts));
    let accounts = match timeout_at(deadline, setup(&clients, &args, deadline)).await {
        Ok(accounts) => Arc::new(accounts.context("setting up the bench accounts")?),
        Err(_) => anyhow::bail!("setting up the bench accounts took longer than --timeout-secs"),
    };
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let plan = Arc::new(plan(args.transfers, accounts.len(), seed));

    let stats_settle = Duration::from_millis(args.stats_settle_ms);
    settle(stats_settle, deadline).await;
    let before = snapshot(&db).await?;
    progress(&format!(
        "running {} transfers (seed {seed})",
        args.transfers
    ));
    let start = Instant::now();
    let tally = match args.rate {
        Some(rate) => open_loop(&clients, accounts.clone(), &plan, rate, deadline).await?,
        None => {
            closed_loop(
                &clients,
                accounts.clone(),
                plan.clone(),
                args.concurrency,
                deadline,
            )
            .await?
        }
    };
    let elapsed = tally
        .last_terminal
        .unwrap_or_else(Instant::now)
        .duration_since(start);
    let (unfinished_sagas, saga_queries) = wait_for_sagas(&db, &tally.ids, deadline).await?;
    settle(stats_settle, deadline).await;
    let after = snapshot(&db).await?;
    let messages = messages_since(&db, &before.at).await?;

    progress("checking the invariants");
    let (invariants_ok, violations, invariants) = match audit(&db, deadline).await {
        Ok(report) => (report.ok(), report.violations(), Some(report)),
        Err(error) => (
            false,
            vec![format!("the check itself failed: {error:#}")],
            None,
        ),
    };

    let sagas = tally.completed + tally.failed;
    // The bench's own reads between the two snapshots commit too: the
    // snapshot queries and the saga polls.
    let own_commits = 2 + saga_queries as i64;
    let per_saga = |count: i64| (sagas > 0).then(|| count.max(0) as f64 / sagas as f64);
    let elapsed_s = elapsed.as_secs_f64();
    let latency = &tally.latency_us;
    let report = Report {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        transfers: args.transfers,
        accounts: args.accounts,
        concurrency: args.rate.is_none().then_some(args.concurrency),
        rate: args.rate,
        started: tally.started,
        completed: tally.completed,
        failed: tally.failed,
        errors: tally.errors,
        unfinished: tally.unfinished,
        not_started: args.transfers - tally.started,
        unfinished_sagas,
        elapsed_s,
        sagas_per_sec: if elapsed_s > 0.0 {
            tally.completed as f64 / elapsed_s
        } else {
            0.0
        },
        p50_ms: ms(latency, 0.5),
        p90_ms: ms(latency, 0.9),
        p99_ms: ms(latency, 0.99),
        p999_ms: ms(latency, 0.999),
        max_ms: latency.max() as f64 / 1000.0,
        mean_ms: latency.mean() / 1000.0,
        commits_per_saga: per_saga(after.commits - before.commits - own_commits),
        messages_per_saga: per_saga(messages),
        failure_reasons: tally.failure_reasons,
        error_samples: tally.error_samples,
        invariants_ok,
        violations,
        invariants,
        timed_out: Instant::now() >= deadline,
    };
    // With --json the object is the only thing on stdout; the table goes to
    // stderr, so a script reads one and shows the other from a single run.
    if args.client.json {
        report.write_table(&mut std::io::stderr().lock())?;
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.write_table(&mut std::io::stdout().lock())?;
    }
    let problems = report.problems();
    anyhow::ensure!(
        problems.is_empty(),
        "the bench run failed: {}",
        problems.join("; ")
    );
    Ok(())
}
