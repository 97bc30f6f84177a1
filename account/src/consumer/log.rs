//! The `command_log` as one batch of commands sees it: the rows of every
//! command id the batch names (its own commands and the reserves its posts
//! and releases refer to) read with one statement, the replies the batch
//! makes kept beside them, and all of those written with one statement at
//! the end, with the batch's outgoing messages. A command seen twice in a batch, or a release behind its reserve
//! in the same batch, finds what the earlier one recorded.

use std::collections::HashMap;
use std::sync::LazyLock;

use corebank_platform::db::PlannedPerCall;
use corebank_platform::messaging::OutboxRows;

use super::*;

/// One command's first reply, and the hold a successful reserve placed.
#[derive(Debug)]
struct Logged {
    reply: Vec<u8>,
    hold_id: Option<Uuid>,
}

#[derive(Debug, Default)]
pub(super) struct CommandLog {
    rows: HashMap<String, Logged>,
    /// Command ids recorded by this batch, in order, to insert.
    recorded: Vec<String>,
}

impl CommandLog {
    /// Reads the rows of `command_ids` (ids without a row are simply absent).
    pub(super) async fn load(
        conn: &mut PgConnection,
        command_ids: &[&str],
    ) -> Result<Self, sqlx::Error> {
        let rows: Vec<(String, Vec<u8>, Option<Uuid>)> = sqlx::query_as(
            "select command_id, reply, hold_id from command_log where command_id = any($1)",
        )
        .planned_per_call()
        .bind(command_ids)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Self {
            rows: rows
                .into_iter()
                .map(|(command_id, reply, hold_id)| (command_id, Logged { reply, hold_id }))
                .collect(),
            recorded: Vec::new(),
        })
    }

    /// The reply stored for `command_id`, if it was handled before.
    pub(super) fn reply(&self, command_id: &str) -> Result<Option<pb::CommandReply>, HandlerError> {
        self.rows
            .get(command_id)
            .map(|logged| {
                pb::CommandReply::decode(logged.reply.as_slice()).map_err(|error| {
                    HandlerError::permanent(anyhow!("stored reply does not decode: {error}"))
                })
            })
            .transpose()
    }

    /// Whether `command_id` has a reply, stored or recorded by this batch.
    pub(super) fn handled(&self, command_id: &str) -> bool {
        self.rows.contains_key(command_id)
    }

    /// `None`: the reserve has not been seen; `Some(None)`: it was rejected;
    /// `Some(Some(hold))`: it placed `hold`.
    pub(super) fn reserved_hold(&self, reserve_command_id: &str) -> Option<Option<Uuid>> {
        self.rows
            .get(reserve_command_id)
            .map(|logged| logged.hold_id)
    }

    /// Keeps `reply` as the answer to `command_id` from now on.
    pub(super) fn record(
        &mut self,
        command_id: &str,
        reply: &pb::CommandReply,
        hold_id: Option<Uuid>,
    ) {
        self.rows.insert(
            command_id.to_owned(),
            Logged {
                reply: reply.encode_to_vec(),
                hold_id,
            },
        );
        self.recorded.push(command_id.to_owned());
    }

    /// Writes what the batch recorded and the batch's `outgoing` messages,
    /// in one statement (none when there is nothing to write).
    pub(super) async fn write(
        &self,
        conn: &mut PgConnection,
        outgoing: Vec<OutgoingMessage>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if self.recorded.is_empty() && outgoing.is_empty() {
            return Ok(());
        }
        static STATEMENT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "with logged as (
                     insert into command_log (command_id, reply, hold_id, created_at)
                     select c, r, h, $4 from unnest($1::text[], $2::bytea[], $3::uuid[]) as m(c, r, h)
                 ), {}
                 select count(*) from sent_woken",
                OutboxRows::cte("sent", 5, "true")
            )
        });
        let (replies, holds): (Vec<&[u8]>, Vec<Option<Uuid>>) = self
            .recorded
            .iter()
            .map(|command_id| {
                let logged = &self.rows[command_id];
                (logged.reply.as_slice(), logged.hold_id)
            })
            .unzip();
        let query = sqlx::query(sqlx::AssertSqlSafe(STATEMENT.as_str()))
            .bind(&self.recorded)
            .bind(replies)
            .bind(holds)
            .bind(now);
        OutboxRows::new(outgoing)
            .bind(query)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
