//! Applying the ledger's entries to the read model, per account in sequence
//! order: the next entry is applied (with every waiting successor it
//! unblocks), an earlier one is a duplicate, a later one waits in
//! `pending_entry`. A batch of entries takes a few statements whatever its
//! size: the accounts' cursor rows are locked first, in account id order as
//! the ledger locks them, so concurrent consumers (or replicas) serialise
//! per account and never wait on each other in a cycle; then each table is
//! written once.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Direction, PostedEntry, Sequenced, sequence};

/// The columns of `entry` and `pending_entry` both have, in this order.
const ENTRY_COLUMNS: &str = "entry_id, journal_id, ledger_seq, account_id, account_seq,
    counterparty_account_id, currency, direction, amount, ledger_balance_after, kind,
    transaction_id, post_time";

/// A row of `entry` or `pending_entry`, as read back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub entry_id: Uuid,
    pub journal_id: Uuid,
    pub ledger_seq: i64,
    pub account_id: Uuid,
    pub account_seq: i64,
    pub counterparty_account_id: Option<Uuid>,
    pub currency: String,
    pub direction: String,
    pub amount: Decimal,
    pub ledger_balance_after: Decimal,
    pub kind: String,
    pub transaction_id: String,
    pub post_time: DateTime<Utc>,
}

impl EntryRow {
    pub fn into_entry(self) -> Result<PostedEntry, sqlx::Error> {
        let direction = Direction::parse(&self.direction).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown direction {:?}", self.direction).into())
        })?;
        Ok(PostedEntry {
            entry_id: self.entry_id,
            journal_id: self.journal_id,
            ledger_seq: self.ledger_seq,
            account_id: self.account_id,
            account_seq: self.account_seq,
            counterparty_account_id: self.counterparty_account_id,
            currency: self.currency,
            direction,
            amount: self.amount,
            ledger_balance_after: self.ledger_balance_after,
            kind: self.kind,
            transaction_id: self.transaction_id,
            post_time: self.post_time,
        })
    }
}

/// What became of the entries offered in one call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    /// Applied now, waiting successors they unblocked included.
    pub applied: usize,
    /// Kept until their predecessor arrives.
    pub early: usize,
    /// Applied before, or repeated in the call.
    pub duplicates: usize,
}

/// A cursor as locked: where its account's projection stands.
#[derive(Debug, sqlx::FromRow)]
struct Cursor {
    account_id: Uuid,
    last_account_seq: i64,
    balance: Decimal,
    /// Whether entries of this account wait for a gap to close.
    has_waiting: bool,
}

/// Locks the cursors of `accounts` in account id order (the order the
/// ledger locks accounts in, so two consumers never wait in a cycle).
async fn lock_cursors(
    conn: &mut PgConnection,
    accounts: &[Uuid],
) -> Result<BTreeMap<Uuid, Cursor>, sqlx::Error> {
    let cursors: Vec<Cursor> = sqlx::query_as(
        "select c.account_id, c.last_account_seq, c.balance,
                exists (select 1 from pending_entry p where p.account_id = c.account_id) as has_waiting
           from account_cursor c where c.account_id = any($1)
          order by c.account_id for update of c",
    )
    .bind(accounts)
    .fetch_all(&mut *conn)
    .await?;
    Ok(cursors
        .into_iter()
        .map(|cursor| (cursor.account_id, cursor))
        .collect())
}

/// Offers entries to their accounts' projections, a few statements for all
/// of them: the cursors are locked at once (created first when missing),
/// each account's entries are sequenced in memory against the ones already
/// waiting (see [`sequence`]), and the applied entries, their days' totals,
/// the cursors and the waiting entries are each written with one statement.
#[tracing::instrument(skip_all, fields(entries = entries.len()), err)]
pub async fn offer_entries(
    conn: &mut PgConnection,
    entries: &[PostedEntry],
    now: DateTime<Utc>,
) -> Result<Offered, sqlx::Error> {
    let mut by_account: BTreeMap<Uuid, Vec<&PostedEntry>> = BTreeMap::new();
    for entry in entries {
        by_account.entry(entry.account_id).or_default().push(entry);
    }
    if by_account.is_empty() {
        return Ok(Offered::default());
    }
    let accounts: Vec<Uuid> = by_account.keys().copied().collect();
    let mut cursors = lock_cursors(conn, &accounts).await?;
    if cursors.len() < accounts.len() {
        // An account's first entries: its cursor is created, then locked.
        let (missing, currencies): (Vec<Uuid>, Vec<&str>) = by_account
            .iter()
            .filter(|(account_id, _)| !cursors.contains_key(account_id))
            .map(|(account_id, arrivals)| (*account_id, arrivals[0].currency.as_str()))
            .unzip();
        sqlx::query(
            "insert into account_cursor (account_id, currency, updated_at)
             select a, c, $3 from unnest($1::uuid[], $2::text[]) as m(a, c)
             on conflict (account_id) do nothing",
        )
        .bind(&missing)
        .bind(&currencies)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        cursors = lock_cursors(conn, &accounts).await?;
    }
    let waiting_for: Vec<Uuid> = cursors
        .values()
        .filter(|cursor| cursor.has_waiting)
        .map(|cursor| cursor.account_id)
        .collect();
    let mut waiting: BTreeMap<Uuid, Vec<PostedEntry>> = BTreeMap::new();
    if !waiting_for.is_empty() {
        let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {ENTRY_COLUMNS} from pending_entry where account_id = any($1)"
        )))
        .bind(&waiting_for)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let entry = row.into_entry()?;
            waiting.entry(entry.account_id).or_default().push(entry);
        }
    }
    let mut writes = Writes::default();
    for (account_id, arrivals) in &by_account {
        let cursor = cursors
            .get(account_id)
            .ok_or_else(|| sqlx::Error::Protocol(format!("no cursor for account {account_id}")))?;
        let waiting = waiting.get(account_id).map(Vec::as_slice).unwrap_or(&[]);
        let result = sequence(cursor.last_account_seq, cursor.balance, waiting, arrivals);
        writes.add(*account_id, cursor.last_account_seq, result);
    }
    writes.apply(conn, now).await
}

/// Everything one [`offer_entries`] writes, gathered per table.
#[derive(Debug, Default)]
struct Writes<'a> {
    applied: Vec<(&'a PostedEntry, Decimal)>,
    unblocked: Vec<(Uuid, i64)>,
    early: Vec<&'a PostedEntry>,
    /// Account, last applied sequence, balance: cursors that moved.
    cursors: Vec<(Uuid, i64, Decimal)>,
    duplicates: usize,
}

impl<'a> Writes<'a> {
    fn add(&mut self, account_id: Uuid, last_before: i64, result: Sequenced<'a>) {
        for (entry, running) in &result.applied {
            if *running != entry.ledger_balance_after {
                // Reconciliation reports it; the read model keeps its own sum.
                tracing::warn!(
                    entry_id = %entry.entry_id,
                    %account_id,
                    %running,
                    ledger = %entry.ledger_balance_after,
                    "running balance differs from the ledger's"
                );
            }
        }
        if result.last_applied != last_before {
            self.cursors
                .push((account_id, result.last_applied, result.balance));
        }
        self.applied.extend(result.applied);
        self.unblocked
            .extend(result.unblocked.into_iter().map(|seq| (account_id, seq)));
        self.early.extend(result.early);
        self.duplicates += result.duplicates;
    }

    async fn apply(
        self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<Offered, sqlx::Error> {
        if !self.applied.is_empty() {
            let entries: Vec<&PostedEntry> = self.applied.iter().map(|(entry, _)| *entry).collect();
            let running: Vec<Decimal> = self.applied.iter().map(|(_, running)| *running).collect();
            bind_entries(
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "insert into entry ({ENTRY_COLUMNS}, running_balance, applied_at)
                     select {ENTRY_COLUMNS}, running_balance, $15 from unnest({ENTRY_ARRAYS}, $14::numeric[])
                          as e ({ENTRY_COLUMNS}, running_balance)"
                ))),
                &entries,
            )
            .bind(running)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            add_daily_totals(conn, &self.applied).await?;
        }
        if !self.cursors.is_empty() {
            let (accounts, (lasts, balances)): (Vec<Uuid>, (Vec<i64>, Vec<Decimal>)) = self
                .cursors
                .iter()
                .map(|(account_id, last, balance)| (*account_id, (*last, *balance)))
                .unzip();
            sqlx::query(
                "update account_cursor c set last_account_seq = m.last, balance = m.balance, updated_at = $4
                 from unnest($1::uuid[], $2::bigint[], $3::numeric[]) as m(account_id, last, balance)
                 where c.account_id = m.account_id",
            )
            .bind(accounts)
            .bind(lasts)
            .bind(balances)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        if !self.unblocked.is_empty() {
            let (accounts, seqs): (Vec<Uuid>, Vec<i64>) = self.unblocked.iter().copied().unzip();
            sqlx::query(
                "delete from pending_entry p using unnest($1::uuid[], $2::bigint[]) as m(account_id, account_seq)
                 where p.account_id = m.account_id and p.account_seq = m.account_seq",
            )
            .bind(accounts)
            .bind(seqs)
            .execute(&mut *conn)
            .await?;
        }
        if !self.early.is_empty() {
            bind_entries(
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "insert into pending_entry ({ENTRY_COLUMNS}, received_at)
                     select {ENTRY_COLUMNS}, $14 from unnest({ENTRY_ARRAYS}) as e ({ENTRY_COLUMNS})
                     on conflict (account_id, account_seq) do nothing"
                ))),
                &self.early,
            )
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        let offered = Offered {
            applied: self.applied.len(),
            early: self.early.len(),
            duplicates: self.duplicates,
        };
        for (outcome, count) in [
            ("applied", offered.applied),
            ("early", offered.early),
            ("duplicate", offered.duplicates),
        ] {
            if count > 0 {
                metrics::counter!("reporting_entries_total", "outcome" => outcome)
                    .increment(count as u64);
            }
        }
        Ok(offered)
    }
}

/// The `$1`…`$13` arrays [`bind_entries`] binds, typed, in [`ENTRY_COLUMNS`] order.
const ENTRY_ARRAYS: &str = "$1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::bigint[],
    $6::uuid[], $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::text[], $12::text[],
    $13::timestamptz[]";

type Statement<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the columns of `entries` to `$1`…`$13`, one array each, in
/// [`ENTRY_COLUMNS`] order.
fn bind_entries<'q>(query: Statement<'q>, entries: &[&PostedEntry]) -> Statement<'q> {
    fn column<T>(entries: &[&PostedEntry], field: impl Fn(&PostedEntry) -> T) -> Vec<T> {
        entries.iter().map(|entry| field(entry)).collect()
    }
    query
        .bind(column(entries, |e| e.entry_id))
        .bind(column(entries, |e| e.journal_id))
        .bind(column(entries, |e| e.ledger_seq))
        .bind(column(entries, |e| e.account_id))
        .bind(column(entries, |e| e.account_seq))
        .bind(column(entries, |e| e.counterparty_account_id))
        .bind(column(entries, |e| e.currency.clone()))
        .bind(column(entries, |e| e.direction.as_str()))
        .bind(column(entries, |e| e.amount))
        .bind(column(entries, |e| e.ledger_balance_after))
        .bind(column(entries, |e| e.kind.clone()))
        .bind(column(entries, |e| e.transaction_id.clone()))
        .bind(column(entries, |e| e.post_time))
}

/// Adds applied entries to their accounts' day totals (UTC days): one row
/// per account and day, so one upsert never meets its own row twice.
async fn add_daily_totals(
    conn: &mut PgConnection,
    applied: &[(&PostedEntry, Decimal)],
) -> Result<(), sqlx::Error> {
    #[derive(Default)]
    struct Day<'e> {
        currency: &'e str,
        debits: Decimal,
        credits: Decimal,
        count: i64,
        closing_balance: Decimal,
        last_account_seq: i64,
    }
    let mut days: BTreeMap<(Uuid, NaiveDate), Day> = BTreeMap::new();
    for (entry, running) in applied {
        let day = days
            .entry((entry.account_id, entry.post_time.date_naive()))
            .or_default();
        day.currency = &entry.currency;
        match entry.direction {
            Direction::Debit => day.debits += entry.amount,
            Direction::Credit => day.credits += entry.amount,
        }
        day.count += 1;
        if entry.account_seq > day.last_account_seq {
            day.last_account_seq = entry.account_seq;
            day.closing_balance = *running;
        }
    }
    let mut columns = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for ((account_id, date), day) in &days {
        columns.0.push(*account_id);
        columns.1.push(*date);
        columns.2.push(day.currency);
        columns.3.push(day.debits);
        columns.4.push(day.credits);
        columns.5.push(day.count);
        columns.6.push(day.closing_balance);
        columns.7.push(day.last_account_seq);
    }
    sqlx::query(
        "insert into daily_total (account_id, day, currency, debits, credits, entry_count,
                                  closing_balance, last_account_seq)
         select * from unnest($1::uuid[], $2::date[], $3::text[], $4::numeric[], $5::numeric[],
                              $6::bigint[], $7::numeric[], $8::bigint[])
         on conflict (account_id, day) do update set
             debits = daily_total.debits + excluded.debits,
             credits = daily_total.credits + excluded.credits,
             entry_count = daily_total.entry_count + excluded.entry_count,
             closing_balance = case when excluded.last_account_seq > daily_total.last_account_seq
                                    then excluded.closing_balance else daily_total.closing_balance end,
             last_account_seq = greatest(daily_total.last_account_seq, excluded.last_account_seq)",
    )
    .bind(columns.0)
    .bind(columns.1)
    .bind(columns.2)
    .bind(columns.3)
    .bind(columns.4)
    .bind(columns.5)
    .bind(columns.6)
    .bind(columns.7)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Throws the ledger-derived read models away (a rebuild refills them). The
/// tables are locked against writers first, so a consumer's batch waits for
/// the rebuild's commit instead of interleaving with it.
pub async fn clear_ledger_models(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("lock table account_cursor, entry, pending_entry, daily_total in exclusive mode")
        .execute(&mut *conn)
        .await?;
    for table in ["pending_entry", "daily_total", "entry", "account_cursor"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("delete from {table}")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
