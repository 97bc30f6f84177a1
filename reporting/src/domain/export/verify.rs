//! Offline verification of an export from its four files and a public key.
//!
//! Checks run from the specific to the general: the signature, then each
//! line (form, number, chain, hash, order, period, scope), then the
//! manifest's counts and chain head, then the CSV against the lines, and
//! the Merkle root and whole-file digests last. So the first problem
//! reported is the cause ("line 17: hash does not match its content") and
//! the later ones its consequences.

use ed25519_dalek::VerifyingKey;

use super::compare_csv::check_csv;
use super::keys::{KeyError, key_id, verify_manifest_signature};
use super::manifest::Manifest;
use super::merkle::root_of_leaves;
use super::problem::{Problem, ProblemKind};
use super::scan::{Scan, scan_lines};
use super::{Digest, ExportBytes, ZERO_DIGEST, format_time, hex_digest, sha256};

/// The export before this one, to check that no export is missing between.
#[derive(Debug, Clone, Copy)]
pub struct PreviousManifest<'a> {
    pub manifest: &'a [u8],
    /// Its `manifest.sig`, verified when given.
    pub signature: Option<&'a [u8]>,
    /// The key it was signed with, when not this export's (the signing key
    /// was rotated between the two).
    pub public_key: Option<&'a VerifyingKey>,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The verified manifest: rows, sequences, period, chain head, root.
    pub manifest: Manifest,
    /// The id of the key the signature verified with.
    pub key_id: String,
    /// The previous export this one was checked to continue, when given.
    pub previous: Option<Manifest>,
}

/// Verifies an export. `Err` lists every problem found, the most specific
/// (the first bad line) first.
pub fn verify(
    files: ExportBytes<'_>,
    public_key: &VerifyingKey,
    previous: Option<PreviousManifest<'_>>,
) -> Result<VerifyReport, Vec<Problem>> {
    let mut problems = Vec::new();
    let manifest = Manifest::parse(files.manifest)
        .map_err(|error| {
            problems.push(Problem::new(
                ProblemKind::Manifest,
                format!("manifest.json: {error}"),
            ))
        })
        .ok();
    check_signature(
        "manifest.json",
        manifest.as_ref(),
        files.manifest,
        files.signature,
        public_key,
        &mut problems,
    );
    let Some(manifest) = manifest else {
        return Err(problems);
    };
    // The whole-file digests need no line, so they are summed beside the scan.
    let (scan, digests) = std::thread::scope(|scope| {
        let digests = scope.spawn(|| [sha256(files.jsonl), sha256(files.csv)]);
        let scan = scan_lines(files.jsonl, &manifest, &mut problems);
        let digests = digests
            .join()
            .unwrap_or_else(|_| [sha256(files.jsonl), sha256(files.csv)]);
        (scan, digests)
    });
    check_links(&manifest, &mut problems);
    check_totals(&manifest, &scan, &mut problems);
    if let Some(expected) = &scan.expected_csv {
        check_csv(files.csv, expected, &mut problems);
    }
    check_digests(&manifest, &scan, files, digests, &mut problems);
    let previous = previous.and_then(|p| check_previous(p, &manifest, public_key, &mut problems));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(VerifyReport {
        key_id: manifest.key_id.clone(),
        manifest,
        previous,
    })
}

/// Checks `signature` over `bytes` and that `manifest` names `key`.
pub(crate) fn check_signature(
    label: &str,
    manifest: Option<&Manifest>,
    bytes: &[u8],
    signature: &[u8],
    key: &VerifyingKey,
    problems: &mut Vec<Problem>,
) {
    let given = key_id(key);
    let other_key = manifest.is_some_and(|m| m.key_id != given);
    if let Some(manifest) = manifest.filter(|_| other_key) {
        problems.push(Problem::new(
            ProblemKind::OtherKey,
            format!(
                "{label} names signing key {} but the public key given is {given}: the export was signed with another key",
                manifest.key_id
            ),
        ));
    }
    let message = match verify_manifest_signature(key, bytes, signature) {
        Ok(()) => return,
        Err(KeyError::BadSignature) if other_key => {
            format!("the signature of {label} does not verify with the public key given ({given})")
        }
        Err(KeyError::BadSignature) => format!(
            "the signature of {label} does not verify: the manifest was edited after it was signed"
        ),
        Err(error) => format!("the signature of {label}: {error}"),
    };
    problems.push(Problem::new(ProblemKind::Signature, message));
}

/// The manifest's own link to the previous export holds together: a named
/// previous export ends where this period starts, and without one the
/// chain starts from zeros.
fn check_links(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let message = match (manifest.previous_export_id, manifest.previous_period_end) {
        (Some(id), Some(end)) if end != manifest.period_start => format!(
            "an export is missing between the previous export {id} (period ending {}) and this one (period starting {})",
            format_time(&end),
            format_time(&manifest.period_start)
        ),
        (None, None) if manifest.previous_chain_head != ZERO_DIGEST => {
            "manifest.json has a previous_chain_head but names no previous export".to_owned()
        }
        (Some(_), None) | (None, Some(_)) => {
            "manifest.json names only half of its previous export (previous_export_id and previous_period_end)".to_owned()
        }
        _ => return,
    };
    problems.push(Problem::new(ProblemKind::Previous, message));
}

/// Row count, newline, sequences and chain head against the manifest.
fn check_totals(manifest: &Manifest, scan: &Scan, problems: &mut Vec<Problem>) {
    let mut push = |kind, message: String| problems.push(Problem::new(kind, message));
    if scan.missing_newline {
        push(
            ProblemKind::MissingNewline,
            "entries.jsonl does not end with a newline: its last line was cut short".to_owned(),
        );
    }
    if scan.lines != manifest.row_count {
        push(
            ProblemKind::RowCount,
            format!(
                "entries.jsonl has {} lines, the manifest says {}",
                scan.lines, manifest.row_count
            ),
        );
    }
    let (first, last) = match scan.lines {
        0 => (Some(0), Some(0)),
        _ => (scan.first_seq, scan.last_seq),
    };
    for (name, found, claimed) in [
        ("first_ledger_seq", first, manifest.first_ledger_seq),
        ("last_ledger_seq", last, manifest.last_ledger_seq),
    ] {
        if let Some(found) = found.filter(|found| *found != claimed) {
            push(
                ProblemKind::SequenceRange,
                format!("entries.jsonl gives {name} {found}, the manifest says {claimed}"),
            );
        }
    }
    let head = match scan.lines {
        0 => Some(manifest.previous_chain_head),
        _ => scan.last_hash,
    };
    if let Some(head) = head.filter(|head| *head != manifest.chain_head) {
        push(
            ProblemKind::ChainHead,
            format!(
                "the chain of entries.jsonl ends at {}, the manifest's chain_head is {}",
                hex_digest(&head),
                hex_digest(&manifest.chain_head)
            ),
        );
    }
}

/// The Merkle root and the files' digests: consequences, so checked last.
fn check_digests(
    manifest: &Manifest,
    scan: &Scan,
    files: ExportBytes<'_>,
    digests: [Digest; 2],
    problems: &mut Vec<Problem>,
) {
    let mut push = |kind, message: String| problems.push(Problem::new(kind, message));
    let root = root_of_leaves(&scan.leaves);
    if root != manifest.merkle_root {
        push(
            ProblemKind::MerkleRoot,
            format!(
                "the Merkle root of entries.jsonl is {}, the manifest says {}",
                hex_digest(&root),
                hex_digest(&manifest.merkle_root)
            ),
        );
    }
    for ((name, bytes, claimed), digest) in [
        ("entries.jsonl", files.jsonl, &manifest.jsonl),
        ("entries.csv", files.csv, &manifest.csv),
    ]
    .into_iter()
    .zip(digests)
    {
        let size = bytes.len() as u64;
        if size != claimed.size || digest != claimed.sha256 {
            push(
                ProblemKind::FileDigest,
                format!(
                    "{name} ({size} bytes) does not match the sha256 and size ({} bytes) in the manifest",
                    claimed.size
                ),
            );
        }
    }
}

fn check_previous(
    previous: PreviousManifest<'_>,
    manifest: &Manifest,
    key: &VerifyingKey,
    problems: &mut Vec<Problem>,
) -> Option<Manifest> {
    let parsed = match Manifest::parse(previous.manifest) {
        Ok(parsed) => parsed,
        Err(error) => {
            problems.push(Problem::new(
                ProblemKind::Previous,
                format!("the previous manifest.json: {error}"),
            ));
            return None;
        }
    };
    if let Some(signature) = previous.signature {
        let label = "the previous manifest.json";
        check_signature(
            label,
            Some(&parsed),
            previous.manifest,
            signature,
            previous.public_key.unwrap_or(key),
            problems,
        );
    }
    let mut push = |message: String| problems.push(Problem::new(ProblemKind::Previous, message));
    if parsed.accounts != manifest.accounts {
        push(format!(
            "the previous export {} covers another scope than this one",
            parsed.export_id
        ));
    }
    let periods_meet = parsed.period_end == manifest.period_start
        && manifest.previous_period_end == Some(parsed.period_end);
    if !periods_meet || manifest.previous_export_id != Some(parsed.export_id) {
        push(format!(
            "an export is missing between the previous export {} (period ending {}) and this one (period starting {}, continuing export {})",
            parsed.export_id,
            format_time(&parsed.period_end),
            format_time(&manifest.period_start),
            manifest
                .previous_export_id
                .map_or_else(|| "none".to_owned(), |id| id.to_string()),
        ));
    } else if parsed.chain_head != manifest.previous_chain_head {
        push(format!(
            "the previous export's chain_head {} is not this export's previous_chain_head {}: the previous export was altered",
            hex_digest(&parsed.chain_head),
            hex_digest(&manifest.previous_chain_head)
        ));
    }
    Some(parsed)
}
