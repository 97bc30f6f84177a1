//! Where a saga's time goes between services: for every kind of message the
//! run sent (sender, receiver, message type), how long it waited in the
//! sender's outbox and how long it then took to reach the receiver's
//! consumer, read from the outbox and inbox rows the run left behind.
//!
//! The three instants are the transactions' start times PostgreSQL records
//! (`now()`): the writer's transaction that enqueued the message
//! (`outbox.created_at`), the relay round that published it (`sent_at`), and
//! the receiver's batch that handled it (`inbox.received_at`). So *outbox*
//! is the writer's own transaction, its commit and the wait for a relay
//! round; *delivery* is that round's read, the publish, the broker's
//! replication and routing, and the consumer's start.

use std::io::Write;

use serde::Serialize;
use sqlx::PgPool;

/// One kind of message's figures.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub(super) struct Hop {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) message_type: String,
    pub(super) messages: i64,
    pub(super) outbox_p50_ms: f64,
    pub(super) outbox_p99_ms: f64,
    pub(super) delivery_p50_ms: f64,
    pub(super) delivery_p99_ms: f64,
}

/// The hops of the messages written since `since`, busiest first.
pub(super) async fn hops(db: &PgPool, since: &str) -> anyhow::Result<Vec<Hop>> {
    let schemas = super::report::schemas_with(db, &["outbox", "inbox"]).await?;
    if schemas.is_empty() {
        return Ok(Vec::new());
    }
    // The schema names come from the service list, not from input.
    let sent = schemas
        .iter()
        .map(|schema| {
            format!(
                "select '{schema}' as service, message_id, message_type, created_at, sent_at \
                 from {schema}.outbox where created_at >= $1::timestamptz and sent_at is not null"
            )
        })
        .collect::<Vec<_>>()
        .join(" union all ");
    let received = schemas
        .iter()
        .map(|schema| {
            format!(
                "select '{schema}' as service, message_id, received_at \
                 from {schema}.inbox where received_at >= $1::timestamptz"
            )
        })
        .collect::<Vec<_>>()
        .join(" union all ");
    let sql = format!(
        "with sent as ({sent}), received as ({received}),
              hop as (select s.service as from_service, r.service as to_service, s.message_type,
                             extract(epoch from s.sent_at - s.created_at) * 1000 as outbox_ms,
                             extract(epoch from r.received_at - s.sent_at) * 1000 as delivery_ms
                        from sent s join received r using (message_id))
         select from_service as \"from\", to_service as \"to\", message_type, count(*) as messages,
                percentile_cont(0.5) within group (order by outbox_ms) as outbox_p50_ms,
                percentile_cont(0.99) within group (order by outbox_ms) as outbox_p99_ms,
                percentile_cont(0.5) within group (order by delivery_ms) as delivery_p50_ms,
                percentile_cont(0.99) within group (order by delivery_ms) as delivery_p99_ms
           from hop
          group by from_service, to_service, message_type
          order by count(*) desc, from_service, to_service, message_type"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(since)
        .fetch_all(db)
        .await?)
}

/// The hops as a table under the report's other rows.
pub(super) fn write_hops(out: &mut impl Write, hops: &[Hop]) -> std::io::Result<()> {
    if hops.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  hops (ms, p50/p99): outbox = enqueued -> published, delivery = published -> handled"
    )?;
    for hop in hops {
        let message = hop
            .message_type
            .strip_prefix("corebank.v1.")
            .unwrap_or(&hop.message_type);
        writeln!(
            out,
            "  {:>6}  {:<29} {:<40} outbox {:>6.1} / {:>6.1}   delivery {:>6.1} / {:>6.1}",
            hop.messages,
            format!("{} -> {}", hop.from, hop.to),
            message,
            hop.outbox_p50_ms,
            hop.outbox_p99_ms,
            hop.delivery_p50_ms,
            hop.delivery_p99_ms,
        )?;
    }
    Ok(())
}
