//! One line of `entries.jsonl`: its canonical bytes, the hash that chains it
//! to the line before, and a strict reader. The reader refuses anything the
//! writer would not have written, so "parses and re-serializes to the same
//! bytes" proves a line untouched in form, and only its hash is left to
//! prove it untouched in content.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use corebank_platform::money::Currency;
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::Digest as _;
use uuid::Uuid;

use super::{Digest, format_time, parse_hex_digest, parse_time};

/// The columns of `entries.csv`, also the keys of a JSONL line in order.
pub const CSV_HEADER: [&str; 16] = [
    "line",
    "ledger_seq",
    "journal_id",
    "entry_id",
    "transaction_id",
    "kind",
    "post_time",
    "account_id",
    "account_seq",
    "counterparty_account_id",
    "currency",
    "direction",
    "amount",
    "balance_after",
    "prev_hash",
    "hash",
];

/// Journal kinds a line may name.
pub(crate) const KINDS: [&str; 3] = ["transfer", "deposit", "withdrawal"];
/// Entry directions a line may name.
pub(crate) const DIRECTIONS: [&str; 2] = ["debit", "credit"];

/// The fields of a line's body, borrowed from a row or a parsed line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineFields<'a> {
    pub line: u64,
    pub ledger_seq: i64,
    pub journal_id: Uuid,
    pub entry_id: Uuid,
    pub transaction_id: &'a str,
    pub kind: &'a str,
    pub post_time: DateTime<Utc>,
    pub account_id: Uuid,
    pub account_seq: i64,
    pub counterparty_account_id: Option<Uuid>,
    pub currency: &'a str,
    pub direction: &'a str,
    pub amount: &'a str,
    pub balance_after: &'a str,
}

impl LineFields<'_> {
    /// The body, what the line's hash covers: the line without `prev_hash`
    /// and `hash`, ending `"balance_after":"…"}`.
    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"line\":");
        out.extend_from_slice(self.line.to_string().as_bytes());
        out.extend_from_slice(b",\"ledger_seq\":");
        out.extend_from_slice(self.ledger_seq.to_string().as_bytes());
        push_key_str(out, "journal_id", &self.journal_id.to_string());
        push_key_str(out, "entry_id", &self.entry_id.to_string());
        push_key_str(out, "transaction_id", self.transaction_id);
        push_key_str(out, "kind", self.kind);
        push_key_str(out, "post_time", &format_time(&self.post_time));
        push_key_str(out, "account_id", &self.account_id.to_string());
        out.extend_from_slice(b",\"account_seq\":");
        out.extend_from_slice(self.account_seq.to_string().as_bytes());
        push_key_str(out, "counterparty_account_id", &self.counterparty_text());
        push_key_str(out, "currency", self.currency);
        push_key_str(out, "direction", self.direction);
        push_key_str(out, "amount", self.amount);
        push_key_str(out, "balance_after", self.balance_after);
        out.push(b'}');
    }

    fn counterparty_text(&self) -> String {
        self.counterparty_account_id
            .map(|id| id.to_string())
            .unwrap_or_default()
    }

    /// The line's values as CSV fields, in [`CSV_HEADER`] order.
    pub(crate) fn csv_fields(&self, prev_hash: &Digest, hash: &Digest) -> [String; 16] {
        [
            self.line.to_string(),
            self.ledger_seq.to_string(),
            self.journal_id.to_string(),
            self.entry_id.to_string(),
            self.transaction_id.to_owned(),
            self.kind.to_owned(),
            format_time(&self.post_time),
            self.account_id.to_string(),
            self.account_seq.to_string(),
            self.counterparty_text(),
            self.currency.to_owned(),
            self.direction.to_owned(),
            self.amount.to_owned(),
            self.balance_after.to_owned(),
            hex::encode(prev_hash),
            hex::encode(hash),
        ]
    }
}

/// The hash of a line: SHA-256 over the previous line's raw hash, then the body.
pub(crate) fn chain_hash(prev_hash: &Digest, body: &[u8]) -> Digest {
    let mut hasher = sha2::Sha256::new();
    hasher.update(prev_hash);
    hasher.update(body);
    hasher.finalize().into()
}

/// Appends the whole line (no newline): the body with its hashes added.
pub(crate) fn write_line(out: &mut Vec<u8>, body: &[u8], prev_hash: &Digest, hash: &Digest) {
    let without_brace = body.strip_suffix(b"}").unwrap_or(body);
    out.extend_from_slice(without_brace);
    push_key_str(out, "prev_hash", &hex::encode(prev_hash));
    push_key_str(out, "hash", &hex::encode(hash));
    out.push(b'}');
}

fn push_key_str(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    push_json_str(out, value);
}

/// A JSON string escaped exactly as serde_json escapes it (quote, backslash
/// and control characters only; lowercase `\u00xx`), so any JSON tool that
/// re-serializes with serde_json's rules reproduces the bytes.
pub(crate) fn push_json_str(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &byte in value.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0x0f)]);
            }
            other => out.push(other),
        }
    }
    out.push(b'"');
}

/// `amount` at the currency's exponent; zero never carries a sign.
pub(crate) fn format_money(currency: Currency, amount: Decimal) -> String {
    let mut value = amount;
    if value.is_zero() {
        value.set_sign_positive(true);
    }
    currency.format(value)
}

/// A line as it is written in the file, before any value is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    line: u64,
    ledger_seq: i64,
    journal_id: String,
    entry_id: String,
    transaction_id: String,
    kind: String,
    post_time: String,
    account_id: String,
    account_seq: i64,
    counterparty_account_id: String,
    currency: String,
    direction: String,
    amount: String,
    balance_after: String,
    prev_hash: String,
    hash: String,
}

/// A line read back from `entries.jsonl`, every value typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedLine {
    pub line: u64,
    pub ledger_seq: i64,
    pub journal_id: Uuid,
    pub entry_id: Uuid,
    pub transaction_id: String,
    pub kind: String,
    pub post_time: DateTime<Utc>,
    pub account_id: Uuid,
    pub account_seq: i64,
    pub counterparty_account_id: Option<Uuid>,
    pub currency: String,
    pub direction: String,
    pub amount: String,
    pub balance_after: String,
    pub prev_hash: Digest,
    pub hash: Digest,
}

impl ParsedLine {
    /// Reads one line (without its newline). The error says what is wrong,
    /// lowercase, for "line N: …".
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawLine = serde_json::from_slice(bytes).map_err(|error| {
            // serde_json counts JSON lines; within one export line only the column helps.
            let text = error.to_string();
            let reason = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(r, _)| r);
            format!(
                "is not a valid export line: {reason} (column {})",
                error.column()
            )
        })?;
        let uuid = |name: &str, text: &str| {
            Uuid::parse_str(text).map_err(|_| format!("{name} {text:?} is not a uuid"))
        };
        let digest = |name: &str, text: &str| {
            parse_hex_digest(text).ok_or_else(|| format!("{name} is not 64 lowercase hex digits"))
        };
        let counterparty_account_id = match raw.counterparty_account_id.as_str() {
            "" => None,
            text => Some(uuid("counterparty_account_id", text)?),
        };
        Ok(Self {
            line: raw.line,
            ledger_seq: raw.ledger_seq,
            journal_id: uuid("journal_id", &raw.journal_id)?,
            entry_id: uuid("entry_id", &raw.entry_id)?,
            transaction_id: raw.transaction_id,
            kind: raw.kind,
            post_time: parse_time(&raw.post_time).ok_or_else(|| {
                format!(
                    "post_time {:?} is not RFC 3339 UTC with six fractional digits",
                    raw.post_time
                )
            })?,
            account_id: uuid("account_id", &raw.account_id)?,
            account_seq: raw.account_seq,
            counterparty_account_id,
            currency: raw.currency,
            direction: raw.direction,
            amount: raw.amount,
            balance_after: raw.balance_after,
            prev_hash: digest("prev_hash", &raw.prev_hash)?,
            hash: digest("hash", &raw.hash)?,
        })
    }

    pub(crate) fn fields(&self) -> LineFields<'_> {
        LineFields {
            line: self.line,
            ledger_seq: self.ledger_seq,
            journal_id: self.journal_id,
            entry_id: self.entry_id,
            transaction_id: &self.transaction_id,
            kind: &self.kind,
            post_time: self.post_time,
            account_id: self.account_id,
            account_seq: self.account_seq,
            counterparty_account_id: self.counterparty_account_id,
            currency: &self.currency,
            direction: &self.direction,
            amount: &self.amount,
            balance_after: &self.balance_after,
        }
    }

    /// The body bytes the hash covers.
    pub(crate) fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(400);
        self.fields().write_body(&mut body);
        body
    }

    /// The canonical bytes of the whole line, given its body.
    pub(crate) fn canonical(&self, body: &[u8]) -> Vec<u8> {
        let mut line = Vec::with_capacity(body.len() + 160);
        write_line(&mut line, body, &self.prev_hash, &self.hash);
        line
    }

    /// Values a writer would never have written: unknown kind or direction,
    /// an unknown currency, money not at the currency's exponent, an amount
    /// that is not positive.
    pub(crate) fn value_problem(&self) -> Option<String> {
        if !KINDS.contains(&self.kind.as_str()) {
            return Some(format!("kind {:?} is not one of {KINDS:?}", self.kind));
        }
        if !DIRECTIONS.contains(&self.direction.as_str()) {
            return Some(format!(
                "direction {:?} is not one of {DIRECTIONS:?}",
                self.direction
            ));
        }
        let Ok(currency) = Currency::parse(&self.currency) else {
            return Some(format!("currency {:?} is not known", self.currency));
        };
        for (name, text) in [
            ("amount", &self.amount),
            ("balance_after", &self.balance_after),
        ] {
            let canonical = Decimal::from_str(text)
                .ok()
                .map(|v| format_money(currency, v));
            if canonical.as_deref() != Some(text.as_str()) {
                return Some(format!(
                    "{name} {text:?} is not a decimal with {currency}'s {} places",
                    currency.exponent()
                ));
            }
        }
        let positive = Decimal::from_str(&self.amount).is_ok_and(|v| v > Decimal::ZERO);
        if !positive {
            return Some(format!("amount {:?} is not positive", self.amount));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn strings_are_escaped_exactly_as_serde_json_escapes_them(text in "\\PC*|[\\x00-\\x7f]*") {
            let mut ours = Vec::new();
            push_json_str(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).unwrap());
        }
    }

    #[test]
    fn zero_is_written_without_a_sign() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(
            format_money(usd, Decimal::from_str("-0.00").unwrap()),
            "0.00"
        );
        assert_eq!(
            format_money(usd, Decimal::from_str("-69.5").unwrap()),
            "-69.50"
        );
    }
}
