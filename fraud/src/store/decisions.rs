//! Decisions (one per screen command, never edited) and the alerts they raised.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use corebank_platform::ApiError;
use corebank_platform::messaging::{OutboxRows, OutgoingMessage};
use corebank_platform::paging::Page;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::domain::evaluate::FiredRule;
use crate::domain::features::FeatureSnapshot;

/// A stored decision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub decision_id: Uuid,
    pub command_id: String,
    pub transaction_id: Uuid,
    pub saga_id: Uuid,
    /// approve | review | decline
    pub outcome: String,
    pub rule_set_version: i64,
    pub features: Json<FeatureSnapshot>,
    pub fired: Json<Vec<FiredRule>>,
    /// The encoded first reply.
    pub reply: Vec<u8>,
    pub source_account_id: Option<Uuid>,
    pub destination_account_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "decision_id, command_id, transaction_id, saga_id, outcome, rule_set_version, \
     features, fired, reply, source_account_id, destination_account_id, created_at";

/// The decision insert as a CTE named `decided`: parameters `$1` to `$12`.
const INSERT: &str = "decided as (
    insert into decision (decision_id, command_id, transaction_id, saga_id, outcome,
                          rule_set_version, features, fired, reply,
                          source_account_id, destination_account_id, created_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    returning 1
)";

fn bind<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    row: &'q DecisionRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(row.decision_id)
        .bind(&row.command_id)
        .bind(row.transaction_id)
        .bind(row.saga_id)
        .bind(&row.outcome)
        .bind(row.rule_set_version)
        .bind(&row.features)
        .bind(&row.fired)
        .bind(&row.reply)
        .bind(row.source_account_id)
        .bind(row.destination_account_id)
        .bind(row.created_at)
}

pub async fn insert(conn: &mut PgConnection, row: &DecisionRow) -> Result<(), sqlx::Error> {
    static STATEMENT: LazyLock<String> =
        LazyLock::new(|| format!("with {INSERT} select count(*) from decided"));
    bind(sqlx::query(AssertSqlSafe(STATEMENT.as_str())), row)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores `row` and writes `messages` to the outbox, in one statement.
pub async fn insert_sending(
    conn: &mut PgConnection,
    row: &DecisionRow,
    messages: Vec<OutgoingMessage>,
) -> Result<(), sqlx::Error> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with {INSERT}, {outbox} select (select count(*) from decided), (select count(*) from sent_woken)",
            outbox = OutboxRows::cte("sent", 13, "true"),
        )
    });
    OutboxRows::new(messages)
        .bind(bind(sqlx::query(AssertSqlSafe(STATEMENT.as_str())), row))
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores `rows` and writes `messages` to the outbox, in one statement.
pub async fn insert_all_sending(
    conn: &mut PgConnection,
    rows: &[DecisionRow],
    messages: Vec<OutgoingMessage>,
) -> Result<(), sqlx::Error> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with decided as (
                 insert into decision ({COLUMNS})
                 select * from unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[],
                                      $6::int8[], $7::jsonb[], $8::jsonb[], $9::bytea[],
                                      $10::uuid[], $11::uuid[], $12::timestamptz[])
                 returning 1
             ), {outbox}
             select (select count(*) from decided), (select count(*) from sent_woken)",
            outbox = OutboxRows::cte("sent", 13, "true"),
        )
    });
    fn column<'r, T>(rows: &'r [DecisionRow], pick: impl Fn(&'r DecisionRow) -> T) -> Vec<T> {
        rows.iter().map(pick).collect()
    }
    let query = sqlx::query(AssertSqlSafe(STATEMENT.as_str()))
        .bind(column(rows, |row| row.decision_id))
        .bind(column(rows, |row| row.command_id.as_str()))
        .bind(column(rows, |row| row.transaction_id))
        .bind(column(rows, |row| row.saga_id))
        .bind(column(rows, |row| row.outcome.as_str()))
        .bind(column(rows, |row| row.rule_set_version))
        .bind(column(rows, |row| &row.features))
        .bind(column(rows, |row| &row.fired))
        .bind(column(rows, |row| row.reply.as_slice()))
        .bind(column(rows, |row| row.source_account_id))
        .bind(column(rows, |row| row.destination_account_id))
        .bind(column(rows, |row| row.created_at));
    OutboxRows::new(messages).bind(query).execute(conn).await?;
    Ok(())
}

/// The decision a screen command made, if it was seen before.
pub async fn by_command(
    conn: &mut PgConnection,
    command_id: &str,
) -> Result<Option<DecisionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from decision where command_id = $1"
    )))
    .bind(command_id)
    .fetch_optional(conn)
    .await
}

pub async fn by_transaction(
    conn: &mut PgConnection,
    transaction_id: Uuid,
) -> Result<Option<DecisionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from decision where transaction_id = $1"
    )))
    .bind(transaction_id)
    .fetch_optional(conn)
    .await
}

pub async fn by_id(
    conn: &mut PgConnection,
    decision_id: Uuid,
) -> Result<Option<DecisionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from decision where decision_id = $1"
    )))
    .bind(decision_id)
    .fetch_optional(conn)
    .await
}

/// Decisions oldest first: for replaying them against their rule sets.
pub async fn page(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DecisionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {COLUMNS} from decision where ($1::uuid is null or decision_id > $1)
          order by decision_id limit $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A stored alert.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub alert_id: Uuid,
    pub decision_id: Uuid,
    pub transaction_id: Uuid,
    pub account_id: Option<Uuid>,
    pub rules: Json<Vec<FiredRule>>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_alert(conn: &mut PgConnection, row: &AlertRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into alert (alert_id, decision_id, transaction_id, account_id, rules, created_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(row.alert_id)
    .bind(row.decision_id)
    .bind(row.transaction_id)
    .bind(row.account_id)
    .bind(&row.rules)
    .bind(row.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Alerts newest first, of one account or all.
pub async fn list_alerts(
    conn: &mut PgConnection,
    account_id: Option<Uuid>,
    page: &Page,
) -> Result<Vec<AlertRow>, ApiError> {
    let before = page
        .after
        .as_deref()
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| {
            ApiError::invalid_field("page_token", "is not a token issued for this query")
        })?;
    let rows = sqlx::query_as(
        "select alert_id, decision_id, transaction_id, account_id, rules, created_at from alert
          where ($1::uuid is null or account_id = $1) and ($2::uuid is null or alert_id < $2)
          order by alert_id desc limit $3",
    )
    .bind(account_id)
    .bind(before)
    .bind(page.fetch_limit())
    .fetch_all(conn)
    .await?;
    Ok(rows)
}
