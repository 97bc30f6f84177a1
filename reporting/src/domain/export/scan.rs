//! The line scan of verification: each line of entries.jsonl read,
//! re-serialized and checked against its position, the line before it and
//! the manifest, in one pass that also gathers the Merkle leaves and the
//! CSV the lines imply. After a bad line the scan follows the file's own
//! chain, so one deleted or edited line is named once, not once per later
//! line.

use uuid::Uuid;

use super::CSV_HEADER;
use super::Digest;
use super::format_time;
use super::line::{ParsedLine, chain_hash};
use super::manifest::Manifest;
use super::merkle::leaf_hash;
use super::problem::{Problem, ProblemKind};

/// Lines with problems listed before the rest are only counted.
const MAX_BAD_LINES: usize = 20;

/// What the line scan learnt.
pub(super) struct Scan {
    pub(super) lines: u64,
    pub(super) leaves: Vec<Digest>,
    pub(super) missing_newline: bool,
    pub(super) first_seq: Option<i64>,
    pub(super) last_seq: Option<i64>,
    pub(super) last_hash: Option<Digest>,
    /// entries.csv as the lines say it must be; `None` when a line was unreadable.
    pub(super) expected_csv: Option<Vec<u8>>,
}

/// Where the chain stands before a line.
enum Before {
    Start,
    Line {
        number: u64,
        hash: Digest,
        order: (i64, Uuid, Uuid),
    },
    Unreadable,
}

pub(super) fn scan_lines(jsonl: &[u8], manifest: &Manifest, problems: &mut Vec<Problem>) -> Scan {
    let (content, missing_newline) = match jsonl.strip_suffix(b"\n") {
        Some(content) => (content, false),
        None => (jsonl, !jsonl.is_empty()),
    };
    let mut scan = Scan {
        lines: 0,
        // Sized from the file, never from a manifest that may lie.
        leaves: Vec::with_capacity(jsonl.len() / 256),
        missing_newline,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        expected_csv: None,
    };
    let mut csv = Some(
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::with_capacity(jsonl.len())),
    );
    if let Some(writer) = csv.as_mut()
        && writer.write_record(CSV_HEADER).is_err()
    {
        csv = None;
    }
    let mut before = Before::Start;
    let (mut bad_lines, mut unlisted) = (0usize, 0usize);
    let pieces = (!jsonl.is_empty()).then(|| content.split(|&b| b == b'\n'));
    for (index, bytes) in pieces.into_iter().flatten().enumerate() {
        let position = index as u64 + 1;
        scan.lines = position;
        scan.leaves.push(leaf_hash(bytes));
        let mut found = Vec::new();
        match ParsedLine::parse(bytes) {
            Err(reason) => {
                found.push(Problem::at_line(
                    ProblemKind::LineUnreadable,
                    position,
                    reason,
                ));
                csv = None;
                scan.last_seq = None;
                scan.last_hash = None;
                before = Before::Unreadable;
            }
            Ok(line) => {
                check_line(&line, bytes, position, &before, manifest, &mut found);
                if let Some(writer) = csv.as_mut()
                    && writer
                        .write_record(line.fields().csv_fields(&line.prev_hash, &line.hash))
                        .is_err()
                {
                    csv = None;
                }
                if position == 1 {
                    scan.first_seq = Some(line.ledger_seq);
                }
                scan.last_seq = Some(line.ledger_seq);
                scan.last_hash = Some(line.hash);
                before = Before::Line {
                    number: line.line,
                    hash: line.hash,
                    order: (line.ledger_seq, line.account_id, line.entry_id),
                };
            }
        }
        if !found.is_empty() {
            bad_lines += 1;
            if bad_lines <= MAX_BAD_LINES {
                problems.extend(found);
            } else {
                unlisted += 1;
            }
        }
    }
    if unlisted > 0 {
        problems.push(Problem::new(
            ProblemKind::More,
            format!("entries.jsonl: {unlisted} more lines with problems are not listed"),
        ));
    }
    scan.expected_csv = csv.and_then(|writer| writer.into_inner().ok());
    scan
}

fn check_line(
    line: &ParsedLine,
    bytes: &[u8],
    position: u64,
    before: &Before,
    manifest: &Manifest,
    found: &mut Vec<Problem>,
) {
    let body = line.body();
    if line.canonical(&body) != bytes {
        found.push(Problem::at_line(
            ProblemKind::LineNotCanonical,
            position,
            "is not canonical: it does not re-serialize to the same bytes (spacing, key order or escaping changed)",
        ));
    }
    if let Some(reason) = line.value_problem() {
        found.push(Problem::at_line(
            ProblemKind::LineNotCanonical,
            position,
            reason,
        ));
    }
    let follows_before = matches!(before, Before::Line { number, .. } if line.line == number + 1);
    let number_ok = line.line == position || follows_before;
    if !number_ok {
        found.push(Problem::at_line(
            ProblemKind::LineNumber,
            position,
            format!(
                "expected line {position}, found {}: a line was deleted or the lines were reordered",
                line.line
            ),
        ));
    }
    let prev_problem = match before {
        Before::Start if line.prev_hash != manifest.previous_chain_head => Some(
            "prev_hash is not the manifest's previous_chain_head: the chain does not continue the previous export".to_owned(),
        ),
        Before::Line { hash, .. } if line.prev_hash != *hash => Some(format!(
            "prev_hash is not line {}'s hash: the line before was edited or a line was removed",
            position - 1
        )),
        _ => None,
    };
    if let Some(message) = prev_problem.filter(|_| number_ok) {
        found.push(Problem::at_line(ProblemKind::PrevHash, position, message));
    }
    if line.hash != chain_hash(&line.prev_hash, &body) {
        found.push(Problem::at_line(
            ProblemKind::Hash,
            position,
            "hash does not match its content: a field was edited",
        ));
    }
    let order = (line.ledger_seq, line.account_id, line.entry_id);
    if let Before::Line {
        order: previous, ..
    } = before
        && number_ok
        && order <= *previous
    {
        found.push(Problem::at_line(
            ProblemKind::LedgerOrder,
            position,
            format!(
                "is out of ledger order: ledger_seq {} does not come after line {}'s ledger_seq {}",
                line.ledger_seq,
                position - 1,
                previous.0
            ),
        ));
    }
    if line.post_time < manifest.period_start || line.post_time >= manifest.period_end {
        found.push(Problem::at_line(
            ProblemKind::OutsidePeriod,
            position,
            format!(
                "post_time {} is outside the period [{}, {})",
                format_time(&line.post_time),
                format_time(&manifest.period_start),
                format_time(&manifest.period_end)
            ),
        ));
    }
    if !manifest.accounts.is_empty() && manifest.accounts.binary_search(&line.account_id).is_err() {
        found.push(Problem::at_line(
            ProblemKind::OutsideScope,
            position,
            format!("account {} is outside the export's scope", line.account_id),
        ));
    }
}
