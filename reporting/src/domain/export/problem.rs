//! What verification found wrong, said so an auditor can tell one tamper
//! from another: a kind to branch on, the line it concerns, and a sentence.

/// What kind of thing is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// manifest.json names another key than the one given.
    OtherKey,
    /// manifest.sig is malformed or does not verify.
    Signature,
    /// manifest.json is not in its canonical form.
    Manifest,
    /// A line is not JSON or a value in it is malformed.
    LineUnreadable,
    /// A line does not re-serialize to its own bytes, or holds a value no
    /// export would have written.
    LineNotCanonical,
    /// A line's number is not its position: deleted or reordered lines.
    LineNumber,
    /// A line's prev_hash is not the hash of the line before.
    PrevHash,
    /// A line's hash does not match its content: an edited field.
    Hash,
    /// Lines are not in ledger order.
    LedgerOrder,
    /// A line's post_time is outside the manifest's period.
    OutsidePeriod,
    /// A line's account is outside the manifest's scope.
    OutsideScope,
    /// entries.jsonl does not end with a newline.
    MissingNewline,
    /// The number of lines is not the manifest's row_count.
    RowCount,
    /// The first or last ledger sequence is not the manifest's.
    SequenceRange,
    /// The last line's hash is not the manifest's chain_head.
    ChainHead,
    /// The Merkle root of the lines is not the manifest's.
    MerkleRoot,
    /// A file's sha256 or size is not the manifest's.
    FileDigest,
    /// entries.csv differs from entries.jsonl.
    Csv,
    /// The previous export does not chain to this one.
    Previous,
    /// An inclusion proof is malformed or does not hold.
    Proof,
    /// More problems were found than are listed.
    More,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The 1-based position in entries.jsonl (or entries.csv) concerned.
    pub line: Option<u64>,
    /// A lowercase sentence naming the file, the line and the likely cause.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            line: None,
            message: message.into(),
        }
    }

    pub(crate) fn at_line(kind: ProblemKind, line: u64, message: impl Into<String>) -> Self {
        Self {
            kind,
            line: Some(line),
            message: format!("entries.jsonl line {line}: {}", message.into()),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
