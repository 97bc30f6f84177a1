//! Consecutive exports: the chain across periods, the link to the previous
//! export (a dropped period, a key rotation, an empty period) and what the
//! builder refuses to chain.

use super::*;

/// Three consecutive daily exports of the same scope, chained.
fn three_exports() -> [ExportFiles; 3] {
    let days = [
        "2026-12-01T00:00:00Z",
        "2026-12-02T00:00:00Z",
        "2026-12-03T00:00:00Z",
        "2026-12-04T00:00:00Z",
    ];
    let first = build(
        &rows(5, 1, at(days[0])),
        &draft(1, days[0], days[1], None),
        &key(),
    )
    .unwrap();
    let second = build(
        &rows(5, 6, at(days[1])),
        &draft(2, days[1], days[2], Some(&first)),
        &key(),
    )
    .unwrap();
    let third = build(
        &rows(5, 11, at(days[2])),
        &draft(3, days[2], days[3], Some(&second)),
        &key(),
    )
    .unwrap();
    [first, second, third]
}

#[test]
fn a_period_dropped_between_chained_exports_is_named() {
    let [first, second, third] = three_exports();
    let public = key().verifying_key();

    let report = verify(third.as_bytes(), &public, Some(previous(&second))).unwrap();
    assert_eq!(report.previous.unwrap().export_id, second.summary.export_id);
    verify(second.as_bytes(), &public, Some(previous(&first))).unwrap();

    let problems = verify(third.as_bytes(), &public, Some(previous(&first))).unwrap_err();
    assert_eq!(first_kind(&problems), ProblemKind::Previous);
    assert!(problems[0].message.starts_with(&format!(
        "an export is missing between the previous export {} (period ending 2026-12-02T00:00:00.000000Z) and this one (period starting 2026-12-03T00:00:00.000000Z",
        first.summary.export_id
    )), "{problems:?}");
}

fn previous(files: &ExportFiles) -> PreviousManifest<'_> {
    PreviousManifest {
        manifest: &files.manifest,
        signature: Some(&files.signature),
        public_key: None,
    }
}

#[test]
fn a_manifest_that_itself_skips_a_period_is_named_even_when_signed() {
    let [_, second, _] = three_exports();
    let mut summary = second.summary.clone();
    summary.previous_period_end = Some(at("2026-11-30T00:00:00Z"));
    let manifest = summary.to_bytes();
    let signature = sign_manifest(&key(), &manifest);
    let problems = problems_of(&ExportFiles {
        manifest,
        signature,
        summary,
        ..second.clone()
    });
    assert_eq!(first_kind(&problems), ProblemKind::Previous);
    assert!(
        problems[0]
            .message
            .starts_with("an export is missing between"),
        "{problems:?}"
    );
}

#[test]
fn an_unreadable_line_says_where_in_the_line() {
    let files = export();
    let mut lines = lines_of(&files);
    lines[3] = lines[3].replacen("\"hash\":", "\"hash\"", 1);
    let problems = problems_of(&with_lines(&files, &lines));
    assert_eq!(first_kind(&problems), ProblemKind::LineUnreadable);
    assert!(
        problems[0]
            .message
            .starts_with("entries.jsonl line 4: is not a valid export line: expected `:` (column "),
        "{problems:?}"
    );
}

fn first_kind(problems: &[Problem]) -> ProblemKind {
    first(problems).kind
}

#[test]
fn the_first_line_of_a_chained_export_continues_the_previous_chain_head() {
    let [_, second, third] = three_exports();
    let first_line = lines_of(&third)[0].clone();
    assert!(first_line.contains(&format!(
        "\"prev_hash\":\"{}\"",
        hex_digest(&second.summary.chain_head)
    )));
}

#[test]
fn an_empty_export_verifies_and_keeps_the_previous_head() {
    let [_, second, _] = three_exports();
    let empty = build(
        &[],
        &draft(
            9,
            "2026-12-03T00:00:00Z",
            "2026-12-04T00:00:00Z",
            Some(&second),
        ),
        &key(),
    )
    .unwrap();
    assert!(empty.jsonl.is_empty());
    assert_eq!(empty.summary.chain_head, second.summary.chain_head);
    assert_eq!(empty.summary.merkle_root, sha256(b""));
    assert_eq!(
        (
            empty.summary.first_ledger_seq,
            empty.summary.last_ledger_seq
        ),
        (0, 0)
    );
    let previous = PreviousManifest {
        manifest: &second.manifest,
        signature: Some(&second.signature),
        public_key: None,
    };
    verify(empty.as_bytes(), &key().verifying_key(), Some(previous)).unwrap();
}

#[test]
fn after_a_key_rotation_the_previous_export_verifies_with_the_key_that_signed_it() {
    let old_key = SigningKey::from_bytes(&[9; 32]);
    let day_one = build(
        &rows(3, 1, at("2026-12-01T00:00:00Z")),
        &draft(1, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", None),
        &old_key,
    )
    .unwrap();
    let day_two = build(
        &rows(3, 4, at("2026-12-02T00:00:00Z")),
        &draft(
            2,
            "2026-12-02T00:00:00Z",
            "2026-12-03T00:00:00Z",
            Some(&day_one),
        ),
        &key(),
    )
    .unwrap();
    let previous = |public_key| PreviousManifest {
        manifest: &day_one.manifest,
        signature: Some(&day_one.signature),
        public_key,
    };
    let new_key = key().verifying_key();
    let problems = verify(day_two.as_bytes(), &new_key, Some(previous(None)))
        .expect_err("the previous export was signed with the old key");
    assert!(problems[0].message.contains("another key"), "{problems:?}");
    let old_public = old_key.verifying_key();
    verify(
        day_two.as_bytes(),
        &new_key,
        Some(previous(Some(&old_public))),
    )
    .unwrap();
}

#[test]
fn a_row_outside_the_period_or_a_gap_after_the_previous_export_is_refused_at_build_time() {
    let late = rows(1, 1, at("2026-12-02T00:00:00Z"));
    let day = draft(1, "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", None);
    assert!(matches!(
        build(&late, &day, &key()),
        Err(BuildError::Row { .. })
    ));
    let [first, _, _] = three_exports();
    let gap = draft(
        3,
        "2026-12-03T00:00:00Z",
        "2026-12-04T00:00:00Z",
        Some(&first),
    );
    assert!(matches!(
        build(&[], &gap, &key()),
        Err(BuildError::Gap { .. })
    ));
}
