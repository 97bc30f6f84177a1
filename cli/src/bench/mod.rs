//! `corebank bench`: opens and funds a set of accounts, runs transfers against
//! the running services in a closed loop (a fixed number in flight) or an open
//! loop (a fixed send rate, latency counted from the intended send time, so a
//! stall is not hidden by the sender slowing down), follows every transfer to
//! its terminal status, checks the invariants, and prints throughput, latency
//! percentiles and the cost of a saga in PostgreSQL commits and broker messages.
//!
//! The numbers are what they are: no targets, and a run that saw RPC errors,
//! unfinished transfers or broken invariants prints its figures and fails.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use corebank_platform::auth::AuthedChannel;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::Rng;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tonic::Code;
use tonic_types::StatusExt;

use corebank_audit::InvariantReport;
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use corebank_proto::v1::customer_service_client::CustomerServiceClient;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;

use crate::client::{ClientArgs, service_channel};
use crate::exit::{Exit, fail};
use crate::output::{outln, write_out};

mod cpu;
pub mod edge;
mod hops;
mod load;
mod plan;
mod report;

use load::*;
use plan::{Kind, Mix, Planned, busiest, parse_zipf, plan};
use report::*;

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
const ERROR_SAMPLES: usize = 5;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Owner login that reads every schema: invariants, commit and message counts.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = corebank_platform::config::DEFAULT_DATABASE_URL,
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
    #[arg(long, default_value = "1000000.00", allow_negative_numbers = true)]
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
    /// Skew the accounts each movement touches by a Zipf law with this
    /// exponent (1.1: about a quarter of the picks go to one account of 100);
    /// uniform when omitted.
    #[arg(long, value_parser = parse_zipf)]
    zipf: Option<f64>,
    /// The share of each saga, as weights: `transfer=1,deposit=1`.
    #[arg(long, default_value = "transfer=1")]
    mix: Mix,
}

#[derive(Clone)]
struct Clients {
    customers: CustomerServiceClient<AuthedChannel>,
    accounts: AccountServiceClient<AuthedChannel>,
    transactions: Vec<TransactionServiceClient<AuthedChannel>>,
}

impl Clients {
    async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let mut transactions = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            transactions.push(TransactionServiceClient::new(service_channel(
                &args.transaction_endpoint,
            )?));
        }
        Ok(Self {
            customers: CustomerServiceClient::new(service_channel(&args.customer_endpoint)?),
            accounts: AccountServiceClient::new(service_channel(&args.account_endpoint)?),
            transactions,
        })
    }

    fn transactions(&self, index: usize) -> TransactionServiceClient<AuthedChannel> {
        self.transactions[index % self.transactions.len()].clone()
    }
}

/// The default rule set's `velocity-count-1h`: movements from one account
/// in an hour above which the next is reviewed.
const VELOCITY_REVIEW_ABOVE: u64 = 1_000;

/// The default rule set's `fan-in-24h`: distinct sources into one account
/// in a day above which the next transfer is reviewed.
const FAN_IN_REVIEW_ABOVE: usize = 50;

/// One planned transfer: indexes into the funded accounts, amount in cents.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(fail(
            Exit::BadInput,
            "--rate must be a positive number of transfers per second",
        ));
    }
    let db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL (--database-url / DATABASE_URL)")?;
    let clients = Clients::connect(&args.client).await?;

    progress(&format!("opening and funding {} accounts", args.accounts));
    let bar = crate::progress::bar(u64::from(args.accounts), "accounts funded");
    let funded = timeout_at(deadline, setup(&clients, &args, deadline, &bar)).await;
    bar.finish_and_clear();
    let accounts = match funded {
        Ok(accounts) => Arc::new(accounts.context("setting up the bench accounts")?),
        Err(_) => anyhow::bail!("setting up the bench accounts took longer than --timeout-secs"),
    };
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let plan = Arc::new(plan(
        args.transfers,
        accounts.len(),
        seed,
        args.mix,
        args.zipf,
    ));

    // A plan that makes the default fraud rules review some movements ends
    // with their sagas waiting for an analyst, and the bench waits for
    // them until its timeout: say so before the run, with the figures.
    let load = busiest(&plan);
    if load.sends > VELOCITY_REVIEW_ABOVE {
        progress(&format!(
            "warning: one account sends {} of these movements, and the default fraud rules \
             review an account's movements past {VELOCITY_REVIEW_ABOVE} within an hour (those \
             sagas then wait for an analyst): use more --accounts{}",
            load.sends,
            if args.zipf.is_some() {
                " or a lower --zipf"
            } else {
                ""
            }
        ));
    }
    if load.sources_into > FAN_IN_REVIEW_ABOVE {
        progress(&format!(
            "warning: {} accounts transfer into one account, and the default fraud rules review \
             transfers from more than {FAN_IN_REVIEW_ABOVE} distinct sources a day into one \
             account (those sagas then wait for an analyst): use {FAN_IN_REVIEW_ABOVE} accounts \
             or fewer",
            load.sources_into
        ));
    }

    let stats_settle = Duration::from_millis(args.stats_settle_ms);
    settle(stats_settle, deadline).await;
    let before = snapshot(&db).await?;
    let cpu_before = cpu::sample();
    progress(&format!(
        "running {} transfers (seed {seed})",
        args.transfers
    ));
    let bar = crate::progress::bar(args.transfers, "movements ended");
    let start = Instant::now();
    let tally = match args.rate {
        Some(rate) => open_loop(&clients, accounts.clone(), &plan, rate, deadline, &bar).await,
        None => {
            closed_loop(
                &clients,
                accounts.clone(),
                plan.clone(),
                args.concurrency,
                deadline,
                &bar,
            )
            .await
        }
    };
    bar.finish_and_clear();
    let cpu_after = cpu::sample();
    let tally = tally?;
    let elapsed = tally
        .last_terminal
        .unwrap_or_else(Instant::now)
        .duration_since(start);
    let (unfinished_sagas, saga_queries) = wait_for_sagas(&db, &tally.ids, deadline).await?;
    settle(stats_settle, deadline).await;
    let after = snapshot(&db).await?;
    let (messages, publishes) = messages_since(&db, &before.at).await?;
    let (screen_p50_ms, screen_p99_ms) = screen_latency(&db, &before.at).await?;
    let hops = hops::hops(&db, &before.at).await?;

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
    let own_statements = SNAPSHOT_STATEMENTS + saga_queries as i64;
    let (statements_per_saga, top_statements) =
        match statement_costs(&before, &after, own_statements, sagas, 12) {
            Some((per_saga, top)) => (Some(per_saga), top),
            None => (None, Vec::new()),
        };
    let per_saga = |count: i64| (sagas > 0).then(|| count.max(0) as f64 / sagas as f64);
    let cpu = cpu_before
        .zip(cpu_after)
        .and_then(|(before, after)| cpu::cost(&before, &after, sagas));
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
        mix: args.mix.to_string(),
        zipf: args.zipf,
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
        statements_per_saga,
        messages_per_saga: per_saga(messages),
        publishes_per_saga: per_saga(publishes),
        screen_p50_ms,
        screen_p99_ms,
        cpu,
        top_statements,
        hops,
        failure_reasons: tally.failure_reasons,
        error_samples: tally.error_samples,
        invariants_ok,
        violations,
        invariants,
        timed_out: Instant::now() >= deadline,
    };
    // With --json the object is the only thing on stdout; the table goes to
    // stderr, so a script reads one and shows the other from a single run.
    let mut table = Vec::new();
    report.write_table(&mut table)?;
    let table = String::from_utf8_lossy(&table);
    if args.client.json {
        crate::output::note(&table);
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        write_out(&table)?;
    }
    let problems = report.problems();
    if !problems.is_empty() {
        return Err(fail(
            Exit::ProblemFound,
            format!("the bench run failed: {}", problems.join("; ")),
        ));
    }
    Ok(())
}
