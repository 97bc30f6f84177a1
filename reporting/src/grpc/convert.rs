//! Rows and domain values to their protobuf messages.

use chrono::{DateTime, Utc};
use corebank_platform::money::Currency;
use corebank_platform::time::to_timestamp;
use corebank_proto::v1 as pb;
use prost::Message;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::reconcile::{Mismatch, MismatchKind};
use crate::domain::{Direction, describe};
use crate::store::exports::{ExportRecord, KeyRow};
use crate::store::reconciliations::RunRow;
use crate::store::statements::{CurrencyDayRow, DailyTotalRow, Line, Period};

/// `amount` at the currency's ISO 4217 scale.
pub fn money(currency: &str, amount: Decimal) -> String {
    Currency::parse(currency)
        .map(|currency| currency.format(amount))
        .unwrap_or_else(|_| amount.normalize().to_string())
}

fn direction(text: &str) -> Direction {
    Direction::parse(text).unwrap_or(Direction::Credit)
}

pub fn statement_to_proto(
    account_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    period: &Period,
    lines: &[Line],
    next_page_token: String,
) -> pb::Statement {
    let currency = period.currency.as_str();
    pb::Statement {
        account_id: account_id.to_string(),
        currency: currency.to_owned(),
        start_time: (start != DateTime::UNIX_EPOCH).then(|| to_timestamp(start)),
        end_time: Some(to_timestamp(end)),
        opening_balance: money(currency, period.opening_balance),
        closing_balance: money(currency, period.closing_balance),
        total_debits: money(currency, period.total_debits),
        total_credits: money(currency, period.total_credits),
        line_count: period.line_count,
        lines: lines
            .iter()
            .map(|line| {
                let direction = direction(&line.direction);
                pb::StatementLine {
                    post_time: Some(to_timestamp(line.post_time)),
                    journal_id: line.journal_id.to_string(),
                    entry_id: line.entry_id.to_string(),
                    transaction_id: line.transaction_id.clone(),
                    counterparty_account_id: line
                        .counterparty_account_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    description: describe(&line.kind, direction, line.counterparty_account_id),
                    direction: match direction {
                        Direction::Debit => pb::EntryDirection::Debit,
                        Direction::Credit => pb::EntryDirection::Credit,
                    } as i32,
                    amount: money(currency, direction.signed(line.amount)),
                    running_balance: money(currency, line.running_balance),
                    ledger_seq: line.ledger_seq,
                    account_seq: line.account_seq,
                }
            })
            .collect(),
        next_page_token,
    }
}

pub fn daily_total_to_proto(row: &DailyTotalRow) -> pb::DailyTotal {
    pb::DailyTotal {
        account_id: row.account_id.to_string(),
        currency: row.currency.clone(),
        date: row.day.to_string(),
        debits: money(&row.currency, row.debits),
        credits: money(&row.currency, row.credits),
        entry_count: row.entry_count,
        closing_balance: money(&row.currency, row.closing_balance),
    }
}

pub fn currency_day_to_proto(row: &CurrencyDayRow) -> pb::CurrencyDailyTotal {
    pb::CurrencyDailyTotal {
        currency: row.currency.clone(),
        date: row.day.to_string(),
        debits: money(&row.currency, row.debits),
        credits: money(&row.currency, row.credits),
        entry_count: row.entry_count,
    }
}

pub fn export_to_proto(record: &ExportRecord) -> pb::Export {
    pb::Export {
        export_id: record.export_id.to_string(),
        period_start: Some(to_timestamp(record.period_start)),
        period_end: Some(to_timestamp(record.period_end)),
        account_ids: record
            .scope_accounts
            .iter()
            .map(|id| id.to_string())
            .collect(),
        row_count: record.row_count,
        first_ledger_seq: record.first_ledger_seq,
        last_ledger_seq: record.last_ledger_seq,
        chain_head: record.chain_head.clone(),
        merkle_root: record.merkle_root.clone(),
        previous_chain_head: record.previous_chain_head.clone(),
        previous_export_id: record
            .previous_export_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        key_id: record.key_id.clone(),
        create_time: Some(to_timestamp(record.created_at)),
        manifest: String::from_utf8_lossy(&record.manifest).into_owned(),
        jsonl_size: record.jsonl_size,
        csv_size: record.csv_size,
    }
}

pub fn signing_key_to_proto(key: &KeyRow, active_key_id: &str) -> pb::SigningKey {
    pb::SigningKey {
        key_id: key.key_id.clone(),
        algorithm: key.algorithm.clone(),
        public_key_pem: key.public_key_pem.clone(),
        active: key.key_id == active_key_id,
        first_used_time: Some(to_timestamp(key.first_used_at)),
    }
}

fn mismatch_kind(kind: MismatchKind) -> pb::MismatchKind {
    match kind {
        MismatchKind::Missing => pb::MismatchKind::Missing,
        MismatchKind::Extra => pb::MismatchKind::Extra,
        MismatchKind::AmountDiffers => pb::MismatchKind::AmountDiffers,
        MismatchKind::BalanceDiffers => pb::MismatchKind::BalanceDiffers,
        MismatchKind::CountDiffers => pb::MismatchKind::CountDiffers,
        MismatchKind::CurrencyTotalDiffers => pb::MismatchKind::CurrencyTotalDiffers,
    }
}

pub fn reconciliation_to_proto(run: &RunRow, mismatches: &[Mismatch]) -> pb::Reconciliation {
    pb::Reconciliation {
        reconciliation_id: run.reconciliation_id.to_string(),
        as_of_ledger_seq: run.as_of_ledger_seq,
        ledger_head_seq: run.ledger_head_seq,
        trigger: run.trigger.clone(),
        clean: run.clean,
        accounts_checked: run.accounts_checked,
        entries_checked: run.entries_checked,
        mismatches: mismatches
            .iter()
            .map(|mismatch| pb::Mismatch {
                kind: mismatch_kind(mismatch.kind) as i32,
                account_id: mismatch
                    .account_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                currency: mismatch.currency.clone(),
                entry_id: mismatch
                    .entry_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                ledger_value: mismatch.ledger_value.clone(),
                read_model_value: mismatch.read_model_value.clone(),
                detail: mismatch.detail.clone(),
            })
            .collect(),
        lag: pb::ProjectionStatus::decode(run.lag.as_slice()).ok(),
        create_time: Some(to_timestamp(run.created_at)),
    }
}
