//! Auditor exports: every ledger entry of a period as canonical JSON Lines
//! and CSV, each line chained to the one before by SHA-256, an RFC 6962
//! Merkle tree over the lines, and a manifest signed with Ed25519.
//!
//! Everything here is pure and deterministic (bytes in, bytes out), so the
//! service that makes an export and the auditor who checks it offline run
//! the very same code, and the same rows always give the same bytes. The
//! store fills [`ExportRow`]s; the service calls [`build`] and keeps the
//! files; `corebank export verify` calls [`verify`] on the files alone.

mod builder;
mod compare_csv;
mod keys;
mod line;
mod manifest;
mod merkle;
mod problem;
mod proof;
mod scan;
mod verify;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

pub use builder::{BuildError, build};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use keys::{
    KeyError, generate_signing_key, key_id, parse_public_key_pem, parse_signing_key_pem,
    public_key_pem, sign_manifest, signing_key_pem, verify_manifest_signature,
};
pub use line::CSV_HEADER;
pub use manifest::{FileDigest, MANIFEST_FORMAT, Manifest, ManifestError};
pub use merkle::{audit_path, leaf_hash, root, root_of_leaves, verify_inclusion};
pub use problem::{Problem, ProblemKind};
pub use proof::{PROOF_FORMAT, Proof, ProofLine, ProofReport, ProveError, prove, verify_proof};
pub use verify::{PreviousManifest, VerifyReport, verify};

/// The chained lines, one JSON object a line.
pub const JSONL_FILE: &str = "entries.jsonl";
/// The same lines as CSV, for spreadsheets.
pub const CSV_FILE: &str = "entries.csv";
/// The signed summary of the export.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Base64 Ed25519 signature over the manifest's bytes.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// The four files of an export, in the order they are served.
pub const FILE_NAMES: [&str; 4] = [JSONL_FILE, CSV_FILE, MANIFEST_FILE, SIGNATURE_FILE];

/// A SHA-256 value.
pub type Digest = [u8; 32];

/// The chain head of the first export of a scope: 64 zeros in hex.
pub const ZERO_DIGEST: Digest = [0; 32];

/// One ledger entry as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    pub ledger_seq: i64,
    pub journal_id: Uuid,
    pub entry_id: Uuid,
    pub transaction_id: String,
    /// `transfer`, `deposit` or `withdrawal`.
    pub kind: String,
    pub post_time: DateTime<Utc>,
    pub account_id: Uuid,
    pub account_seq: i64,
    pub counterparty_account_id: Option<Uuid>,
    /// ISO 4217 code.
    pub currency: String,
    /// `debit` or `credit`.
    pub direction: String,
    /// Positive.
    pub amount: Decimal,
    /// Signed: the account's balance right after this entry.
    pub balance_after: Decimal,
}

/// What an export is about, before its rows are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDraft {
    pub export_id: Uuid,
    /// Inclusive.
    pub period_start: DateTime<Utc>,
    /// Exclusive.
    pub period_end: DateTime<Utc>,
    /// The accounts covered; empty means every account. Sorted and
    /// deduplicated by [`build`].
    pub accounts: Vec<Uuid>,
    /// The export of the same scope this one continues, if any.
    pub previous: Option<PreviousExport>,
    pub created_at: DateTime<Utc>,
}

/// The link to the previous export of the same scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousExport {
    pub export_id: Uuid,
    pub chain_head: Digest,
    pub period_end: DateTime<Utc>,
}

impl PreviousExport {
    /// The link to the export `manifest` describes.
    pub fn of(manifest: &Manifest) -> Self {
        Self {
            export_id: manifest.export_id,
            chain_head: manifest.chain_head,
            period_end: manifest.period_end,
        }
    }
}

/// The four files of a built export, and the manifest they were summed up in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFiles {
    /// `entries.jsonl`.
    pub jsonl: Vec<u8>,
    /// `entries.csv`.
    pub csv: Vec<u8>,
    /// `manifest.json`, the exact bytes signed.
    pub manifest: Vec<u8>,
    /// `manifest.sig`.
    pub signature: Vec<u8>,
    /// `manifest.json` as a value.
    pub summary: Manifest,
}

impl ExportFiles {
    /// The files as borrowed bytes, what [`verify`] and [`prove`] read.
    pub fn as_bytes(&self) -> ExportBytes<'_> {
        ExportBytes {
            jsonl: &self.jsonl,
            csv: &self.csv,
            manifest: &self.manifest,
            signature: &self.signature,
        }
    }

    /// Each file with its name, in [`FILE_NAMES`] order.
    pub fn named(&self) -> [(&'static str, &[u8]); 4] {
        [
            (JSONL_FILE, &self.jsonl),
            (CSV_FILE, &self.csv),
            (MANIFEST_FILE, &self.manifest),
            (SIGNATURE_FILE, &self.signature),
        ]
    }
}

/// The four files of an export as read from disk or a download.
#[derive(Debug, Clone, Copy)]
pub struct ExportBytes<'a> {
    pub jsonl: &'a [u8],
    pub csv: &'a [u8],
    pub manifest: &'a [u8],
    pub signature: &'a [u8],
}

/// Lowercase hex of a digest.
pub fn hex_digest(digest: &Digest) -> String {
    hex::encode(digest)
}

/// A digest from exactly 64 lowercase hex digits.
pub fn parse_hex_digest(text: &str) -> Option<Digest> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut digest = [0; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// RFC 3339 UTC with exactly six fractional digits and `Z`, the one time
/// format of every export file.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A time in the export format; anything else (offsets, other precision)
/// is refused by comparing the re-formatted value with the text.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let time = DateTime::parse_from_rfc3339(text).ok()?.to_utc();
    (format_time(&time) == text).then_some(time)
}
