//! `corebank bench-gateway`: what the REST gateway costs a partner. It sets
//! up one funded account through REST as a partner, then reads its balance
//! in a closed loop, alternating rounds of `GET /v1/accounts/{id}/balance`
//! through the gateway (partner token) and `AccountService.GetBalance` straight
//! at the account port (operator token): the direct gRPC call is the baseline,
//! measured in the same run on the same account.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use corebank_gateway::testing::{HttpClient, HttpResponse};
use corebank_platform::auth::{Audience, AuthedChannel, PARTNER_SCOPES, STAFF_SCOPES};
use corebank_proto::v1 as pb;
use corebank_proto::v1::account_service_client::AccountServiceClient;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{ClientArgs, service_channel};

#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The REST gateway.
    #[arg(
        long,
        env = "COREBANK_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    gateway_url: String,
    /// Requests in flight on each path.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Measured seconds on each path, split over the rounds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Rounds per path, alternating REST and gRPC so drift hits both alike.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

/// One path's figures.
#[derive(Debug, Serialize)]
struct PathReport {
    path: &'static str,
    requests: u64,
    errors: u64,
    requests_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct EdgeReport {
    concurrency: u32,
    seconds: u64,
    grpc: PathReport,
    rest: PathReport,
    /// REST requests/s ÷ gRPC requests/s.
    throughput_ratio: f64,
    /// REST p50 − gRPC p50, in milliseconds.
    added_p50_ms: f64,
}

/// Totals of one path over its rounds.
struct Tally {
    latency_us: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn add(&mut self, other: Tally) {
        self.latency_us
            .add(&other.latency_us)
            .expect("same histogram bounds");
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
    }

    fn report(&self, path: &'static str) -> PathReport {
        let ms = |quantile: f64| self.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
        let requests = self.latency_us.len();
        PathReport {
            path,
            requests,
            errors: self.errors,
            requests_per_sec: requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: self.latency_us.max() as f64 / 1000.0,
        }
    }
}

pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let rest = Rest::connect(&args.gateway_url).await?;
    progress("opening and funding an account through the gateway");
    let account_id = rest.funded_account().await?;
    let grpc = AccountServiceClient::new(service_channel(&args.client.account_endpoint)?);
    let round = Duration::from_secs(args.seconds).div_f64(args.rounds as f64);

    progress("warming up both paths");
    let warm_up = Duration::from_secs(1);
    run_round(&rest, &grpc, &account_id, Path::Rest, 4, warm_up).await;
    run_round(&rest, &grpc, &account_id, Path::Grpc, 4, warm_up).await;

    let (mut over_rest, mut over_grpc) = (Tally::new(), Tally::new());
    for number in 1..=args.rounds {
        progress(&format!(
            "round {number}/{}: {:.1}s each path, {} in flight",
            args.rounds,
            round.as_secs_f64(),
            args.concurrency
        ));
        let concurrency = args.concurrency as usize;
        over_grpc.add(run_round(&rest, &grpc, &account_id, Path::Grpc, concurrency, round).await);
        over_rest.add(run_round(&rest, &grpc, &account_id, Path::Rest, concurrency, round).await);
    }
    let (grpc_report, rest_report) = (over_grpc.report("gRPC"), over_rest.report("REST"));
    let report = EdgeReport {
        concurrency: args.concurrency,
        seconds: args.seconds,
        throughput_ratio: rest_report.requests_per_sec / grpc_report.requests_per_sec.max(1e-9),
        added_p50_ms: rest_report.p50_ms - grpc_report.p50_ms,
        grpc: grpc_report,
        rest: rest_report,
    };
    // With --json the object is the only thing on stdout, the table on stderr.
    let mut table = Vec::new();
    write_table(&mut table, &report)?;
    let table = String::from_utf8_lossy(&table);
    if args.client.json {
        crate::output::note(&table);
        crate::output::outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        crate::output::write_out(&table)?;
    }
    for (tally, path) in [(&over_grpc, "gRPC"), (&over_rest, "REST")] {
        if tally.errors > 0 {
            return Err(crate::exit::fail(
                crate::exit::Exit::ProblemFound,
                format!(
                    "{} {path} requests failed, the first: {}",
                    tally.errors,
                    tally.first_error.as_deref().unwrap_or("?")
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Path {
    Rest,
    Grpc,
}

/// `concurrency` workers calling one path until `length` has passed.
async fn run_round(
    rest: &Rest,
    grpc: &AccountServiceClient<AuthedChannel>,
    account_id: &str,
    path: Path,
    concurrency: usize,
    length: Duration,
) -> Tally {
    let start = Instant::now();
    let end = start + length;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (rest, mut grpc, account_id) = (rest.clone(), grpc.clone(), account_id.to_owned());
        workers.spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < end {
                let sent = Instant::now();
                let outcome = match path {
                    Path::Rest => rest.balance(&account_id).await,
                    Path::Grpc => grpc
                        .get_balance(pb::GetBalanceRequest {
                            account_id: account_id.clone(),
                        })
                        .await
                        .map(drop)
                        .map_err(|status| anyhow::anyhow!("{status}")),
                };
                match outcome {
                    Ok(()) => {
                        let took = sent.elapsed().as_micros().max(1) as u64;
                        tally.latency_us.saturating_record(took);
                    }
                    Err(error) => {
                        tally.errors += 1;
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(tally) = done {
            total.add(tally);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// The gateway as a partner sees it.
#[derive(Clone)]
struct Rest {
    client: HttpClient,
    partner: String,
    staff: String,
}

impl Rest {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("--gateway-url {url:?} is not a URL"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--gateway-url {url:?}: the bench speaks plain http"
        );
        let host = uri.host().context("--gateway-url has no host")?;
        let addr: SocketAddr = tokio::net::lookup_host((host, uri.port_u16().unwrap_or(80)))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let subject = format!("bench-{}", uuid::Uuid::now_v7().simple());
        Ok(Self {
            client: HttpClient::new(addr),
            partner: bearer(&subject, &PARTNER_SCOPES.join(" "))?,
            staff: bearer("bench-kyc-officer", &STAFF_SCOPES.join(" "))?,
        })
    }

    async fn balance(&self, account_id: &str) -> anyhow::Result<()> {
        let path = format!("/v1/accounts/{account_id}/balance");
        let response = self
            .client
            .get(&path, &[("authorization", &self.partner)])
            .await?;
        ok(&response, "GET balance").map(drop)
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let key = uuid::Uuid::now_v7().to_string();
        let headers = [("authorization", token), ("idempotency-key", key.as_str())];
        let response = self.client.post(path, &headers, &body).await?;
        ok(&response, path)
    }

    /// A verified customer of this bench's partner with one funded account.
    async fn funded_account(&self) -> anyhow::Result<String> {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let tail = &unique[unique.len() - 8..];
        let customer = self
            .post(
                &self.partner,
                "/v1/customers",
                json!({
                    "legalName": "Bench Customer",
                    "email": format!("bench.{tail}@example.com"),
                    "phone": "+441234567890",
                    "dateOfBirth": "1990-12-10",
                    "country": "GB",
                    "nationalId": format!("BENCH{tail}").to_uppercase(),
                }),
            )
            .await?;
        let customer_id = text(&customer, "customerId")?;
        self.post(
            &self.staff,
            &format!("/v1/customers/{customer_id}:verify"),
            json!({"reason": "bench"}),
        )
        .await?;
        let account = self
            .post(
                &self.partner,
                "/v1/accounts",
                json!({"customerId": customer_id, "currency": "USD", "product": "ACCOUNT_PRODUCT_CHECKING"}),
            )
            .await?;
        let account_id = text(&account, "accountId")?;
        let deposit = self
            .post(
                &self.partner,
                "/v1/deposits",
                json!({"accountId": account_id, "amount": {"currency": "USD", "amount": "100.00"}, "wait": "20s"}),
            )
            .await?;
        anyhow::ensure!(
            deposit["status"] == "TRANSACTION_STATUS_COMPLETED",
            "the funding deposit did not complete: {deposit}"
        );
        Ok(account_id)
    }
}

fn bearer(subject: &str, scopes: &str) -> anyhow::Result<String> {
    Ok(format!(
        "Bearer {}",
        crate::token::development_token(subject, scopes, Audience::Partner)?
    ))
}

fn ok(response: &HttpResponse, what: &str) -> anyhow::Result<Value> {
    anyhow::ensure!(
        response.status.is_success(),
        "{what}: {} {}",
        response.status,
        response.text()
    );
    Ok(response.json())
}

fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {field} in {value}"))
}

fn progress(message: &str) {
    crate::output::note(&format!("bench-gateway: {message}\n"));
}

fn write_table(out: &mut impl std::io::Write, report: &EdgeReport) -> std::io::Result<()> {
    writeln!(
        out,
        "GetBalance, {} in flight, {} s a path:",
        report.concurrency, report.seconds
    )?;
    writeln!(
        out,
        "{:<6} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "path", "requests", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
    )?;
    for path in [&report.grpc, &report.rest] {
        writeln!(
            out,
            "{:<6} {:>10} {:>12.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            path.path,
            path.requests,
            path.requests_per_sec,
            path.p50_ms,
            path.p90_ms,
            path.p99_ms,
            path.max_ms,
            path.errors
        )?;
    }
    writeln!(
        out,
        "REST/gRPC throughput {:.2}, REST adds {:.2} ms at p50",
        report.throughput_ratio, report.added_p50_ms
    )?;
    Ok(())
}
