//! Inclusion proofs: one journal's lines, with their Merkle audit paths and
//! the signed manifest, so a third party can check that journal against
//! the export without the whole file (and without seeing other customers'
//! lines).

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::parse_signature;
use super::line::{ParsedLine, chain_hash};
use super::manifest::Manifest;
use super::merkle::{audit_path, leaf_hash, verify_inclusion};
use super::problem::{Problem, ProblemKind};
use super::verify::check_signature;
use super::{Digest, ExportBytes, hex_digest, parse_hex_digest};

/// The `format` of every proof.
pub const PROOF_FORMAT: &str = "corebank-inclusion-proof/1";

/// The proof that a journal's lines are in an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub format: String,
    pub journal_id: Uuid,
    /// The export's manifest.json, byte for byte.
    pub manifest: String,
    /// manifest.sig without its newline.
    pub signature: String,
    pub tree_size: u64,
    pub lines: Vec<ProofLine>,
}

/// One line of the journal and where it sits in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofLine {
    /// 0-based leaf index (the line numbered `index + 1`).
    pub index: u64,
    /// The whole line, without its newline.
    pub line: String,
    /// Lowercase hex, leaf side first.
    pub audit_path: Vec<String>,
}

/// Why a proof could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProveError {
    #[error(transparent)]
    Manifest(#[from] super::ManifestError),
    #[error("manifest.sig: {0}")]
    Signature(#[from] super::KeyError),
    #[error("journal {0} is not in this export")]
    JournalNotFound(Uuid),
    #[error("not an inclusion proof: {0}")]
    Format(String),
}

/// What a verified proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofReport {
    pub journal_id: Uuid,
    pub lines: usize,
    pub manifest: Manifest,
    pub key_id: String,
}

impl Proof {
    /// Pretty JSON with a trailing newline, for a file or a terminal.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads a proof file.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProveError> {
        serde_json::from_slice(bytes).map_err(|error| ProveError::Format(error.to_string()))
    }
}

/// The proof of `journal_id`'s lines in the export `files`.
pub fn prove(files: ExportBytes<'_>, journal_id: Uuid) -> Result<Proof, ProveError> {
    let manifest = Manifest::parse(files.manifest)?;
    parse_signature(files.signature)?;
    let content = files.jsonl.strip_suffix(b"\n").unwrap_or(files.jsonl);
    let lines: Vec<&[u8]> = if files.jsonl.is_empty() {
        Vec::new()
    } else {
        content.split(|&b| b == b'\n').collect()
    };
    let leaves: Vec<Digest> = lines.iter().map(|line| leaf_hash(line)).collect();
    let mut proven = Vec::new();
    for (index, bytes) in lines.iter().enumerate() {
        let Ok(line) = ParsedLine::parse(bytes) else {
            continue;
        };
        if line.journal_id != journal_id {
            continue;
        }
        let path = audit_path(&leaves, index).unwrap_or_default();
        proven.push(ProofLine {
            index: index as u64,
            line: String::from_utf8_lossy(bytes).into_owned(),
            audit_path: path.iter().map(hex_digest).collect(),
        });
    }
    if proven.is_empty() {
        return Err(ProveError::JournalNotFound(journal_id));
    }
    let signature = files
        .signature
        .strip_suffix(b"\n")
        .unwrap_or(files.signature);
    Ok(Proof {
        format: PROOF_FORMAT.to_owned(),
        journal_id,
        manifest: String::from_utf8_lossy(&manifest.to_bytes()).into_owned(),
        signature: String::from_utf8_lossy(signature).into_owned(),
        tree_size: lines.len() as u64,
        lines: proven,
    })
}

/// Verifies a proof with the export's public key. `Err` lists every problem.
pub fn verify_proof(proof: &Proof, public_key: &VerifyingKey) -> Result<ProofReport, Vec<Problem>> {
    let mut problems = Vec::new();
    let push = |problems: &mut Vec<Problem>, message: String| {
        problems.push(Problem::new(ProblemKind::Proof, message));
    };
    if proof.format != PROOF_FORMAT {
        push(
            &mut problems,
            format!("format {:?} is not {PROOF_FORMAT:?}", proof.format),
        );
    }
    let manifest = Manifest::parse(proof.manifest.as_bytes())
        .map_err(|error| {
            problems.push(Problem::new(
                ProblemKind::Manifest,
                format!("the proof's manifest: {error}"),
            ));
        })
        .ok();
    check_signature(
        "the proof's manifest",
        manifest.as_ref(),
        proof.manifest.as_bytes(),
        proof.signature.as_bytes(),
        public_key,
        &mut problems,
    );
    let Some(manifest) = manifest else {
        return Err(problems);
    };
    if proof.tree_size != manifest.row_count {
        push(
            &mut problems,
            format!(
                "tree_size {} is not the manifest's row_count {}",
                proof.tree_size, manifest.row_count
            ),
        );
    }
    if proof.lines.is_empty() {
        push(&mut problems, "the proof holds no line".to_owned());
    }
    for proven in &proof.lines {
        if let Err(reason) = check_proven_line(proven, proof, &manifest) {
            push(
                &mut problems,
                format!("proof line at index {}: {reason}", proven.index),
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(ProofReport {
        journal_id: proof.journal_id,
        lines: proof.lines.len(),
        key_id: manifest.key_id.clone(),
        manifest,
    })
}

fn check_proven_line(proven: &ProofLine, proof: &Proof, manifest: &Manifest) -> Result<(), String> {
    let bytes = proven.line.as_bytes();
    let line = ParsedLine::parse(bytes)?;
    let body = line.body();
    if line.canonical(&body) != bytes {
        return Err("the line is not canonical".to_owned());
    }
    if line.journal_id != proof.journal_id {
        return Err(format!(
            "the line is of journal {}, not {}",
            line.journal_id, proof.journal_id
        ));
    }
    if line.line != proven.index + 1 {
        return Err(format!(
            "the line is numbered {}, not {}",
            line.line,
            proven.index + 1
        ));
    }
    if line.hash != chain_hash(&line.prev_hash, &body) {
        return Err("hash does not match its content: a field was edited".to_owned());
    }
    let path = proven
        .audit_path
        .iter()
        .map(|text| parse_hex_digest(text))
        .collect::<Option<Vec<_>>>()
        .ok_or("an audit path element is not 64 lowercase hex digits")?;
    if !verify_inclusion(
        proven.index,
        manifest.row_count,
        &leaf_hash(bytes),
        &path,
        &manifest.merkle_root,
    ) {
        return Err("the audit path does not lead to the manifest's merkle_root: the line or the path was altered".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{export, key, lines_of};
    use super::super::{SigningKey, hex_digest};
    use super::*;

    #[test]
    fn a_proof_verifies_and_forged_ones_fail() {
        let files = export();
        let journal = Uuid::from_u128(0x1000_0000 + 20);
        let proof = prove(files.as_bytes(), journal).unwrap();
        assert_eq!(proof.lines.len(), 2);
        let public = key().verifying_key();
        let report =
            verify_proof(&Proof::parse(proof.to_json().as_bytes()).unwrap(), &public).unwrap();
        assert_eq!(report.lines, 2);

        let mut amount = proof.clone();
        amount.lines[0].line = amount.lines[0]
            .line
            .replacen("\"amount\":\"", "\"amount\":\"9", 1);
        let mut index = proof.clone();
        index.lines[0].index += 1;
        let mut path = proof.clone();
        path.lines[1].audit_path[2] = hex_digest(&[9; 32]);
        let mut manifest = proof.clone();
        manifest.manifest = manifest
            .manifest
            .replacen("\"row_count\":100", "\"row_count\":101", 1);
        let mut other_line = proof.clone();
        other_line.lines[0].line = lines_of(&files)[0].clone();
        for forged in [amount, index, path, manifest, other_line] {
            assert!(verify_proof(&forged, &public).is_err(), "{forged:?}");
        }
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(verify_proof(&proof, &other).is_err());
    }

    #[test]
    fn a_proof_of_a_journal_absent_from_the_export_is_refused() {
        let absent = Uuid::from_u128(42);
        assert_eq!(
            prove(export().as_bytes(), absent),
            Err(ProveError::JournalNotFound(absent))
        );
    }
}
