//! `corebank export bench`: how long an auditor export takes to build,
//! write, verify and prove, next to plain SHA-256 over the same bytes
//! measured in the same run, the floor under any tamper-evident format.
//!
//! Figures only, never targets: the rows are made in memory (no database),
//! each step runs once on them, and the run fails only when the export it
//! made does not verify. Writes go to the page cache (no fsync), as a
//! download to a local disk does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use corebank_reporting::domain::export::{self as domain, ExportDraft, ExportFiles, ExportRow};

use super::ExportDir;
use crate::output::outln;

/// Accounts the generated transfers move money between.
const ACCOUNTS: usize = 1000;

/// `corebank export bench` options.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Ledger entries to export: two per journal, so an even number.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(2..), allow_negative_numbers = true)]
    rows: u64,
}

/// One measured step.
struct Step {
    name: &'static str,
    took: Duration,
    /// What the step went through, for its rate.
    rows: usize,
}

impl Step {
    fn millis(&self) -> f64 {
        millis(self.took)
    }

    fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.took.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn ratio(&self, baseline: Duration) -> f64 {
        self.took.as_secs_f64() / baseline.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

fn millis(took: Duration) -> f64 {
    took.as_secs_f64() * 1000.0
}

fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = work();
    (value, started.elapsed())
}

/// A fresh directory under the system's temp dir, removed on drop, so an
/// error halfway through leaves nothing behind either.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "corebank-export-bench-{}-{}",
            std::process::id(),
            Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
        .expect("a valid RFC 3339 time")
        .to_utc()
}

/// `journals` balanced USD transfers one a millisecond from `start`, each a
/// debit and a credit of the same amount between two of [`ACCOUNTS`]
/// accounts: `ledger_seq` one per journal from 1, `account_seq` and
/// `balance_after` running per account.
fn generate(journals: usize, start: DateTime<Utc>) -> Vec<ExportRow> {
    let accounts: Vec<Uuid> = (0..ACCOUNTS)
        .map(|n| Uuid::from_u128(0xacc0_0000 + n as u128))
        .collect();
    let mut account_seq = vec![0i64; ACCOUNTS];
    let mut balance = vec![Decimal::ZERO; ACCOUNTS];
    let mut rows = Vec::with_capacity(journals * 2);
    for j in 0..journals {
        let seq = j as i64 + 1;
        let from = j % ACCOUNTS;
        // Any other account: shift past the source by a step that varies.
        let to = (from + 1 + (j / ACCOUNTS) % (ACCOUNTS - 1)) % ACCOUNTS;
        let amount = Decimal::new(100 + (j % 50_000) as i64, 2);
        let post_time = start + chrono::Duration::milliseconds(j as i64);
        let legs = [(from, to, "debit", -amount), (to, from, "credit", amount)];
        for (n, (account, counterparty, direction, change)) in legs.into_iter().enumerate() {
            account_seq[account] += 1;
            balance[account] += change;
            rows.push(ExportRow {
                ledger_seq: seq,
                journal_id: Uuid::from_u128(0x1000_0000_0000 + seq as u128),
                entry_id: Uuid::from_u128(0x2000_0000_0000 + seq as u128 * 2 + n as u128),
                transaction_id: format!("tx-{seq}"),
                kind: "transfer".to_owned(),
                post_time,
                account_id: accounts[account],
                account_seq: account_seq[account],
                counterparty_account_id: Some(accounts[counterparty]),
                currency: "USD".to_owned(),
                direction: direction.to_owned(),
                amount,
                balance_after: balance[account],
            });
        }
    }
    rows
}

fn write_files(dir: &Path, files: &ExportFiles) -> anyhow::Result<()> {
    for (name, bytes) in files.named() {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

pub(crate) fn run(args: BenchArgs, json: bool) -> anyhow::Result<()> {
    let rows = usize::try_from(args.rows).context("--rows does not fit in memory")?;
    if rows % 2 != 0 {
        return Err(crate::exit::fail(
            crate::exit::Exit::BadInput,
            "--rows must be even: every journal has two entries",
        ));
    }
    let journals = rows / 2;
    let start = start();
    let generated = generate(journals, start);
    let draft = ExportDraft {
        export_id: Uuid::now_v7(),
        period_start: start,
        period_end: start
            + chrono::Duration::milliseconds(journals as i64)
            + chrono::Duration::days(1),
        accounts: Vec::new(),
        previous: None,
        created_at: Utc::now(),
    };
    let key = domain::generate_signing_key()?;
    let public_key = key.verifying_key();
    let mut steps = Vec::new();

    let (built, took) = timed(|| domain::build(&generated, &draft, &key));
    let files = built.context("building the benchmark export")?;
    steps.push(Step {
        name: "build",
        took,
        rows,
    });

    // The floor: one pass of SHA-256 over the bytes an auditor must read.
    let (baseline_digests, baseline) =
        timed(|| [domain::sha256(&files.jsonl), domain::sha256(&files.csv)]);
    anyhow::ensure!(
        baseline_digests == [files.summary.jsonl.sha256, files.summary.csv.sha256],
        "the baseline digests differ from the manifest's"
    );

    let tmp = TempDir::new()?;
    let (written, took) = timed(|| write_files(tmp.path(), &files));
    written?;
    steps.push(Step {
        name: "write 4 files",
        took,
        rows,
    });

    // What `corebank export verify` does: read the four files, then verify.
    let (read_back, took_read) = timed(|| ExportDir::read(tmp.path()));
    let on_disk = read_back?;
    let (outcome, took_verify) = timed(|| domain::verify(on_disk.bytes(), &public_key, None));
    let report = match outcome {
        Ok(report) => report,
        Err(problems) => match problems.first() {
            Some(first) => anyhow::bail!("the benchmark export does not verify: {first}"),
            None => anyhow::bail!("the benchmark export does not verify"),
        },
    };
    anyhow::ensure!(
        report.manifest.row_count == rows as u64,
        "verify saw {} rows, {rows} were exported",
        report.manifest.row_count
    );
    steps.push(Step {
        name: "verify (read back)",
        took: took_read + took_verify,
        rows,
    });

    // A journal in the middle, so the scan for its lines is a typical one.
    let journal_id = generated[rows / 2].journal_id;
    let (proved, took) = timed(|| domain::prove(on_disk.bytes(), journal_id));
    let proof = proved.context("proving a journal of the benchmark export")?;
    steps.push(Step {
        name: "prove 1 journal",
        took,
        rows,
    });
    let (checked, took) = timed(|| domain::verify_proof(&proof, &public_key));
    let proof_report = checked.map_err(|problems| match problems.first() {
        Some(first) => anyhow::anyhow!("the benchmark proof does not verify: {first}"),
        None => anyhow::anyhow!("the benchmark proof does not verify"),
    })?;
    steps.push(Step {
        name: "verify_proof",
        took,
        rows: proof_report.lines,
    });
    drop(tmp);

    let jsonl_bytes = files.jsonl.len();
    let csv_bytes = files.csv.len();
    if json {
        let listed: Vec<_> = steps
            .iter()
            .map(|step| {
                json!({
                    "step": step.name,
                    "millis": step.millis(),
                    "rows": step.rows,
                    "rows_per_second": step.rows_per_second(),
                    "ratio_to_baseline": step.ratio(baseline),
                })
            })
            .collect();
        let out = json!({
            "rows": rows,
            "journals": journals,
            "accounts": ACCOUNTS,
            "jsonl_bytes": jsonl_bytes,
            "csv_bytes": csv_bytes,
            "baseline": {
                "what": "sha256 of the files",
                "millis": millis(baseline),
                "rows_per_second": rows as f64 / baseline.as_secs_f64().max(f64::MIN_POSITIVE),
            },
            "steps": listed,
            "verify": {
                "ok": true,
                "row_count": report.manifest.row_count,
                "read_millis": millis(took_read),
                "verify_millis": millis(took_verify),
            },
            "proof": {
                "ok": true,
                "journal_id": proof_report.journal_id.to_string(),
                "lines": proof_report.lines,
            },
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    outln!(
        "export bench: {rows} rows ({journals} journals between {ACCOUNTS} accounts), signed with key {}",
        report.key_id
    )?;
    outln!("  entries.jsonl: {}", size(jsonl_bytes, rows))?;
    outln!("  entries.csv:   {}", size(csv_bytes, rows))?;
    outln!("baseline sha256 of the files: {:.1} ms", millis(baseline))?;
    outln!(
        "  {:<20} {:>10} {:>14} {:>12}",
        "step",
        "ms",
        "rows/s",
        "x baseline"
    )?;
    for step in &steps {
        outln!(
            "  {:<20} {:>10.3} {:>14.0} {:>12.2}",
            step.name,
            step.millis(),
            step.rows_per_second(),
            step.ratio(baseline)
        )?;
    }
    outln!(
        "verify passed: {} rows; reading the files back took {:.1} ms of it",
        report.manifest.row_count,
        millis(took_read)
    )?;
    outln!(
        "proof of journal {} verified: {} lines (verify_proof's rows/s counts those lines)",
        proof_report.journal_id,
        proof_report.lines
    )?;
    Ok(())
}

fn size(bytes: usize, rows: usize) -> String {
    format!(
        "{bytes} bytes ({:.1} MiB, {:.0} bytes a row)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / rows.max(1) as f64
    )
}
