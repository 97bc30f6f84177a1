//! `manifest.json`: the signed summary of an export. Its bytes are what the
//! signature covers, so it has one canonical form (fixed key order, no
//! spaces, one trailing newline) and the parser accepts that form only: a
//! manifest that would not re-serialize to its own bytes is refused rather
//! than read generously.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::line::push_json_str;
use super::{CSV_FILE, Digest, JSONL_FILE, format_time, hex_digest, parse_hex_digest, parse_time};

/// The `format` of every manifest this code writes and reads.
pub const MANIFEST_FORMAT: &str = "corebank-export/1";
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";

/// A file's digest and size as the manifest records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    pub sha256: Digest,
    pub size: u64,
}

/// The manifest of one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub export_id: Uuid,
    /// Inclusive.
    pub period_start: DateTime<Utc>,
    /// Exclusive.
    pub period_end: DateTime<Utc>,
    /// Sorted; empty means every account (`"scope":"all"`).
    pub accounts: Vec<Uuid>,
    pub row_count: u64,
    /// 0 when there are no rows.
    pub first_ledger_seq: i64,
    /// 0 when there are no rows.
    pub last_ledger_seq: i64,
    /// The last line's hash, or `previous_chain_head` when there are none.
    pub chain_head: Digest,
    pub merkle_root: Digest,
    /// Zeros when there is no previous export.
    pub previous_chain_head: Digest,
    pub previous_export_id: Option<Uuid>,
    pub previous_period_end: Option<DateTime<Utc>>,
    pub jsonl: FileDigest,
    pub csv: FileDigest,
    /// First 16 hex digits of SHA-256 over the raw public key.
    pub key_id: String,
    pub created_at: DateTime<Utc>,
}

/// Why manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest is not canonical: {0}")]
pub struct ManifestError(pub String);

impl Manifest {
    /// `"all"` or `"accounts"`.
    pub fn scope(&self) -> &'static str {
        if self.accounts.is_empty() {
            "all"
        } else {
            "accounts"
        }
    }

    /// The canonical bytes, the ones that are signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024 + 40 * self.accounts.len());
        out.extend_from_slice(b"{\"format\":");
        push_json_str(&mut out, MANIFEST_FORMAT);
        key_str(&mut out, "export_id", &self.export_id.to_string());
        key_str(&mut out, "period_start", &format_time(&self.period_start));
        key_str(&mut out, "period_end", &format_time(&self.period_end));
        key_str(&mut out, "scope", self.scope());
        out.extend_from_slice(b",\"accounts\":[");
        for (i, account) in self.accounts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(&mut out, &account.to_string());
        }
        out.push(b']');
        key_num(&mut out, "row_count", &self.row_count.to_string());
        key_num(
            &mut out,
            "first_ledger_seq",
            &self.first_ledger_seq.to_string(),
        );
        key_num(
            &mut out,
            "last_ledger_seq",
            &self.last_ledger_seq.to_string(),
        );
        key_str(&mut out, "chain_head", &hex_digest(&self.chain_head));
        key_str(&mut out, "merkle_root", &hex_digest(&self.merkle_root));
        key_str(
            &mut out,
            "previous_chain_head",
            &hex_digest(&self.previous_chain_head),
        );
        let previous_id = self.previous_export_id.map(|id| id.to_string());
        key_str(
            &mut out,
            "previous_export_id",
            previous_id.as_deref().unwrap_or(""),
        );
        let previous_end = self.previous_period_end.map(|t| format_time(&t));
        key_str(
            &mut out,
            "previous_period_end",
            previous_end.as_deref().unwrap_or(""),
        );
        out.extend_from_slice(b",\"files\":{");
        file(&mut out, JSONL_FILE, &self.jsonl);
        out.push(b',');
        file(&mut out, CSV_FILE, &self.csv);
        out.push(b'}');
        key_str(&mut out, "key_id", &self.key_id);
        key_str(&mut out, "algorithm", ALGORITHM);
        key_str(&mut out, "created_at", &format_time(&self.created_at));
        out.extend_from_slice(b"}\n");
        out
    }

    /// Reads canonical manifest bytes; anything else is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|error| ManifestError(error.to_string()))?;
        let manifest = raw.typed()?;
        if manifest.to_bytes() != bytes {
            return Err(ManifestError(
                "it does not re-serialize to the same bytes (spacing, key order, escaping or the trailing newline changed)".to_owned(),
            ));
        }
        Ok(manifest)
    }
}

fn key_str(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    push_json_str(out, value);
}

fn key_num(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value.as_bytes());
}

fn file(out: &mut Vec<u8>, name: &str, digest: &FileDigest) {
    push_json_str(out, name);
    out.extend_from_slice(b":{\"sha256\":");
    push_json_str(out, &hex_digest(&digest.sha256));
    out.extend_from_slice(b",\"size\":");
    out.extend_from_slice(digest.size.to_string().as_bytes());
    out.push(b'}');
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: String,
    export_id: String,
    period_start: String,
    period_end: String,
    scope: String,
    accounts: Vec<String>,
    row_count: u64,
    first_ledger_seq: i64,
    last_ledger_seq: i64,
    chain_head: String,
    merkle_root: String,
    previous_chain_head: String,
    previous_export_id: String,
    previous_period_end: String,
    files: RawFiles,
    key_id: String,
    algorithm: String,
    created_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    #[serde(rename = "entries.jsonl")]
    jsonl: RawFile,
    #[serde(rename = "entries.csv")]
    csv: RawFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    sha256: String,
    size: u64,
}

fn refuse(what: String) -> ManifestError {
    ManifestError(what)
}

fn uuid(name: &str, text: &str) -> Result<Uuid, ManifestError> {
    Uuid::parse_str(text).map_err(|_| refuse(format!("{name} {text:?} is not a uuid")))
}

fn time(name: &str, text: &str) -> Result<DateTime<Utc>, ManifestError> {
    parse_time(text).ok_or_else(|| refuse(format!("{name} {text:?} is not an export time")))
}

fn digest(name: &str, text: &str) -> Result<Digest, ManifestError> {
    parse_hex_digest(text).ok_or_else(|| refuse(format!("{name} is not 64 lowercase hex digits")))
}

impl RawManifest {
    fn typed(self) -> Result<Manifest, ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(refuse(format!(
                "format {:?} is not {MANIFEST_FORMAT:?}",
                self.format
            )));
        }
        if self.algorithm != ALGORITHM {
            return Err(refuse(format!(
                "algorithm {:?} is not {ALGORITHM:?}",
                self.algorithm
            )));
        }
        let accounts = self
            .accounts
            .iter()
            .map(|text| uuid("account", text))
            .collect::<Result<Vec<_>, _>>()?;
        if !accounts.windows(2).all(|pair| pair[0] < pair[1]) {
            return Err(refuse("accounts are not sorted and unique".to_owned()));
        }
        let expected_scope = if accounts.is_empty() {
            "all"
        } else {
            "accounts"
        };
        if self.scope != expected_scope {
            return Err(refuse(format!(
                "scope {:?} does not match the accounts listed",
                self.scope
            )));
        }
        let key_id_ok = self.key_id.len() == 16
            && self
                .key_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !key_id_ok {
            return Err(refuse("key_id is not 16 lowercase hex digits".to_owned()));
        }
        Ok(Manifest {
            export_id: uuid("export_id", &self.export_id)?,
            period_start: time("period_start", &self.period_start)?,
            period_end: time("period_end", &self.period_end)?,
            accounts,
            row_count: self.row_count,
            first_ledger_seq: self.first_ledger_seq,
            last_ledger_seq: self.last_ledger_seq,
            chain_head: digest("chain_head", &self.chain_head)?,
            merkle_root: digest("merkle_root", &self.merkle_root)?,
            previous_chain_head: digest("previous_chain_head", &self.previous_chain_head)?,
            previous_export_id: match self.previous_export_id.as_str() {
                "" => None,
                text => Some(uuid("previous_export_id", text)?),
            },
            previous_period_end: match self.previous_period_end.as_str() {
                "" => None,
                text => Some(time("previous_period_end", text)?),
            },
            jsonl: FileDigest {
                sha256: digest("entries.jsonl sha256", &self.files.jsonl.sha256)?,
                size: self.files.jsonl.size,
            },
            csv: FileDigest {
                sha256: digest("entries.csv sha256", &self.files.csv.sha256)?,
                size: self.files.csv.size,
            },
            key_id: self.key_id,
            created_at: time("created_at", &self.created_at)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let at = |s: &str| parse_time(s).unwrap();
        Manifest {
            export_id: Uuid::from_u128(1),
            period_start: at("2026-12-01T00:00:00.000000Z"),
            period_end: at("2026-12-02T00:00:00.000000Z"),
            accounts: vec![Uuid::from_u128(2), Uuid::from_u128(3)],
            row_count: 2,
            first_ledger_seq: 5,
            last_ledger_seq: 6,
            chain_head: [1; 32],
            merkle_root: [2; 32],
            previous_chain_head: [0; 32],
            previous_export_id: None,
            previous_period_end: None,
            jsonl: FileDigest {
                sha256: [3; 32],
                size: 10,
            },
            csv: FileDigest {
                sha256: [4; 32],
                size: 11,
            },
            key_id: "0123456789abcdef".to_owned(),
            created_at: at("2026-12-02T07:00:00.123456Z"),
        }
    }

    #[test]
    fn a_manifest_reads_back_from_its_own_bytes() {
        let bytes = sample().to_bytes();
        assert!(bytes.ends_with(b"\"created_at\":\"2026-12-02T07:00:00.123456Z\"}\n"));
        assert_eq!(Manifest::parse(&bytes).unwrap(), sample());
    }

    #[test]
    fn an_unknown_a_missing_or_a_respaced_key_is_refused() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let unknown = text.replacen("{\"format\"", "{\"extra\":1,\"format\"", 1);
        let missing = text.replacen("\"row_count\":2,", "", 1);
        let spaced = text.replacen("\"row_count\":2", "\"row_count\": 2", 1);
        let no_newline = text.trim_end().to_owned();
        for bad in [unknown, missing, spaced, no_newline] {
            let error = Manifest::parse(bad.as_bytes()).unwrap_err();
            assert!(
                error.to_string().starts_with("manifest is not canonical"),
                "{error}"
            );
        }
    }
}
