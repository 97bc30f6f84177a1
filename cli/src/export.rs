//! `corebank export …` and `corebank keygen`: auditor exports.
//!
//! `verify`, `prove` and `verify-proof` work offline on the files alone
//! (no server, no database), so an auditor can run them on a machine that
//! never saw corebank; they exit non-zero unless everything holds. `create`,
//! `list`, `show`, `download` and `keys` talk to the reporting service.
//! `bench` measures the offline steps on rows made in memory.

mod bench;
pub(crate) mod online;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use corebank_reporting::domain::export::{
    self as domain, CSV_FILE, ExportBytes, JSONL_FILE, MANIFEST_FILE, PreviousManifest, Problem,
    Proof, SIGNATURE_FILE, VerifyingKey, hex_digest,
};
use serde_json::json;

use crate::exit::{Exit, bad_input, fail};
use crate::output::{outln, write_out};

/// Where the reporting service is and how to print.
#[derive(Debug, clap::Args)]
pub struct ExportClientArgs {
    #[arg(
        long,
        global = true,
        env = "COREBANK_REPORTING_ENDPOINT",
        default_value = "http://127.0.0.1:50056"
    )]
    pub reporting_endpoint: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportCommand {
    #[command(flatten)]
    client: ExportClientArgs,
    #[command(subcommand)]
    action: ExportAction,
}

#[derive(Debug, clap::Subcommand)]
enum ExportAction {
    /// Make a signed export of every ledger entry of [from, to) on the server.
    Create(online::CreateArgs),
    /// Exports made so far, newest first.
    List {
        #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One export's summary and manifest.
    Show { export_id: String },
    /// Write an export's four files into a directory.
    Download {
        export_id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Every public key exports were signed with.
    Keys,
    /// Check an export's files offline: signature, every line, the chain,
    /// the Merkle root, the CSV and the digests.
    Verify {
        /// The directory holding entries.jsonl, entries.csv, manifest.json and manifest.sig.
        dir: PathBuf,
        /// The signer's public key (SPKI PEM).
        #[arg(long)]
        public_key: PathBuf,
        /// The previous export's manifest.json, to prove none is missing
        /// between; a manifest.sig beside it is verified too.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// The key the previous export was signed with, when the signing key
        /// was rotated since (SPKI PEM); this export's key otherwise.
        #[arg(long, requires = "previous")]
        previous_public_key: Option<PathBuf>,
    },
    /// Write the inclusion proof of one journal's lines.
    Prove {
        dir: PathBuf,
        #[arg(long)]
        journal_id: uuid::Uuid,
        /// Write the proof here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof offline.
    VerifyProof {
        proof: PathBuf,
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Measure build, write, verify and prove on generated rows, beside
    /// plain SHA-256 of the same files measured in the same run.
    Bench(bench::BenchArgs),
}

/// `corebank keygen`: a new export signing key pair.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write `<name>.key.pem` (mode 0600) and `<name>.pub.pem`.
    #[arg(long)]
    out_dir: PathBuf,
    #[arg(long, default_value = "export-signing")]
    name: String,
    /// Print `{"key_id": …, "private_key": …, "public_key": …}` instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn export(command: ExportCommand) -> anyhow::Result<()> {
    let json = command.client.json;
    match command.action {
        ExportAction::Create(args) => online::create(&command.client, args).await,
        ExportAction::List {
            page_size,
            page_token,
        } => online::list(&command.client, page_size, page_token).await,
        ExportAction::Show { export_id } => online::show(&command.client, export_id).await,
        ExportAction::Download { export_id, out } => {
            online::download(&command.client, export_id, &out).await
        }
        ExportAction::Keys => online::keys(&command.client).await,
        ExportAction::Verify {
            dir,
            public_key,
            previous,
            previous_public_key,
        } => verify(
            &dir,
            &public_key,
            previous.as_deref(),
            previous_public_key.as_deref(),
            json,
        ),
        ExportAction::Prove {
            dir,
            journal_id,
            out,
        } => prove(&dir, journal_id, out.as_deref()),
        ExportAction::VerifyProof { proof, public_key } => verify_proof(&proof, &public_key, json),
        ExportAction::Bench(args) => bench::run(args, json),
    }
}

/// A file named on the command line; one that cannot be read is bad input.
fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(bad_input)
}

fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let pem = String::from_utf8(read(path)?)
        .with_context(|| format!("{} is not a PEM text file", path.display()))
        .map_err(bad_input)?;
    domain::parse_public_key_pem(&pem)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(bad_input)
}

/// The four files of an export directory.
struct ExportDir {
    jsonl: Vec<u8>,
    csv: Vec<u8>,
    manifest: Vec<u8>,
    signature: Vec<u8>,
}

impl ExportDir {
    fn read(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            jsonl: read(&dir.join(JSONL_FILE))?,
            csv: read(&dir.join(CSV_FILE))?,
            manifest: read(&dir.join(MANIFEST_FILE))?,
            signature: read(&dir.join(SIGNATURE_FILE))?,
        })
    }

    fn bytes(&self) -> ExportBytes<'_> {
        ExportBytes {
            jsonl: &self.jsonl,
            csv: &self.csv,
            manifest: &self.manifest,
            signature: &self.signature,
        }
    }
}

fn print_problems(what: &str, problems: &[Problem], json: bool) -> anyhow::Result<()> {
    if json {
        let listed: Vec<_> = problems
            .iter()
            .map(|p| json!({"kind": format!("{:?}", p.kind), "line": p.line, "message": p.message}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": false, "problems": listed}))?
        )?;
    } else {
        outln!(
            "{what} does NOT verify ({} problems, first bad line first):",
            problems.len()
        )?;
        for problem in problems {
            outln!("  - {problem}")?;
        }
    }
    let message = match problems.first() {
        Some(first) => format!("{what} does not verify: {first}"),
        None => format!("{what} does not verify"),
    };
    Err(fail(Exit::ProblemFound, message))
}

fn verify(
    dir: &Path,
    public_key: &Path,
    previous: Option<&Path>,
    previous_public_key: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let key = read_public_key(public_key)?;
    let previous_key = previous_public_key.map(read_public_key).transpose()?;
    let files = ExportDir::read(dir)?;
    let previous_files = match previous {
        None => None,
        Some(path) => {
            let manifest = read(path)?;
            let sig_path = path.with_file_name(SIGNATURE_FILE);
            let signature = sig_path.exists().then(|| read(&sig_path)).transpose()?;
            Some((manifest, signature))
        }
    };
    let previous = previous_files
        .as_ref()
        .map(|(manifest, signature)| PreviousManifest {
            manifest,
            signature: signature.as_deref(),
            public_key: previous_key.as_ref(),
        });
    let started = Instant::now();
    let outcome = domain::verify(files.bytes(), &key, previous);
    let took = started.elapsed();
    let report = match outcome {
        Ok(report) => report,
        Err(problems) => {
            return print_problems(&format!("the export in {}", dir.display()), &problems, json);
        }
    };
    let m = &report.manifest;
    let accounts: Vec<String> = m.accounts.iter().map(ToString::to_string).collect();
    let continues = report.previous.as_ref().map(|p| p.export_id.to_string());
    if json {
        let out = json!({
            "ok": true,
            "export_id": m.export_id.to_string(),
            "row_count": m.row_count,
            "first_ledger_seq": m.first_ledger_seq,
            "last_ledger_seq": m.last_ledger_seq,
            "period_start": domain::format_time(&m.period_start),
            "period_end": domain::format_time(&m.period_end),
            "scope": m.scope(),
            "accounts": accounts,
            "chain_head": hex_digest(&m.chain_head),
            "merkle_root": hex_digest(&m.merkle_root),
            "previous_chain_head": hex_digest(&m.previous_chain_head),
            "previous_export_checked": continues,
            "key_id": report.key_id,
            "millis": took.as_secs_f64() * 1000.0,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    outln!("export {} verifies", m.export_id)?;
    outln!(
        "  signature: ed25519 over manifest.json, key id {}",
        report.key_id
    )?;
    outln!(
        "  rows: {} (ledger_seq {} to {}), every line canonical, numbered, chained and hashed",
        m.row_count,
        m.first_ledger_seq,
        m.last_ledger_seq
    )?;
    outln!(
        "  period: [{}, {})",
        domain::format_time(&m.period_start),
        domain::format_time(&m.period_end)
    )?;
    match accounts.is_empty() {
        true => outln!("  scope: all accounts")?,
        false => outln!(
            "  scope: {} accounts: {}",
            accounts.len(),
            accounts.join(", ")
        )?,
    }
    outln!("  chain head: {}", hex_digest(&m.chain_head))?;
    outln!("  merkle root: {}", hex_digest(&m.merkle_root))?;
    outln!(
        "  previous chain head: {}",
        hex_digest(&m.previous_chain_head)
    )?;
    if let Some(previous) = continues {
        outln!("  continues export {previous} (checked: no export missing between)")?;
    }
    outln!(
        "  entries.csv matches entries.jsonl row for row; both files match the manifest's sha256 and size"
    )?;
    outln!("  took {:.1} ms", took.as_secs_f64() * 1000.0)?;
    Ok(())
}

fn prove(dir: &Path, journal_id: uuid::Uuid, out: Option<&Path>) -> anyhow::Result<()> {
    let files = ExportDir::read(dir)?;
    // Files that do not verify, or a journal that is not in them: the
    // check found a problem.
    let proof = domain::prove(files.bytes(), journal_id)
        .map_err(|error| fail(Exit::ProblemFound, format!("{error:#}")))?;
    let text = proof.to_json();
    match out {
        None => write_out(&text)?,
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            crate::output::note(&format!(
                "wrote the proof of journal {journal_id} ({} lines) to {}\n",
                proof.lines.len(),
                path.display()
            ));
        }
    }
    Ok(())
}

fn verify_proof(path: &Path, public_key: &Path, json: bool) -> anyhow::Result<()> {
    let key = read_public_key(public_key)?;
    let proof = Proof::parse(&read(path)?)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(bad_input)?;
    let report = match domain::verify_proof(&proof, &key) {
        Ok(report) => report,
        Err(problems) => {
            return print_problems(&format!("the proof in {}", path.display()), &problems, json);
        }
    };
    let m = &report.manifest;
    if json {
        let out = json!({
            "ok": true,
            "journal_id": report.journal_id.to_string(),
            "lines": report.lines,
            "export_id": m.export_id.to_string(),
            "merkle_root": hex_digest(&m.merkle_root),
            "key_id": report.key_id,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(());
    }
    outln!("journal {} is in export {}", report.journal_id, m.export_id)?;
    outln!(
        "  lines: {} of {}, each hashed and on an audit path to the merkle root",
        report.lines,
        m.row_count
    )?;
    outln!("  merkle root: {}", hex_digest(&m.merkle_root))?;
    outln!(
        "  signature: ed25519 over the manifest, key id {}",
        report.key_id
    )?;
    Ok(())
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let private_path = args.out_dir.join(format!("{}.key.pem", args.name));
    let public_path = args.out_dir.join(format!("{}.pub.pem", args.name));
    for path in [&private_path, &public_path] {
        if path.exists() {
            return Err(fail(
                Exit::BadInput,
                format!(
                    "{} already exists: refusing to overwrite a key",
                    path.display()
                ),
            ));
        }
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let key = domain::generate_signing_key()?;
    let public = key.verifying_key();
    write_new(
        &private_path,
        domain::signing_key_pem(&key)?.as_bytes(),
        0o600,
    )?;
    write_new(
        &public_path,
        domain::public_key_pem(&public)?.as_bytes(),
        0o644,
    )?;
    let key_id = domain::key_id(&public);
    if args.json {
        let answer = json!({
            "key_id": key_id,
            "private_key": private_path.display().to_string(),
            "public_key": public_path.display().to_string(),
        });
        outln!("{}", serde_json::to_string_pretty(&answer)?)?;
    } else {
        outln!("key id: {key_id}")?;
        outln!("private key: {}", private_path.display())?;
        outln!("public key: {}", public_path.display())?;
    }
    Ok(())
}

/// Creates `path` (never replacing a file) with `mode` on Unix.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
