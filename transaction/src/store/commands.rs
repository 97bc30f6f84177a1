//! The saga side of the `transaction` schema: a batch of commands locks its
//! transactions, reads the command log, and writes every change, history
//! row, status notice, log row and outgoing message with one statement.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use corebank_platform::db::PlannedPerCall;
use corebank_platform::messaging::{OutboxRows, OutgoingMessage};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{COLUMNS, STATUS_CHANNEL, TransactionRow};
use crate::domain::{Outcome, Transaction};

/// Reads transactions and locks them until the caller's transaction ends,
/// in id order (so two batches never wait on each other in a cycle). Ids
/// without a transaction are simply absent.
pub async fn lock_all(
    conn: &mut PgConnection,
    transaction_ids: &[Uuid],
) -> Result<HashMap<Uuid, Transaction>, sqlx::Error> {
    let rows: Vec<TransactionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from transaction where transaction_id = any($1)
         order by transaction_id for update"
    )))
    .planned_per_call()
    .bind(transaction_ids)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Transaction::try_from(row)
                .map(|transaction| (transaction.transaction_id, transaction))
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))
        })
        .collect()
}

/// A locked transaction moved as a command's `outcome` says (the caller
/// checked the move with the state machine): what [`write_batch`] writes.
#[derive(Debug)]
pub struct Change<'a> {
    /// The transaction as it was before this change.
    pub before: &'a Transaction,
    pub outcome: &'a Outcome,
    pub command_id: &'a str,
}

impl Change<'_> {
    /// The transaction right after the change, at `now`.
    pub fn after(&self, now: DateTime<Utc>) -> Transaction {
        let (failure_reason, failure_detail, journal_id) = self.outcome_fields();
        Transaction {
            status: self.outcome.status(),
            failure_reason: failure_reason.to_owned(),
            failure_detail: failure_detail.to_owned(),
            journal_id: journal_id.to_owned(),
            updated_at: now,
            ..self.before.clone()
        }
    }

    fn outcome_fields(&self) -> (&str, &str, &str) {
        match self.outcome {
            Outcome::Processing | Outcome::Review { .. } => ("", "", ""),
            Outcome::Completed { journal_id } => ("", "", journal_id.as_str()),
            Outcome::Failed {
                reason_code,
                detail,
            } => (reason_code.as_str(), detail.as_str(), ""),
        }
    }

    /// The history row's detail: what a review waits for, or the failure's.
    fn history_detail(&self) -> String {
        match self.outcome {
            Outcome::Review { step, deadline } => match deadline {
                Some(deadline) => format!(
                    "{step} awaits a final answer until {}",
                    deadline.to_rfc3339()
                ),
                None => format!("{step} awaits a final answer"),
            },
            _ => self.outcome_fields().1.to_owned(),
        }
    }
}

/// Writes a batch of commands' effects in one statement: every change (each
/// transaction's last one onto its row, every one as a history row, each
/// announced to waiters with `'<id> <new status>'`), the command log rows
/// and the outgoing messages. With nothing to write (a batch of duplicates
/// whose replies were never kept) it runs no statement.
pub async fn write_batch(
    conn: &mut PgConnection,
    changes: &[Change<'_>],
    log: &[LoggedCommand<'_>],
    outgoing: Vec<OutgoingMessage>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if changes.is_empty() && log.is_empty() && outgoing.is_empty() {
        return Ok(());
    }
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with updated as (
                 update transaction t
                    set status = u.status, failure_reason = u.failure_reason,
                        failure_detail = u.failure_detail, journal_id = u.journal_id, updated_at = $1
                   from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
                        as u (transaction_id, status, failure_reason, failure_detail, journal_id)
                  where t.transaction_id = u.transaction_id
                 returning 1
             ), change as (
                 insert into transaction_status_change
                     (transaction_id, from_status, to_status, reason_code, detail, command_id, created_at)
                 select h.transaction_id, h.from_status, h.to_status, h.reason_code, h.detail, h.command_id, $1
                   from unnest($7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
                        with ordinality
                        as h (transaction_id, from_status, to_status, reason_code, detail, command_id, ord)
                  order by h.ord
                 returning transaction_id, to_status, transaction_status_change_id as change_id
             ), logged as (
                 insert into command_log (command_id, message_type, transaction_id, reply, created_at)
                 select c, m, t, r, $1
                   from unnest($13::text[], $14::text[], $15::uuid[], $16::bytea[]) as l (c, m, t, r)
             ), {outbox}
             select (select count(*) from updated),
                    (select count(pg_notify($17, n.transaction_id::text || ' ' || n.to_status))
                       from (select transaction_id, to_status from change order by change_id) as n),
                    (select count(*) from sent_woken)",
            outbox = OutboxRows::cte("sent", 18, "true"),
        )
    });
    // Each transaction's row takes its last change.
    let mut last: HashMap<Uuid, Transaction> = HashMap::new();
    for change in changes {
        last.insert(change.before.transaction_id, change.after(now));
    }
    let rows: Vec<&Transaction> = last.values().collect();
    let details: Vec<String> = changes.iter().map(Change::history_detail).collect();
    let query = sqlx::query(sqlx::AssertSqlSafe(STATEMENT.as_str()))
        .planned_per_call()
        .bind(now)
        .bind(rows.iter().map(|t| t.transaction_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|t| t.status.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|t| t.failure_reason.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|t| t.failure_detail.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|t| t.journal_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.before.transaction_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.before.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.outcome.status().as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .iter()
                .map(|c| c.outcome_fields().0)
                .collect::<Vec<_>>(),
        )
        .bind(&details)
        .bind(changes.iter().map(|c| c.command_id).collect::<Vec<_>>())
        .bind(log.iter().map(|c| c.command_id).collect::<Vec<_>>())
        .bind(log.iter().map(|c| c.message_type).collect::<Vec<_>>())
        .bind(log.iter().map(|c| c.transaction_id).collect::<Vec<_>>())
        .bind(log.iter().map(|c| c.reply.as_deref()).collect::<Vec<_>>())
        .bind(STATUS_CHANNEL);
    let row = OutboxRows::new(outgoing)
        .bind(query)
        .fetch_one(conn)
        .await?;
    let updated: i64 = row.try_get(0)?;
    if updated != rows.len() as i64 {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// The commands among `command_ids` applied before, with the reply each
/// got then (none for commands without one).
pub async fn logged_commands(
    conn: &mut PgConnection,
    command_ids: &[&str],
) -> Result<HashMap<String, Option<Vec<u8>>>, sqlx::Error> {
    let rows: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("select command_id, reply from command_log where command_id = any($1)")
            .planned_per_call()
            .bind(command_ids)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// A command applied now, for the log.
#[derive(Debug)]
pub struct LoggedCommand<'a> {
    pub command_id: &'a str,
    pub message_type: &'a str,
    pub transaction_id: Uuid,
    pub reply: Option<Vec<u8>>,
}
