//! Whole exports built, tampered with and verified: each tamper an auditor
//! may meet must fail and be named for what it is.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;

pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

pub(super) fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn account(n: u128) -> Uuid {
    Uuid::from_u128(0xacc0_0000 + n)
}

/// `journals` journals one a minute from `start`: every fourth a deposit
/// (one line, no counterparty), the others transfers between three
/// accounts (two lines).
fn rows(journals: usize, first_seq: i64, start: DateTime<Utc>) -> Vec<ExportRow> {
    let mut rows = Vec::new();
    for j in 0..journals {
        let seq = first_seq + j as i64;
        let journal_id = Uuid::from_u128(0x1000_0000 + seq as u128);
        let post_time = start + Duration::minutes(j as i64) + Duration::microseconds(123_456);
        let amount = Decimal::from_str("30.5").unwrap() + Decimal::from(j as i64);
        let from = account(j as u128 % 3);
        let to = account((j as u128 + 1) % 3);
        let entry =
            |n: u128, account_id, counterparty: Option<Uuid>, direction: &str, balance: i64| {
                ExportRow {
                    ledger_seq: seq,
                    journal_id,
                    entry_id: Uuid::from_u128(0x2000_0000 + seq as u128 * 2 + n),
                    transaction_id: format!("tx-{seq}"),
                    kind: if counterparty.is_some() {
                        "transfer"
                    } else {
                        "deposit"
                    }
                    .to_owned(),
                    post_time,
                    account_id,
                    account_seq: seq,
                    counterparty_account_id: counterparty,
                    currency: "USD".to_owned(),
                    direction: direction.to_owned(),
                    amount,
                    balance_after: Decimal::from(balance) - amount,
                }
            };
        if j % 4 == 3 {
            rows.push(entry(0, to, None, "credit", 100));
        } else {
            rows.push(entry(0, from, Some(to), "debit", -39));
            rows.push(entry(1, to, Some(from), "credit", 200));
        }
    }
    rows
}

fn draft(n: u128, start: &str, end: &str, previous: Option<&ExportFiles>) -> ExportDraft {
    ExportDraft {
        export_id: Uuid::from_u128(0xe000 + n),
        period_start: at(start),
        period_end: at(end),
        accounts: Vec::new(),
        previous: previous.map(|files| PreviousExport::of(&files.summary)),
        created_at: at(end) + Duration::hours(1),
    }
}

/// 100 lines (57 journals: 43 transfers of two lines, 14 deposits of one).
pub(super) fn export() -> ExportFiles {
    let start = at("2026-12-01T00:00:00Z");
    let lines = rows(57, 12, start);
    assert_eq!(lines.len(), 100);
    let draft = draft(1, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", None);
    build(&lines, &draft, &key()).unwrap()
}

fn problems_of(files: &ExportFiles) -> Vec<Problem> {
    verify(files.as_bytes(), &key().verifying_key(), None).unwrap_err()
}

pub(super) fn lines_of(files: &ExportFiles) -> Vec<String> {
    String::from_utf8(files.jsonl.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn with_lines(files: &ExportFiles, lines: &[String]) -> ExportFiles {
    let mut jsonl = lines.join("\n").into_bytes();
    jsonl.push(b'\n');
    ExportFiles {
        jsonl,
        ..files.clone()
    }
}

fn first(problems: &[Problem]) -> &Problem {
    problems.first().expect("at least one problem")
}

#[test]
fn a_fresh_export_verifies_and_reports_what_it_holds() {
    let files = export();
    let report = verify(files.as_bytes(), &key().verifying_key(), None).unwrap();
    assert_eq!(report.manifest.row_count, 100);
    assert_eq!(report.manifest.first_ledger_seq, 12);
    assert_eq!(report.manifest.last_ledger_seq, 68);
    assert_eq!(report.key_id, key_id(&key().verifying_key()));
    assert_eq!(report.manifest.previous_chain_head, ZERO_DIGEST);
}

#[test]
fn a_line_has_its_keys_in_order_money_at_the_currency_scale_and_microseconds() {
    let files = export();
    let line = &lines_of(&files)[0];
    assert!(line.starts_with("{\"line\":1,\"ledger_seq\":12,\"journal_id\":\"00000000-0000-0000-0000-00001000000c\",\"entry_id\":"), "{line}");
    assert!(
        line.contains(
            "\"kind\":\"transfer\",\"post_time\":\"2026-12-01T00:00:00.123456Z\",\"account_id\":"
        ),
        "{line}"
    );
    assert!(line.contains("\"currency\":\"USD\",\"direction\":\"debit\",\"amount\":\"30.50\",\"balance_after\":\"-69.50\",\"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"hash\":\""), "{line}");
    let deposit = &lines_of(&files)[6];
    assert!(deposit.contains("\"kind\":\"deposit\""), "{deposit}");
    assert!(
        deposit.contains("\"counterparty_account_id\":\"\""),
        "{deposit}"
    );
    let csv = String::from_utf8(files.csv.clone()).unwrap();
    assert!(csv.starts_with("line,ledger_seq,journal_id,entry_id,transaction_id,kind,post_time,account_id,account_seq,counterparty_account_id,currency,direction,amount,balance_after,prev_hash,hash\n1,12,"));
    assert_eq!(csv.lines().count(), 101);
}

#[test]
fn rebuilding_from_shuffled_rows_is_byte_identical() {
    let start = at("2026-12-01T00:00:00Z");
    let mut shuffled = rows(57, 12, start);
    shuffled.reverse();
    shuffled.swap(3, 40);
    let draft = draft(1, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", None);
    assert_eq!(build(&shuffled, &draft, &key()).unwrap(), export());
}

#[test]
fn an_edited_amount_is_named_by_its_line() {
    let files = export();
    let mut lines = lines_of(&files);
    lines[16] = lines[16].replacen("\"amount\":\"", "\"amount\":\"1", 1);
    let problems = problems_of(&with_lines(&files, &lines));
    assert_eq!(first(&problems).kind, ProblemKind::Hash);
    assert_eq!(
        first(&problems).message,
        "entries.jsonl line 17: hash does not match its content: a field was edited"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.kind == ProblemKind::Csv && p.message.contains("row 17: amount"))
    );
    assert!(
        !problems.iter().any(|p| p.kind == ProblemKind::PrevHash),
        "one edit, one line named: {problems:?}"
    );
}

#[test]
fn a_deleted_line_is_named_by_its_position() {
    let files = export();
    let mut lines = lines_of(&files);
    lines.remove(16);
    let problems = problems_of(&with_lines(&files, &lines));
    assert_eq!(
        first(&problems).message,
        "entries.jsonl line 17: expected line 17, found 18: a line was deleted or the lines were reordered"
    );
    let line_problems = problems.iter().filter(|p| p.line.is_some()).count();
    assert_eq!(line_problems, 1, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.message == "entries.jsonl has 99 lines, the manifest says 100")
    );
}

#[test]
fn two_swapped_lines_are_both_named() {
    let files = export();
    let mut lines = lines_of(&files);
    lines.swap(16, 17);
    let problems = problems_of(&with_lines(&files, &lines));
    assert_eq!(
        first(&problems).message,
        "entries.jsonl line 17: expected line 17, found 18: a line was deleted or the lines were reordered"
    );
    assert!(problems.iter().any(|p| {
        p.message
            .starts_with("entries.jsonl line 18: expected line 18, found 17")
    }));
}

#[test]
fn a_truncated_file_is_named_by_its_line_count() {
    let files = export();
    let mut lines = lines_of(&files);
    lines.pop();
    let problems = problems_of(&with_lines(&files, &lines));
    assert_eq!(first(&problems).kind, ProblemKind::RowCount);
    assert_eq!(
        first(&problems).message,
        "entries.jsonl has 99 lines, the manifest says 100"
    );
}

#[test]
fn a_file_cut_mid_line_names_the_broken_line_and_the_missing_newline() {
    let files = export();
    let cut = ExportFiles {
        jsonl: files.jsonl[..files.jsonl.len() - 40].to_vec(),
        ..files.clone()
    };
    let problems = problems_of(&cut);
    assert_eq!(first(&problems).kind, ProblemKind::LineUnreadable);
    assert!(
        first(&problems)
            .message
            .starts_with("entries.jsonl line 100: ")
    );
    assert!(
        problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingNewline)
    );
}

#[test]
fn an_edited_manifest_fails_its_signature() {
    let files = export();
    let text = String::from_utf8(files.manifest.clone()).unwrap();
    let edited = text.replacen("\"row_count\":100", "\"row_count\":99", 1);
    let problems = problems_of(&ExportFiles {
        manifest: edited.into_bytes(),
        ..files.clone()
    });
    assert_eq!(first(&problems).kind, ProblemKind::Signature);
    assert_eq!(
        first(&problems).message,
        "the signature of manifest.json does not verify: the manifest was edited after it was signed"
    );
}

#[test]
fn a_respaced_manifest_is_not_canonical() {
    let files = export();
    let text = String::from_utf8(files.manifest.clone()).unwrap();
    let spaced = text.replacen(",\"row_count\"", ", \"row_count\"", 1);
    let problems = problems_of(&ExportFiles {
        manifest: spaced.into_bytes(),
        ..files.clone()
    });
    assert!(
        first(&problems)
            .message
            .starts_with("manifest.json: manifest is not canonical")
    );
}

#[test]
fn an_export_checked_with_another_key_says_so() {
    let files = export();
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    let problems = verify(files.as_bytes(), &other, None).unwrap_err();
    assert_eq!(first(&problems).kind, ProblemKind::OtherKey);
    assert!(
        first(&problems)
            .message
            .contains("the export was signed with another key")
    );
}

#[test]
fn an_edited_csv_field_is_named_by_its_row() {
    let files = export();
    let csv = String::from_utf8(files.csv.clone()).unwrap();
    let mut rows: Vec<String> = csv.lines().map(str::to_owned).collect();
    rows[5] = rows[5].replacen(",USD,", ",EUR,", 1);
    let edited = ExportFiles {
        csv: (rows.join("\n") + "\n").into_bytes(),
        ..files.clone()
    };
    let problems = problems_of(&edited);
    assert_eq!(
        first(&problems).message,
        "entries.csv row 5: currency is \"EUR\", entries.jsonl line 5 says \"USD\" (rows differing: 1)"
    );
}

mod chain;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_order_of_rows_builds_the_same_bytes(seed in any::<u64>(), journals in 0usize..40) {
        let start = at("2026-12-01T00:00:00Z");
        let ordered = rows(journals, 1, start);
        let mut shuffled = ordered.clone();
        // A cheap deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let day = draft(1, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", None);
        prop_assert_eq!(build(&ordered, &day, &key()).unwrap(), build(&shuffled, &day, &key()).unwrap());
    }

    #[test]
    fn an_edit_anywhere_in_the_chain_names_that_line(journals in 1usize..40, pick in any::<prop::sample::Index>()) {
        let day = draft(1, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", None);
        let files = build(&rows(journals, 1, at("2026-12-01T00:00:00Z")), &day, &key()).unwrap();
        let mut lines = lines_of(&files);
        let target = pick.index(lines.len());
        lines[target] = lines[target].replacen("\"transaction_id\":\"tx-", "\"transaction_id\":\"tx-9", 1);
        let problems = problems_of(&with_lines(&files, &lines));
        prop_assert_eq!(first(&problems).line, Some(target as u64 + 1));
        prop_assert_eq!(first(&problems).kind, ProblemKind::Hash);
    }

    #[test]
    fn a_flipped_byte_anywhere_fails_without_a_panic(file in 0usize..4, pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let day = draft(1, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", None);
        let mut files = build(&rows(6, 1, at("2026-12-01T00:00:00Z")), &day, &key()).unwrap();
        let bytes = match file { 0 => &mut files.jsonl, 1 => &mut files.csv, 2 => &mut files.manifest, _ => &mut files.signature };
        let at = pick.index(bytes.len());
        bytes[at] ^= 1 << bit;
        prop_assert!(verify(files.as_bytes(), &key().verifying_key(), None).is_err());
    }
}
