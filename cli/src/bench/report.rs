//! Measuring and reporting: database counters, waiting for sagas, the
//! invariant audit, and the printed or JSON report.

use super::*;

/// Database-wide counters at one moment.
pub(super) struct Snapshot {
    pub(super) commits: i64,
    /// The database clock, as text, to compare `created_at` columns with.
    pub(super) at: String,
    /// Executions of each statement in this database (`BEGIN`, `COMMIT` and
    /// savepoints included), by query id, when `pg_stat_statements` is loaded.
    pub(super) statements: Option<HashMap<i64, (i64, String)>>,
}

/// Statements the snapshot itself runs after reading `pg_stat_statements`
/// (that read is counted by the next snapshot), plus the two before it.
pub(super) const SNAPSHOT_STATEMENTS: i64 = 3;

/// One statement's executions per saga, for the report's top list.
#[derive(Debug, Serialize)]
pub(super) struct StatementCost {
    pub(super) per_saga: f64,
    pub(super) query: String,
}

pub(super) async fn snapshot(db: &PgPool) -> anyhow::Result<Snapshot> {
    sqlx::query("select pg_stat_clear_snapshot()")
        .execute(db)
        .await?;
    let (commits, at): (i64, String) = sqlx::query_as(
        "select xact_commit, now()::text from pg_stat_database where datname = current_database()",
    )
    .fetch_one(db)
    .await
    .context("reading pg_stat_database")?;
    Ok(Snapshot {
        commits,
        at,
        statements: statements(db).await,
    })
}

/// Every statement's executions in this database, or `None` when
/// `pg_stat_statements` is not loaded (`shared_preload_libraries`) or its
/// extension cannot be created by this login.
async fn statements(db: &PgPool) -> Option<HashMap<i64, (i64, String)>> {
    let loaded: bool = sqlx::query_scalar(
        "select current_setting('shared_preload_libraries') ~ '(^|[ ,])pg_stat_statements($|[ ,])'",
    )
    .fetch_one(db)
    .await
    .ok()?;
    if !loaded {
        return None;
    }
    if let Err(error) = sqlx::query("create extension if not exists pg_stat_statements")
        .execute(db)
        .await
    {
        progress(&format!("statements per saga not measured: {error}"));
        return None;
    }
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "select queryid, calls, query from pg_stat_statements
          where dbid = (select oid from pg_database where datname = current_database())",
    )
    .fetch_all(db)
    .await
    .ok()?;
    Some(
        rows.into_iter()
            .map(|(id, calls, query)| (id, (calls, query)))
            .collect(),
    )
}

/// Statements executed between two snapshots, less the bench's own, and the
/// `top` most executed, per saga.
pub(super) fn statement_costs(
    before: &Snapshot,
    after: &Snapshot,
    own: i64,
    sagas: u64,
    top: usize,
) -> Option<(f64, Vec<StatementCost>)> {
    let (before, after) = (before.statements.as_ref()?, after.statements.as_ref()?);
    if sagas == 0 {
        return None;
    }
    let mut deltas: Vec<(i64, &str)> = after
        .iter()
        .map(|(id, (calls, query))| {
            let earlier = before.get(id).map_or(0, |(calls, _)| *calls);
            (calls - earlier, query.as_str())
        })
        .filter(|(calls, _)| *calls > 0)
        .collect();
    let total: i64 = deltas.iter().map(|(calls, _)| calls).sum::<i64>() - own;
    deltas.sort_by_key(|(calls, _)| std::cmp::Reverse(*calls));
    let sagas = sagas as f64;
    let costs = deltas
        .into_iter()
        .take(top)
        .map(|(calls, query)| StatementCost {
            per_saga: calls as f64 / sagas,
            query: query.split_whitespace().collect::<Vec<_>>().join(" "),
        })
        .collect();
    Some((total.max(0) as f64 / sagas, costs))
}

/// The fraud service's screening time since `since`: from the transaction
/// that first handled a screen command (its inbox row) to the publish of the
/// reply it caused (the outbox row's `sent_at`, set after the broker's
/// confirm), p50 and p99 in milliseconds.
pub(super) async fn screen_latency(
    db: &PgPool,
    since: &str,
) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let exists: bool = sqlx::query_scalar("select to_regclass('fraud.inbox') is not null")
        .fetch_one(db)
        .await?;
    if !exists {
        return Ok((None, None));
    }
    let row: (Option<f64>, Option<f64>) = sqlx::query_as(
        "select percentile_cont(0.5) within group (order by ms), percentile_cont(0.99) within group (order by ms)
           from (select extract(epoch from (o.sent_at - i.received_at)) * 1000 as ms
                   from fraud.inbox i
                   join fraud.outbox o on o.causation_id = i.message_id and o.exchange = 'replies'
                  where i.consumer = 'fraud.commands' and i.received_at >= $1::timestamptz
                    and o.sent_at is not null) as screened",
    )
    .bind(since)
    .fetch_one(db)
    .await?;
    Ok(row)
}

/// The service schemas in which every table of `tables` exists (a service
/// that was never migrated, or a run against a partial deployment, has none).
pub(super) async fn schemas_with(
    db: &PgPool,
    tables: &[&str],
) -> anyhow::Result<Vec<&'static str>> {
    let mut present = Vec::new();
    for spec in corebank_cli::services::schemas() {
        let names: Vec<String> = tables
            .iter()
            .map(|table| format!("{}.{table}", spec.schema))
            .collect();
        let all: bool = sqlx::query_scalar(
            "select bool_and(to_regclass(name) is not null) from unnest($1::text[]) as name",
        )
        .bind(&names)
        .fetch_one(db)
        .await?;
        if all {
            present.push(spec.schema);
        }
    }
    Ok(present)
}

/// Outbox rows written since `since` in every service schema that has an outbox.
pub(super) async fn messages_since(db: &PgPool, since: &str) -> anyhow::Result<(i64, i64)> {
    let (mut messages, mut publishes) = (0, 0);
    for schema in schemas_with(db, &["outbox"]).await? {
        let table = format!("{schema}.outbox");
        // A relay round marks its rows sent at its transaction's start, and
        // sends one AMQP message per destination: distinct (round,
        // destination) pairs are the AMQP messages.
        let sql = format!(
            "select count(*), count(distinct (sent_at, exchange, routing_key)) \
             from {table} where created_at >= $1::timestamptz"
        );
        let (rows, sent): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .fetch_one(db)
            .await?;
        messages += rows;
        publishes += sent;
    }
    Ok((messages, publishes))
}

/// Waits until none of this run's sagas is still running or compensating;
/// returns how many still are, and how many queries that took.
pub(super) async fn wait_for_sagas(
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
pub(super) async fn audit(db: &PgPool, deadline: Instant) -> anyhow::Result<InvariantReport> {
    let until = (Instant::now() + AUDIT_SETTLE).min(deadline);
    loop {
        let report = corebank_audit::check(db).await?;
        if report.ok() || Instant::now() >= until {
            return Ok(report);
        }
        sleep(Duration::from_millis(250)).await;
    }
}

pub(super) async fn settle(pause: Duration, deadline: Instant) {
    sleep_until((Instant::now() + pause).min(deadline)).await;
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) mode: &'static str,
    pub(super) transfers: u64,
    pub(super) accounts: u32,
    /// Each saga's share (`--mix`).
    pub(super) mix: String,
    /// The Zipf exponent accounts were picked by; uniform when absent.
    pub(super) zipf: Option<f64>,
    pub(super) concurrency: Option<u32>,
    pub(super) rate: Option<f64>,
    pub(super) started: u64,
    pub(super) completed: u64,
    pub(super) failed: u64,
    pub(super) errors: u64,
    pub(super) unfinished: u64,
    pub(super) not_started: u64,
    pub(super) unfinished_sagas: i64,
    pub(super) elapsed_s: f64,
    pub(super) sagas_per_sec: f64,
    pub(super) p50_ms: f64,
    pub(super) p90_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) p999_ms: f64,
    pub(super) max_ms: f64,
    pub(super) mean_ms: f64,
    pub(super) commits_per_saga: Option<f64>,
    /// Statements PostgreSQL executed per saga (`pg_stat_statements`).
    pub(super) statements_per_saga: Option<f64>,
    pub(super) messages_per_saga: Option<f64>,
    /// AMQP messages the relays published per saga: a batch envelope
    /// carries several messages for one destination.
    pub(super) publishes_per_saga: Option<f64>,
    /// The screen step inside the fraud service: command first handled →
    /// its reply published (after the commit), p50 and p99.
    pub(super) screen_p50_ms: Option<f64>,
    pub(super) screen_p99_ms: Option<f64>,
    /// The most executed statements, per saga.
    pub(super) top_statements: Vec<StatementCost>,
    /// The CPU the transfers cost, by process (see `cpu`); absent where
    /// `/proc` cannot be read.
    pub(super) cpu: Option<super::cpu::Cost>,
    /// Per kind of message, its wait in the outbox and its delivery.
    pub(super) hops: Vec<super::hops::Hop>,
    pub(super) failure_reasons: BTreeMap<String, u64>,
    pub(super) error_samples: Vec<String>,
    pub(super) invariants_ok: bool,
    pub(super) violations: Vec<String>,
    pub(super) invariants: Option<InvariantReport>,
    pub(super) timed_out: bool,
}

impl Report {
    pub(super) fn problems(&self) -> Vec<String> {
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

    pub(super) fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} transfers/s"),
            None => format!(
                "closed loop, concurrency {}",
                self.concurrency.unwrap_or_default()
            ),
        };
        let spread = self
            .zipf
            .map_or_else(|| "uniform".to_owned(), |s| format!("Zipf {s}"));
        writeln!(
            out,
            "corebank bench: {} movements ({}) over {} accounts ({spread}), {load}",
            self.transfers, self.mix, self.accounts
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
            ("statements/saga", per_saga(self.statements_per_saga)),
            ("messages/saga", per_saga(self.messages_per_saga)),
            ("publishes/saga", per_saga(self.publishes_per_saga)),
            ("screen p50", millis(self.screen_p50_ms)),
            ("screen p99", millis(self.screen_p99_ms)),
            ("cpu/saga", cpu_per_saga(self.cpu.as_ref())),
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
        for cost in &self.top_statements {
            let query: String = cost.query.chars().take(100).collect();
            writeln!(out, "  {:>6.2}/saga  {query}", cost.per_saga)?;
        }
        super::hops::write_hops(out, &self.hops)?;
        for sample in &self.error_samples {
            writeln!(out, "  error: {sample}")?;
        }
        Ok(())
    }
}

/// The CPU a saga cost, and where: `38.2 ms (postgres 18.1, …), machine 77 % busy`.
fn cpu_per_saga(cost: Option<&super::cpu::Cost>) -> String {
    let Some(cost) = cost else {
        return "n/a".to_owned();
    };
    let parts: Vec<String> = cost
        .ms_per_saga
        .iter()
        .map(|(group, ms)| format!("{group} {ms:.1}"))
        .collect();
    format!(
        "{:.1} ms ({}), machine {:.0} % busy",
        cost.total_ms_per_saga,
        parts.join(", "),
        cost.busy_pct
    )
}

/// Milliseconds with two decimals, or `n/a` when nothing was measured.
fn millis(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |ms| format!("{ms:.2} ms"))
}

pub(super) fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}
