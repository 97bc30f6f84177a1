//! Making an export: rows in, four files out. The rows are sorted here, so
//! the bytes depend on the rows only and never on the order a query
//! returned them; rows the files could not honestly hold (outside the
//! period or scope, an unknown currency) are refused rather than written
//! into an export that would then fail its own verification.

use chrono::{DateTime, SubsecRound as _, Utc};
use corebank_platform::money::Currency;
use ed25519_dalek::SigningKey;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::keys::{key_id, sign_manifest};
use super::line::{DIRECTIONS, KINDS, LineFields, chain_hash, format_money, write_line};
use super::manifest::{FileDigest, Manifest};
use super::merkle::{leaf_hash, root_of_leaves};
use super::{CSV_HEADER, ExportDraft, ExportFiles, ExportRow, ZERO_DIGEST, sha256};

/// Why an export could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the period is empty: period_end must be after period_start")]
    EmptyPeriod,
    #[error(
        "the previous export ends at {previous_end}, not at this period's start {period_start}: an export would be missing between them"
    )]
    Gap {
        previous_end: DateTime<Utc>,
        period_start: DateTime<Utc>,
    },
    #[error("entry {entry_id}: {reason}")]
    Row { entry_id: Uuid, reason: String },
    #[error("entry {entry_id} appears twice")]
    Duplicate { entry_id: Uuid },
    #[error("writing entries.csv failed: {0}")]
    Csv(String),
}

fn refuse(row: &ExportRow, reason: impl Into<String>) -> BuildError {
    BuildError::Row {
        entry_id: row.entry_id,
        reason: reason.into(),
    }
}

/// Builds the export of `rows` described by `draft`, signed with `key`.
/// The same rows (in any order) and draft always give the same bytes.
pub fn build(
    rows: &[ExportRow],
    draft: &ExportDraft,
    key: &SigningKey,
) -> Result<ExportFiles, BuildError> {
    // Every time in the files has microseconds; compare what is written.
    let period_start = draft.period_start.trunc_subsecs(6);
    let period_end = draft.period_end.trunc_subsecs(6);
    if period_end <= period_start {
        return Err(BuildError::EmptyPeriod);
    }
    if let Some(previous) = draft.previous
        && previous.period_end.trunc_subsecs(6) != period_start
    {
        return Err(BuildError::Gap {
            previous_end: previous.period_end,
            period_start,
        });
    }
    let mut accounts = draft.accounts.clone();
    accounts.sort();
    accounts.dedup();

    let mut sorted: Vec<&ExportRow> = rows.iter().collect();
    sorted.sort_by_key(|row| (row.ledger_seq, row.account_id, row.entry_id));
    if let Some(pair) = sorted.windows(2).find(|pair| {
        (pair[0].ledger_seq, pair[0].account_id, pair[0].entry_id)
            == (pair[1].ledger_seq, pair[1].account_id, pair[1].entry_id)
    }) {
        return Err(BuildError::Duplicate {
            entry_id: pair[0].entry_id,
        });
    }

    let previous_chain_head = draft.previous.map_or(ZERO_DIGEST, |p| p.chain_head);
    let mut jsonl = Vec::with_capacity(sorted.len() * 480);
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(sorted.len() * 400));
    csv.write_record(CSV_HEADER)
        .map_err(|error| BuildError::Csv(error.to_string()))?;
    let mut leaves = Vec::with_capacity(sorted.len());
    let mut body = Vec::with_capacity(512);
    let mut prev_hash = previous_chain_head;

    for (index, row) in sorted.iter().enumerate() {
        let post_time = row.post_time.trunc_subsecs(6);
        if post_time < period_start || post_time >= period_end {
            return Err(refuse(
                row,
                format!("post_time {post_time} is outside the period"),
            ));
        }
        if !accounts.is_empty() && accounts.binary_search(&row.account_id).is_err() {
            return Err(refuse(
                row,
                format!("account {} is outside the scope", row.account_id),
            ));
        }
        if !KINDS.contains(&row.kind.as_str()) {
            return Err(refuse(
                row,
                format!("kind {:?} is not one of {KINDS:?}", row.kind),
            ));
        }
        if !DIRECTIONS.contains(&row.direction.as_str()) {
            return Err(refuse(
                row,
                format!("direction {:?} is not one of {DIRECTIONS:?}", row.direction),
            ));
        }
        if row.amount <= Decimal::ZERO {
            return Err(refuse(row, "amount is not positive"));
        }
        let currency =
            Currency::parse(&row.currency).map_err(|error| refuse(row, error.to_string()))?;
        let amount = format_money(currency, row.amount);
        let balance_after = format_money(currency, row.balance_after);
        let fields = LineFields {
            line: index as u64 + 1,
            ledger_seq: row.ledger_seq,
            journal_id: row.journal_id,
            entry_id: row.entry_id,
            transaction_id: &row.transaction_id,
            kind: &row.kind,
            post_time,
            account_id: row.account_id,
            account_seq: row.account_seq,
            counterparty_account_id: row.counterparty_account_id,
            currency: &row.currency,
            direction: &row.direction,
            amount: &amount,
            balance_after: &balance_after,
        };
        body.clear();
        fields.write_body(&mut body);
        let hash = chain_hash(&prev_hash, &body);
        let line_start = jsonl.len();
        write_line(&mut jsonl, &body, &prev_hash, &hash);
        leaves.push(leaf_hash(&jsonl[line_start..]));
        jsonl.push(b'\n');
        csv.write_record(fields.csv_fields(&prev_hash, &hash))
            .map_err(|error| BuildError::Csv(error.to_string()))?;
        prev_hash = hash;
    }
    let csv = csv
        .into_inner()
        .map_err(|error| BuildError::Csv(error.to_string()))?;

    let summary = Manifest {
        export_id: draft.export_id,
        period_start,
        period_end,
        accounts,
        row_count: sorted.len() as u64,
        first_ledger_seq: sorted.first().map_or(0, |row| row.ledger_seq),
        last_ledger_seq: sorted.last().map_or(0, |row| row.ledger_seq),
        chain_head: prev_hash,
        merkle_root: root_of_leaves(&leaves),
        previous_chain_head,
        previous_export_id: draft.previous.map(|p| p.export_id),
        previous_period_end: draft.previous.map(|p| p.period_end.trunc_subsecs(6)),
        jsonl: FileDigest {
            sha256: sha256(&jsonl),
            size: jsonl.len() as u64,
        },
        csv: FileDigest {
            sha256: sha256(&csv),
            size: csv.len() as u64,
        },
        key_id: key_id(&key.verifying_key()),
        created_at: draft.created_at.trunc_subsecs(6),
    };
    let manifest = summary.to_bytes();
    let signature = sign_manifest(key, &manifest);
    Ok(ExportFiles {
        jsonl,
        csv,
        manifest,
        signature,
        summary,
    })
}
