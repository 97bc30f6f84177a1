//! entries.csv against entries.jsonl: the CSV the lines imply is compared
//! with the file, and the first differing row and column named.

use super::CSV_HEADER;
use super::problem::{Problem, ProblemKind};

pub(super) fn check_csv(actual: &[u8], expected: &[u8], problems: &mut Vec<Problem>) {
    if actual == expected {
        return;
    }
    let reader = |bytes| {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes)
    };
    let mut actual_records = reader(actual).into_byte_records();
    let mut expected_records = reader(expected).into_byte_records();
    let (mut position, mut rows, mut lines, mut differing, mut first) =
        (0u64, 0u64, 0u64, 0u64, None);
    loop {
        let (a, e) = match (actual_records.next(), expected_records.next()) {
            (None, None) => break,
            (Some(Err(error)), _) => {
                problems.push(Problem::new(
                    ProblemKind::Csv,
                    format!("entries.csv row {position} cannot be read: {error}"),
                ));
                return;
            }
            (a, e) => (a.and_then(Result::ok), e.and_then(Result::ok)),
        };
        position += 1;
        rows += u64::from(a.is_some());
        lines += u64::from(e.is_some());
        if a != e {
            differing += 1;
            if first.is_none() {
                first = Some(describe_row(position, a.as_ref(), e.as_ref()));
            }
        }
    }
    if rows != lines {
        problems.push(Problem::new(
            ProblemKind::Csv,
            format!(
                "entries.csv has {} rows, entries.jsonl has {} lines",
                rows.saturating_sub(1),
                lines.saturating_sub(1)
            ),
        ));
    }
    match first {
        Some(message) => problems.push(Problem::new(
            ProblemKind::Csv,
            format!("{message} (rows differing: {differing})"),
        )),
        None => problems.push(Problem::new(
            ProblemKind::Csv,
            "entries.csv is not canonical: its quoting or line endings changed",
        )),
    }
}

fn describe_row(
    row: u64,
    actual: Option<&csv::ByteRecord>,
    expected: Option<&csv::ByteRecord>,
) -> String {
    let data_row = row.saturating_sub(1);
    let (actual, expected) = match (actual, expected) {
        (Some(actual), Some(expected)) => (actual, expected),
        (None, _) => {
            return format!("entries.csv ends before row {data_row}, which entries.jsonl has");
        }
        (_, None) => return format!("entries.csv row {data_row} has no line in entries.jsonl"),
    };
    if row <= 1 {
        return "entries.csv header is not the export's header".to_owned();
    }
    let width = actual.len().max(expected.len());
    let column = (0..width)
        .find(|&i| actual.get(i) != expected.get(i))
        .unwrap_or(0);
    let text =
        |field: Option<&[u8]>| String::from_utf8_lossy(field.unwrap_or_default()).into_owned();
    format!(
        "entries.csv row {data_row}: {} is {:?}, entries.jsonl line {data_row} says {:?}",
        CSV_HEADER.get(column).copied().unwrap_or("an extra column"),
        text(actual.get(column)),
        text(expected.get(column)),
    )
}
