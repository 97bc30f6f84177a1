//! The workflows behind the API and the schedule: making an export,
//! reconciling with the ledger, rebuilding the read models, and telling how
//! far the projection is behind. Each asks the ledger over gRPC first and
//! then writes in one database transaction (never a network call while a
//! row is locked, except the rebuild, which locks the read models on purpose).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use corebank_platform::clock::SharedClock;
use corebank_platform::messaging::Broker;
use corebank_platform::time::to_timestamp;
use corebank_proto::v1 as pb;
use prost::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::export::{self, ExportDraft, PreviousExport, SigningKey, VerifyingKey};
use crate::domain::reconcile::{Mismatch, compare_entries, compare_figures};
use crate::ledger::Ledger;
use crate::store::exports::{self, ExportRecord, Files};
use crate::store::reconciliations::{self, RunRow};
use crate::store::{ReportingStore, projection};

/// Reason codes of the reporting service's refusals.
pub mod reason {
    /// The read model does not hold every entry of the period yet.
    pub const PROJECTION_BEHIND: &str = "PROJECTION_BEHIND";
    /// The read model holds entries the ledger does not: reconcile.
    pub const READ_MODEL_DIVERGED: &str = "READ_MODEL_DIVERGED";
}

/// How long after a period's end an export of it may be made: a posting
/// takes its time before it commits, so the last moments of a period are
/// left to settle.
pub const EXPORT_SETTLE: Duration = Duration::from_secs(5);

/// The key exports are signed with, and how it is published.
#[derive(Debug, Clone)]
pub struct Signer {
    pub key: SigningKey,
    pub key_id: String,
    pub public_key_pem: String,
}

impl Signer {
    pub fn new(key: SigningKey) -> anyhow::Result<Self> {
        let public: VerifyingKey = key.verifying_key();
        Ok(Self {
            key_id: export::key_id(&public),
            public_key_pem: export::public_key_pem(&public)?,
            key,
        })
    }
}

/// What an export is asked for, validated.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Sorted and deduplicated; empty means all accounts.
    pub accounts: Vec<Uuid>,
}

/// Checks that the read model holds every entry of the period (of the
/// scope) the ledger has.
pub async fn check_complete(
    store: &ReportingStore,
    ledger: &Ledger,
    request: &ExportRequest,
) -> Result<(), ApiError> {
    let window = (request.period_start, request.period_end);
    let ledger_figures = ledger.figures(0, Some(window)).await?;
    let model = {
        let mut conn = store.conn().await?;
        exports::counts(&mut conn, window.0, window.1).await?
    };
    let in_scope = |account: &Uuid| {
        request.accounts.is_empty() || request.accounts.binary_search(account).is_ok()
    };
    let expected: i64 = ledger_figures
        .figures
        .accounts
        .iter()
        .filter(|(account, _)| in_scope(account))
        .map(|(_, figures)| figures.entry_count)
        .sum();
    let held: i64 = model
        .iter()
        .filter(|(account, _)| in_scope(account))
        .map(|(_, count)| *count)
        .sum();
    let behind = ledger_figures
        .figures
        .accounts
        .iter()
        .filter(|(account, _)| in_scope(account))
        .any(|(account, figures)| model.get(account).copied().unwrap_or(0) < figures.entry_count);
    if behind {
        return Err(ApiError::failed_precondition(
            reason::PROJECTION_BEHIND,
            format!(
                "the read model holds {held} of the ledger's {expected} entries of the period; retry once the projection has caught up"
            ),
        )
        .with_retry_after(Duration::from_secs(1)));
    }
    if held != expected {
        return Err(ApiError::failed_precondition(
            reason::READ_MODEL_DIVERGED,
            format!(
                "the read model holds {held} entries of the period, the ledger {expected}: run a reconciliation"
            ),
        ));
    }
    Ok(())
}

/// Builds, signs and stores an export in the caller's transaction.
pub async fn make_export(
    conn: &mut sqlx::PgConnection,
    signer: &Signer,
    request: &ExportRequest,
    now: DateTime<Utc>,
) -> Result<ExportRecord, ApiError> {
    exports::register_key(conn, &signer.key_id, &signer.public_key_pem, now).await?;
    let previous = exports::previous(conn, &request.accounts, request.period_start).await?;
    let previous = match previous {
        Some(previous) => Some(PreviousExport {
            export_id: previous.export_id,
            chain_head: export::parse_hex_digest(&previous.chain_head).ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!(
                    "export {} has a malformed chain head",
                    previous.export_id
                ))
            })?,
            period_end: previous.period_end,
        }),
        None => None,
    };
    let rows = exports::rows(
        conn,
        request.period_start,
        request.period_end,
        &request.accounts,
    )
    .await?;
    let draft = ExportDraft {
        export_id: Uuid::now_v7(),
        period_start: request.period_start,
        period_end: request.period_end,
        accounts: request.accounts.clone(),
        previous,
        created_at: now,
    };
    let started = std::time::Instant::now();
    let files = export::build(&rows, &draft, &signer.key).map_err(ApiError::internal)?;
    let summary = &files.summary;
    let record = ExportRecord {
        export_id: summary.export_id,
        period_start: summary.period_start,
        period_end: summary.period_end,
        scope_accounts: summary.accounts.clone(),
        row_count: summary.row_count as i64,
        first_ledger_seq: summary.first_ledger_seq,
        last_ledger_seq: summary.last_ledger_seq,
        chain_head: export::hex_digest(&summary.chain_head),
        merkle_root: export::hex_digest(&summary.merkle_root),
        previous_chain_head: export::hex_digest(&summary.previous_chain_head),
        previous_export_id: summary.previous_export_id,
        key_id: summary.key_id.clone(),
        manifest: files.manifest.clone(),
        jsonl_size: files.jsonl.len() as i64,
        csv_size: files.csv.len() as i64,
        created_at: summary.created_at,
    };
    exports::insert(
        conn,
        &record,
        &Files {
            jsonl: files.jsonl,
            csv: files.csv,
            manifest: files.manifest,
            signature: files.signature,
        },
    )
    .await?;
    tracing::info!(
        export_id = %record.export_id,
        rows = record.row_count,
        build_ms = started.elapsed().as_millis() as u64,
        "export made"
    );
    metrics::counter!("reporting_exports_total").increment(1);
    Ok(record)
}

/// Where the projection stands, with the depth of its queue when the broker
/// answers.
pub async fn status(
    store: &ReportingStore,
    broker: &Broker,
    now: DateTime<Utc>,
) -> Result<pb::ProjectionStatus, ApiError> {
    let position = {
        let mut conn = store.conn().await?;
        reconciliations::position(&mut conn).await?
    };
    let queued = queue_depth(broker).await.unwrap_or(0);
    // The oldest thing not applied: a waiting entry, or (while the queue is
    // not empty) the last thing applied.
    let behind_since = match (position.oldest_pending_post_time, queued) {
        (Some(oldest), _) => Some(oldest),
        (None, 0) => None,
        (None, _) => position.last_applied_at,
    };
    let lag = behind_since
        .map(|since| (now - since).max(chrono::Duration::zero()))
        .unwrap_or_else(chrono::Duration::zero);
    metrics::gauge!("reporting_projection_pending_entries").set(position.pending_entries as f64);
    metrics::gauge!("reporting_projection_queued_events").set(f64::from(queued));
    metrics::gauge!("reporting_projection_lag_seconds").set(lag.as_seconds_f64());
    metrics::gauge!("reporting_projection_applied_ledger_seq")
        .set(position.applied_ledger_seq as f64);
    Ok(pb::ProjectionStatus {
        applied_ledger_seq: position.applied_ledger_seq,
        pending_entries: position.pending_entries,
        queued_events: i64::from(queued),
        lag: Some(prost_types::Duration {
            seconds: lag.num_seconds(),
            nanos: lag.subsec_nanos(),
        }),
        last_applied_time: position.last_applied_at.map(to_timestamp),
    })
}

/// Messages ready in the projection's queue (a passive declare).
async fn queue_depth(broker: &Broker) -> Option<u32> {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    let token = CancellationToken::new();
    let channel = tokio::time::timeout(Duration::from_secs(2), broker.channel(&token))
        .await
        .ok()
        .flatten()?;
    let name = broker
        .namespace()
        .queue(corebank_proto::wire::queue::REPORTING_EVENTS);
    let queue = channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()?;
    let _ = channel.close(200, "done".into()).await;
    Some(queue.message_count())
}

/// A reconciliation's result, as stored.
pub type Report = (RunRow, Vec<Mismatch>);

/// Compares the read model with the ledger as of `as_of` (0: the highest
/// sequence the read model applied, or the ledger's head when it applied
/// nothing) and stores the report.
pub async fn reconcile(
    store: &ReportingStore,
    ledger: &Ledger,
    broker: &Broker,
    clock: &SharedClock,
    as_of: i64,
    trigger: &str,
) -> Result<Report, ApiError> {
    let report = compare(store, ledger, broker, clock, as_of, trigger).await?;
    let mut tx = store.begin().await?;
    record(&mut tx, &report).await?;
    tx.commit().await?;
    Ok(report)
}

/// The comparison of [`reconcile`], stored nowhere yet: it asks the ledger
/// over gRPC, so it runs before (never inside) the transaction that
/// [`record`]s it.
pub async fn compare(
    store: &ReportingStore,
    ledger: &Ledger,
    broker: &Broker,
    clock: &SharedClock,
    as_of: i64,
    trigger: &str,
) -> Result<Report, ApiError> {
    if as_of < 0 {
        return Err(ApiError::invalid_field(
            "as_of_ledger_seq",
            "must not be negative",
        ));
    }
    let lag = status(store, broker, clock.now()).await?;
    let as_of = if as_of > 0 {
        as_of
    } else {
        lag.applied_ledger_seq
    };
    // 0 asks the ledger for its head: then nothing applied is all missing.
    let ledger_figures = ledger.figures(as_of, None).await?;
    let as_of = ledger_figures.as_of_ledger_seq;
    let model = {
        let mut conn = store.conn().await?;
        reconciliations::figures(&mut conn, as_of).await?
    };
    let (mut mismatches, drill) = compare_figures(&ledger_figures.figures, &model);
    for account_id in drill {
        let expected = ledger.entries_of(account_id, as_of).await?;
        let actual = {
            let mut conn = store.conn().await?;
            reconciliations::entries(&mut conn, account_id, as_of).await?
        };
        mismatches.extend(compare_entries(&expected, &actual));
    }
    let accounts: BTreeSet<Uuid> = ledger_figures
        .figures
        .accounts
        .keys()
        .chain(model.accounts.keys())
        .copied()
        .collect();
    let run = RunRow {
        reconciliation_id: Uuid::now_v7(),
        as_of_ledger_seq: as_of,
        ledger_head_seq: ledger_figures.head_ledger_seq,
        trigger: trigger.to_owned(),
        clean: mismatches.is_empty(),
        accounts_checked: accounts.len() as i64,
        entries_checked: ledger_figures
            .figures
            .accounts
            .values()
            .map(|figures| figures.entry_count)
            .sum(),
        lag: lag.encode_to_vec(),
        created_at: clock.now(),
    };
    Ok((run, mismatches))
}

/// Stores a report [`compare`] made, in the caller's transaction.
pub async fn record(conn: &mut sqlx::PgConnection, report: &Report) -> Result<(), ApiError> {
    let (run, mismatches) = report;
    reconciliations::insert(conn, run, mismatches).await?;
    let as_of = run.as_of_ledger_seq;
    metrics::counter!("reporting_reconciliations_total", "trigger" => run.trigger.clone())
        .increment(1);
    metrics::gauge!("reporting_reconciliation_mismatches").set(mismatches.len() as f64);
    if mismatches.is_empty() {
        tracing::info!(
            as_of,
            accounts = run.accounts_checked,
            "reconciliation clean"
        );
    } else {
        tracing::warn!(
            as_of,
            mismatches = mismatches.len(),
            "reconciliation found mismatches"
        );
    }
    Ok(())
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    pub entries: i64,
    pub accounts: i64,
    pub ledger_head_seq: i64,
}

/// Throws the ledger-derived read models away and builds them again from
/// every ledger entry, in the caller's transaction (the one holding the
/// request's idempotency key): readers see the old model until it commits,
/// and events that arrive meanwhile wait for it, then apply as duplicates or
/// successors.
pub async fn rebuild(
    conn: &mut sqlx::PgConnection,
    ledger: &Ledger,
    now: DateTime<Utc>,
) -> Result<Rebuilt, ApiError> {
    projection::clear_ledger_models(&mut *conn).await?;
    let mut entries = 0;
    let mut accounts = BTreeSet::new();
    let mut token = String::new();
    let mut head = 0;
    loop {
        let page = ledger.page(None, 0, &token).await?;
        head = head.max(page.head_ledger_seq);
        projection::offer_entries(&mut *conn, &page.entries, now).await?;
        for entry in &page.entries {
            accounts.insert(entry.account_id);
            entries += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    tracing::info!(
        entries,
        accounts = accounts.len(),
        "read models rebuilt from the ledger"
    );
    Ok(Rebuilt {
        entries,
        accounts: accounts.len() as i64,
        ledger_head_seq: head,
    })
}
