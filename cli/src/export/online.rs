//! The export commands that talk to the reporting service: create, list,
//! show, download and the signing keys.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use corebank_platform::auth::AuthedChannel;
use corebank_proto::v1 as pb;
use corebank_proto::v1::reporting_service_client::ReportingServiceClient;
use corebank_reporting::domain::export::{FILE_NAMES, SIGNATURE_FILE};

use super::ExportClientArgs;
use crate::client::channel;
use crate::exit::{Exit, fail};
use crate::output::{outln, print};

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Inclusive: RFC 3339 (2026-12-01T00:00:00Z) or a UTC day (2026-12-01).
    #[arg(long, value_parser = parse_instant)]
    from: DateTime<Utc>,
    /// Exclusive, same forms; must not be in the future.
    #[arg(long, value_parser = parse_instant)]
    to: DateTime<Utc>,
    /// Only these accounts (repeat the flag); every account when absent.
    #[arg(long = "account")]
    accounts: Vec<uuid::Uuid>,
    /// Idempotency key; a fresh one when omitted.
    #[arg(long, env = "COREBANK_IDEMPOTENCY_KEY")]
    idempotency_key: Option<String>,
}

/// An RFC 3339 time, or a `YYYY-MM-DD` day meaning its UTC midnight.
pub(crate) fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| format!("{text:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

pub(crate) fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

async fn client(args: &ExportClientArgs) -> anyhow::Result<ReportingServiceClient<AuthedChannel>> {
    Ok(ReportingServiceClient::new(
        channel(&args.reporting_endpoint).await?,
    ))
}

pub async fn create(args: &ExportClientArgs, create: CreateArgs) -> anyhow::Result<()> {
    if create.to <= create.from {
        return Err(fail(Exit::BadInput, "--to must be after --from"));
    }
    let request = pb::CreateExportRequest {
        idempotency_key: create
            .idempotency_key
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        period_start: Some(timestamp(create.from)),
        period_end: Some(timestamp(create.to)),
        account_ids: create.accounts.iter().map(ToString::to_string).collect(),
    };
    let mut client = client(args).await?;
    let spinner = crate::progress::spinner("building and signing the export");
    let export = client.create_export(request).await;
    spinner.finish_and_clear();
    print(&export?.into_inner(), args.json)
}

pub async fn list(
    args: &ExportClientArgs,
    page_size: i32,
    page_token: String,
) -> anyhow::Result<()> {
    let request = pb::ListExportsRequest {
        page_size,
        page_token,
    };
    print(
        &client(args)
            .await?
            .list_exports(request)
            .await?
            .into_inner(),
        args.json,
    )
}

pub async fn show(args: &ExportClientArgs, export_id: String) -> anyhow::Result<()> {
    let request = pb::GetExportRequest { export_id };
    print(
        &client(args).await?.get_export(request).await?.into_inner(),
        args.json,
    )
}

pub async fn keys(args: &ExportClientArgs) -> anyhow::Result<()> {
    let request = pb::GetSigningKeysRequest {};
    print(
        &client(args)
            .await?
            .get_signing_keys(request)
            .await?
            .into_inner(),
        args.json,
    )
}

/// A file being written from the stream.
struct Incoming {
    file: std::fs::File,
    size: u64,
    written: u64,
}

/// Writes the DownloadExport stream's four files into `out`, refusing
/// unknown names, out-of-order chunks and sizes that do not add up.
pub async fn download(
    args: &ExportClientArgs,
    export_id: String,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for name in FILE_NAMES {
        let path = out.join(name);
        if path.exists() {
            return Err(fail(
                Exit::BadInput,
                format!(
                    "{} already exists: refusing to overwrite it",
                    path.display()
                ),
            ));
        }
    }
    let request = pb::DownloadExportRequest {
        export_id: export_id.clone(),
    };
    let mut stream = client(args)
        .await?
        .download_export(request)
        .await?
        .into_inner();
    let mut files: HashMap<&'static str, Incoming> = HashMap::new();
    let progress = crate::progress::bytes("downloading");
    let received = receive(&mut stream, out, &mut files, &progress).await;
    progress.finish_and_clear();
    received?;
    let sizes: Vec<(&str, u64)> = FILE_NAMES
        .iter()
        .map(|name| (*name, files.get(name).map_or(0, |incoming| incoming.size)))
        .collect();
    if args.json {
        let answer = serde_json::json!({
            "export_id": export_id,
            "dir": out.display().to_string(),
            "files": sizes
                .iter()
                .map(|(name, bytes)| serde_json::json!({"name": name, "bytes": bytes}))
                .collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(());
    }
    outln!(
        "export {export_id}: wrote {} files to {}",
        FILE_NAMES.len(),
        out.display()
    )?;
    for (name, size) in sizes {
        outln!("  {name}: {size} bytes")?;
    }
    outln!(
        "check it offline: corebank export verify {} --public-key <key.pub.pem> (keys: corebank export keys); {SIGNATURE_FILE} signs manifest.json",
        out.display()
    )?;
    Ok(())
}

/// Writes the stream's chunks into `files` under `out`, checking each.
async fn receive(
    stream: &mut tonic::Streaming<pb::ExportChunk>,
    out: &Path,
    files: &mut HashMap<&'static str, Incoming>,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    while let Some(chunk) = stream.message().await? {
        let Some(name) = FILE_NAMES.iter().copied().find(|n| *n == chunk.file_name) else {
            anyhow::bail!(
                "the server sent a file named {:?}, not one of {FILE_NAMES:?}",
                chunk.file_name
            );
        };
        let size = u64::try_from(chunk.file_size)
            .map_err(|_| anyhow::anyhow!("{name}: negative file size {}", chunk.file_size))?;
        if !files.contains_key(name) {
            let path = out.join(name);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            files.insert(
                name,
                Incoming {
                    file,
                    size,
                    written: 0,
                },
            );
        }
        let Some(incoming) = files.get_mut(name) else {
            continue;
        };
        if size != incoming.size {
            anyhow::bail!(
                "{name}: the file size changed from {} to {size} mid-stream",
                incoming.size
            );
        }
        if u64::try_from(chunk.offset).ok() != Some(incoming.written) {
            anyhow::bail!(
                "{name}: a chunk at offset {} arrived, expected offset {}",
                chunk.offset,
                incoming.written
            );
        }
        let end = incoming.written + chunk.data.len() as u64;
        if end > incoming.size {
            anyhow::bail!("{name}: more bytes than its size {}", incoming.size);
        }
        incoming
            .file
            .write_all(&chunk.data)
            .with_context(|| format!("cannot write {}", out.join(name).display()))?;
        incoming.written = end;
        progress.set_message(name);
        progress.inc(chunk.data.len() as u64);
    }
    for name in FILE_NAMES {
        let Some(incoming) = files.get_mut(name) else {
            anyhow::bail!("the download ended without {name}");
        };
        if incoming.written != incoming.size {
            anyhow::bail!(
                "{name}: {} of {} bytes arrived",
                incoming.written,
                incoming.size
            );
        }
        incoming.file.sync_all()?;
    }
    Ok(())
}
