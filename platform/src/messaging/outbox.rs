//! The outbox and inbox tables and the write side of the outbox.
//!
//! Both tables live in each service's own schema (the DDL uses unqualified
//! names and runs from the service's migrations), so a service's outgoing
//! messages commit or roll back with its state, and its inbox deduplicates in
//! the same transaction as the effect.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::envelope::OutgoingMessage;

/// DDL of the `outbox` and `inbox` tables; run it in the service schema's
/// migrations. Idempotent.
///
/// `outbox` keeps sent rows (with `sent_at`) for audit until [`purge_sent`];
/// the partial index keeps the relay's scan to pending rows. `inbox` is keyed by
/// consumer (queue name) and message id, so two consumers of one schema can both
/// handle the same event.
pub const OUTBOX_INBOX_DDL: &str = r#"
create table if not exists outbox (
    outbox_id bigint generated always as identity constraint outbox_pkey primary key,
    message_id uuid not null constraint outbox_message_id_key unique,
    exchange text not null
        constraint outbox_exchange_check check (exchange in ('commands', 'replies', 'events')),
    routing_key text not null,
    message_type text not null,
    payload bytea not null,
    correlation_id uuid,
    causation_id uuid,
    traceparent text,
    schema_version integer not null default 1,
    occurred_at timestamptz not null,
    created_at timestamptz not null default now(),
    sent_at timestamptz
);

create index if not exists outbox_pending_idx on outbox (outbox_id) where sent_at is null;

create table if not exists inbox (
    consumer text not null,
    message_id uuid not null,
    message_type text not null,
    received_at timestamptz not null default now(),
    constraint inbox_pkey primary key (consumer, message_id)
);
"#;

/// The LISTEN/NOTIFY channel of the outbox in `schema`; one per schema so that
/// relays of different services sharing a database do not wake each other.
pub fn notify_channel(schema: &str) -> String {
    format!("corebank_outbox_{schema}")
}

/// Writes `message` to the outbox in the caller's transaction and wakes the
/// relay when that transaction commits (NOTIFY is transactional).
///
/// Pass `&mut *tx`. The relay publishes the row only after commit; a rollback
/// leaves no trace. A duplicate `message_id` fails with a unique violation on
/// `outbox_message_id_key`.
#[tracing::instrument(skip_all, fields(message_id = %message.message_id, message_type = %message.message_type), err)]
pub async fn enqueue(conn: &mut PgConnection, message: OutgoingMessage) -> Result<(), sqlx::Error> {
    enqueue_all(conn, vec![message]).await
}

/// The outbox columns of many messages, one array each, for `unnest`.
#[derive(Default)]
struct Columns {
    ids: Vec<uuid::Uuid>,
    exchanges: Vec<&'static str>,
    keys: Vec<String>,
    types: Vec<String>,
    payloads: Vec<Vec<u8>>,
    correlations: Vec<Option<uuid::Uuid>>,
    causations: Vec<Option<uuid::Uuid>>,
    traceparents: Vec<Option<String>>,
    versions: Vec<i32>,
    occurred: Vec<DateTime<Utc>>,
}

impl Columns {
    fn push(&mut self, message: OutgoingMessage) {
        self.ids.push(message.message_id);
        self.exchanges.push(message.exchange.as_str());
        self.keys.push(message.routing_key);
        self.types.push(message.message_type);
        self.payloads.push(message.payload);
        self.correlations.push(message.correlation_id);
        self.causations.push(message.causation_id);
        self.traceparents.push(message.traceparent);
        self.versions.push(message.schema_version);
        self.occurred.push(message.occurred_at);
    }
}

/// Messages to write to the outbox as part of a caller's larger statement:
/// [`Self::cte`] is the common table expression that inserts them,
/// [`Self::bind`] binds its parameters. [`enqueue_all`] is the statement made
/// of nothing else.
pub struct OutboxRows(Columns);

impl OutboxRows {
    /// The number of parameters [`Self::cte`] uses.
    pub const PARAMETERS: usize = 11;

    pub fn new(messages: Vec<OutgoingMessage>) -> Self {
        let mut columns = Columns::default();
        for message in messages {
            columns.push(message);
        }
        Self(columns)
    }

    /// `<name> as (insert … returning 1), <name>_woken as (select pg_notify …)`:
    /// inserts the messages in their order (`with ordinality` keeps it in the
    /// outbox ids, so the relay publishes them in that order) when `condition`
    /// holds, and wakes the relay when the insert wrote a row and the
    /// parameter says so. Its parameters are `$first` to
    /// `$first + PARAMETERS - 1`. The notification is a plain `select`: the
    /// statement must read `<name>_woken` for it to run.
    pub fn cte(name: &str, first: usize, condition: &str) -> String {
        let p = |offset: usize| format!("${}", first + offset);
        format!(
            "{name} as (
                insert into outbox (
                    message_id, exchange, routing_key, message_type, payload,
                    correlation_id, causation_id, traceparent, schema_version, occurred_at
                )
                select m.message_id, m.exchange, m.routing_key, m.message_type, m.payload,
                       m.correlation_id, m.causation_id, m.traceparent, m.schema_version, m.occurred_at
                from unnest({}::uuid[], {}::text[], {}::text[], {}::text[], {}::bytea[],
                            {}::uuid[], {}::uuid[], {}::text[], {}::int4[], {}::timestamptz[])
                     with ordinality as m (message_id, exchange, routing_key, message_type, payload,
                                           correlation_id, causation_id, traceparent, schema_version,
                                           occurred_at, position)
                where {condition}
                order by m.position
                returning 1
            ), {name}_woken as (
                select pg_notify('corebank_outbox_' || current_schema(), '') as woken
                where {} and exists (select 1 from {name})
            )",
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8),
            p(9),
            p(10),
        )
    }

    /// Binds the parameters of [`Self::cte`], in order.
    pub fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let Columns {
            ids,
            exchanges,
            keys,
            types,
            payloads,
            correlations,
            causations,
            traceparents,
            versions,
            occurred,
        } = self.0;
        let notify = super::wake::needs_notify(&ids);
        query
            .bind(ids)
            .bind(exchanges)
            .bind(keys)
            .bind(types)
            .bind(payloads)
            .bind(correlations)
            .bind(causations)
            .bind(traceparents)
            .bind(versions)
            .bind(occurred)
            .bind(notify)
    }
}

/// Writes every message of `messages` to the outbox in one statement (one
/// round trip, one NOTIFY, or none inside
/// [`waking_relay_after`](super::waking_relay_after)), in their order; the
/// same guarantees as [`enqueue`]. Nothing is written when `messages` is empty.
#[tracing::instrument(skip_all, fields(messages = messages.len()), err)]
pub async fn enqueue_all(
    conn: &mut PgConnection,
    messages: Vec<OutgoingMessage>,
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    static STATEMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "with {} select count(*) from sent_woken",
            OutboxRows::cte("sent", 1, "true")
        )
    });
    OutboxRows::new(messages)
        .bind(sqlx::query(sqlx::AssertSqlSafe(STATEMENT.as_str())))
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes outbox rows sent before `before`; returns how many.
pub async fn purge_sent(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query("delete from outbox where sent_at < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// Deletes inbox rows received before `before`; returns how many. Keep them
/// longer than any redelivery can take (retries, DLQ replays), or a late
/// duplicate would have a second effect.
pub async fn purge_inbox(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query("delete from inbox where received_at < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}

/// How long sent outbox rows and inbox rows are kept (for audit and for
/// deduplicating late redeliveries) before [`spawn_purge`] deletes them.
pub const MESSAGE_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Deletes, every ten minutes until `shutdown`, sent outbox rows and inbox
/// rows older than [`MESSAGE_RETENTION`] in the pool's schema.
pub fn spawn_purge(
    pool: sqlx::PgPool,
    clock: crate::clock::SharedClock,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let period = std::time::Duration::from_secs(600);
    tokio::spawn(crate::schedule::every(
        std::time::Duration::ZERO,
        period,
        shutdown,
        move || {
            let (pool, clock) = (pool.clone(), clock.clone());
            async move {
                let before = clock.now() - MESSAGE_RETENTION;
                let purged = async {
                    let mut conn = pool.acquire().await?;
                    let sent = purge_sent(&mut conn, before).await?;
                    let handled = purge_inbox(&mut conn, before).await?;
                    Ok::<_, sqlx::Error>((sent, handled))
                };
                match purged.await {
                    Ok((sent, handled)) if sent + handled > 0 => {
                        tracing::info!(sent, handled, "old outbox and inbox rows purged");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "outbox and inbox purge failed"),
                }
            }
        },
    ))
}
