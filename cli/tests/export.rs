//! `corebank export verify | prove | verify-proof` and `corebank keygen` as
//! an auditor runs them: the real binary on files in a directory, no server
//! and no database. Every tamper must fail with exit code 1 and be named.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use corebank_reporting::domain::export::{
    self, ExportDraft, ExportFiles, ExportRow, PreviousExport, SigningKey,
};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "corebank-export-{name}-{}-{}",
            std::process::id(),
            Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

const DAYS: [&str; 4] = [
    "2026-12-01T00:00:00Z",
    "2026-12-02T00:00:00Z",
    "2026-12-03T00:00:00Z",
    "2026-12-04T00:00:00Z",
];

/// 50 transfers (100 lines), one a minute from `start`.
fn rows(first_seq: i64, start: DateTime<Utc>) -> Vec<ExportRow> {
    let accounts = [Uuid::from_u128(0xa1), Uuid::from_u128(0xa2)];
    let mut rows = Vec::new();
    for j in 0..50i64 {
        let seq = first_seq + j;
        let amount = Decimal::from_str("30.5").unwrap() + Decimal::from(j);
        for (n, direction) in ["debit", "credit"].into_iter().enumerate() {
            let account_id = accounts[(j as usize + n) % 2];
            rows.push(ExportRow {
                ledger_seq: seq,
                journal_id: Uuid::from_u128(0x1000 + seq as u128),
                entry_id: Uuid::from_u128(0x2000 + seq as u128 * 2 + n as u128),
                transaction_id: format!("tx-{seq}"),
                kind: "transfer".to_owned(),
                post_time: start + Duration::minutes(j),
                account_id,
                account_seq: seq,
                counterparty_account_id: Some(accounts[(j as usize + n + 1) % 2]),
                currency: "USD".to_owned(),
                direction: direction.to_owned(),
                amount,
                balance_after: Decimal::from(500) - amount,
            });
        }
    }
    rows
}

/// The export of day `day` (0-based), chained to `previous`.
fn export_of_day(day: usize, key: &SigningKey, previous: Option<&ExportFiles>) -> ExportFiles {
    let draft = ExportDraft {
        export_id: Uuid::from_u128(0xe000 + day as u128),
        period_start: at(DAYS[day]),
        period_end: at(DAYS[day + 1]),
        accounts: Vec::new(),
        previous: previous.map(|files| PreviousExport::of(&files.summary)),
        created_at: at(DAYS[day + 1]),
    };
    export::build(&rows(1 + 100 * day as i64, at(DAYS[day])), &draft, key).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn write_files(dir: &Path, files: &ExportFiles) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files.named() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn write_public_key(dir: &TempDir, name: &str, key: &SigningKey) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, export::public_key_pem(&key.verifying_key()).unwrap()).unwrap();
    path
}

/// Runs `corebank args…`: the exit code and stdout then stderr.
fn corebank(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_corebank"))
        .args(args)
        .output()
        .expect("the corebank binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An export of day 0 in `tmp/export`, and the signer's public key file.
fn exported(tmp: &TempDir) -> (PathBuf, PathBuf) {
    let dir = tmp.join("export");
    write_files(&dir, &export_of_day(0, &key(), None));
    (dir, write_public_key(tmp, "signer.pub.pem", &key()))
}

fn verify(dir: &Path, public_key: &Path) -> (i32, String) {
    corebank(&[
        "export",
        "verify",
        path(dir),
        "--public-key",
        path(public_key),
    ])
}

fn edit_lines(dir: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let file = dir.join(export::JSONL_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    edit(&mut lines);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
}

fn assert_fails_naming(outcome: (i32, String), needle: &str) {
    let (code, text) = outcome;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

#[test]
fn an_untouched_export_verifies_and_says_what_was_checked() {
    let tmp = TempDir::new("untouched");
    let (dir, public_key) = exported(&tmp);
    let (code, text) = verify(&dir, &public_key);
    assert_eq!(code, 0, "{text}");
    for needle in [
        "verifies",
        "rows: 100 (ledger_seq 1 to 50)",
        "period: [2026-12-01T00:00:00.000000Z, 2026-12-02T00:00:00.000000Z)",
        "chain head: ",
        "merkle root: ",
        "key id ",
        "took ",
    ] {
        assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    }
}

#[test]
fn an_edited_amount_is_named_by_its_line() {
    let tmp = TempDir::new("amount");
    let (dir, public_key) = exported(&tmp);
    edit_lines(&dir, |lines| {
        lines[16] = lines[16].replacen("\"amount\":\"", "\"amount\":\"1", 1);
    });
    assert_fails_naming(
        verify(&dir, &public_key),
        "entries.jsonl line 17: hash does not match its content: a field was edited",
    );
}

#[test]
fn a_deleted_line_is_named_by_its_position() {
    let tmp = TempDir::new("deleted");
    let (dir, public_key) = exported(&tmp);
    edit_lines(&dir, |lines| {
        lines.remove(16);
    });
    assert_fails_naming(
        verify(&dir, &public_key),
        "line 17: expected line 17, found 18: a line was deleted or the lines were reordered",
    );
}

#[test]
fn two_swapped_lines_are_named() {
    let tmp = TempDir::new("swapped");
    let (dir, public_key) = exported(&tmp);
    edit_lines(&dir, |lines| lines.swap(16, 17));
    let outcome = verify(&dir, &public_key);
    assert!(
        outcome.1.contains("line 18: expected line 18, found 17"),
        "{}",
        outcome.1
    );
    assert_fails_naming(outcome, "line 17: expected line 17, found 18");
}

#[test]
fn a_truncated_file_is_named_by_its_line_count() {
    let tmp = TempDir::new("truncated");
    let (dir, public_key) = exported(&tmp);
    edit_lines(&dir, |lines| {
        lines.pop();
    });
    assert_fails_naming(
        verify(&dir, &public_key),
        "entries.jsonl has 99 lines, the manifest says 100",
    );
}

#[test]
fn an_edited_manifest_fails_its_signature() {
    let tmp = TempDir::new("manifest");
    let (dir, public_key) = exported(&tmp);
    let file = dir.join(export::MANIFEST_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("\"row_count\":100", "\"row_count\":99", 1),
    )
    .unwrap();
    assert_fails_naming(
        verify(&dir, &public_key),
        "the manifest was edited after it was signed",
    );
}

#[test]
fn an_export_checked_with_another_key_says_so() {
    let tmp = TempDir::new("other-key");
    let (dir, _) = exported(&tmp);
    let other = write_public_key(&tmp, "other.pub.pem", &SigningKey::from_bytes(&[8; 32]));
    assert_fails_naming(
        verify(&dir, &other),
        "the export was signed with another key",
    );
}

#[test]
fn a_missing_period_between_chained_exports_is_named() {
    let tmp = TempDir::new("chain");
    let first = export_of_day(0, &key(), None);
    let second = export_of_day(1, &key(), Some(&first));
    let third = export_of_day(2, &key(), Some(&second));
    for (name, files) in [("1", &first), ("2", &second), ("3", &third)] {
        write_files(&tmp.join(name), files);
    }
    let public_key = write_public_key(&tmp, "signer.pub.pem", &key());
    let with_previous = |previous: &str| {
        let manifest = tmp.join(previous).join(export::MANIFEST_FILE);
        corebank(&[
            "export",
            "verify",
            path(&tmp.join("3")),
            "--public-key",
            path(&public_key),
            "--previous",
            path(&manifest),
        ])
    };
    let (code, text) = with_previous("2");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("continues export"), "{text}");
    assert_fails_naming(with_previous("1"), "an export is missing between");
}

#[test]
fn a_proof_verifies_offline_and_a_forged_one_fails() {
    let tmp = TempDir::new("proof");
    let (dir, public_key) = exported(&tmp);
    let proof = tmp.join("proof.json");
    let journal = Uuid::from_u128(0x1000 + 20).to_string();
    let (code, text) = corebank(&[
        "export",
        "prove",
        path(&dir),
        "--journal-id",
        &journal,
        "--out",
        path(&proof),
    ]);
    assert_eq!(code, 0, "{text}");
    let verify_proof = || {
        corebank(&[
            "export",
            "verify-proof",
            path(&proof),
            "--public-key",
            path(&public_key),
        ])
    };
    let (code, text) = verify_proof();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("journal {journal} is in export")),
        "{text}"
    );

    let forged = std::fs::read_to_string(&proof).unwrap().replacen(
        "\\\"amount\\\":\\\"",
        "\\\"amount\\\":\\\"9",
        1,
    );
    std::fs::write(&proof, forged).unwrap();
    assert_fails_naming(verify_proof(), "hash does not match its content");

    let absent = Uuid::from_u128(1).to_string();
    let (code, text) = corebank(&["export", "prove", path(&dir), "--journal-id", &absent]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is not in this export"), "{text}");
}

#[test]
fn a_generated_key_signs_an_export_that_verifies_and_is_never_overwritten() {
    let tmp = TempDir::new("keygen");
    let keys = tmp.join("keys");
    let (code, text) = corebank(&["keygen", "--out-dir", path(&keys), "--name", "audit"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("key id: "), "{text}");
    let private = keys.join("audit.key.pem");
    let public = keys.join("audit.pub.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let signing =
        export::parse_signing_key_pem(&std::fs::read_to_string(&private).unwrap()).unwrap();
    let dir = tmp.join("export");
    write_files(&dir, &export_of_day(0, &signing, None));
    let (code, text) = verify(&dir, &public);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&export::key_id(&signing.verifying_key())),
        "{text}"
    );

    let (code, text) = corebank(&["keygen", "--out-dir", path(&keys), "--name", "audit"]);
    // Bad input (the README's exit status table).
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("refusing to overwrite"), "{text}");
}

#[test]
fn openssl_reads_the_generated_keys_when_it_is_installed() {
    let Ok(version) = Command::new("openssl").arg("version").output() else {
        eprintln!("openssl is not installed: skipped");
        return;
    };
    assert!(version.status.success());
    let tmp = TempDir::new("openssl");
    let keys = tmp.path().join("keys");
    let (code, text) = corebank(&["keygen", "--out-dir", path(&keys)]);
    assert_eq!(code, 0, "{text}");
    let public = keys.join("export-signing.pub.pem");
    let private = keys.join("export-signing.key.pem");
    let read = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-text", "-in", path(&public)])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(String::from_utf8_lossy(&read.stdout).contains("ED25519"));
    let derived = Command::new("openssl")
        .args(["pkey", "-pubout", "-in", path(&private)])
        .output()
        .unwrap();
    assert!(
        derived.status.success(),
        "{}",
        String::from_utf8_lossy(&derived.stderr)
    );
    assert_eq!(derived.stdout, std::fs::read(&public).unwrap());
}

#[test]
fn the_benchmark_reports_its_rows_and_a_passing_verify_without_judging_speed() {
    let (code, text) = corebank(&["export", "bench", "--rows", "1000", "--json"]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
    assert_eq!(report["rows"], 1000, "{text}");
    assert_eq!(report["verify"]["ok"], true, "{text}");
    assert_eq!(report["verify"]["row_count"], 1000, "{text}");
    assert_eq!(report["proof"]["ok"], true, "{text}");
    assert!(report["baseline"]["millis"].is_number(), "{text}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("a list of steps")
        .iter()
        .map(|step| step["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "build",
            "write 4 files",
            "verify (read back)",
            "prove 1 journal",
            "verify_proof"
        ]
    );
}
