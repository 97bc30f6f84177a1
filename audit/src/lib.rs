//! The invariants corebank promises, checked from outside the services with
//! an owner login that can read every schema: money is conserved, balances
//! equal their entries, no posting is applied twice, no hold is left behind,
//! every journal was posted by a saga, and every saga ends. Tests run it after every end-to-end and fault test; the
//! benchmark runs it after every run; an operator can run it any time.

use serde::Serialize;
use sqlx::PgPool;

/// What the check found; every count should be zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InvariantReport {
    /// Journals whose entries do not sum to zero in some currency.
    pub unbalanced_journals: i64,
    /// Sum of all signed entries per currency that is not zero.
    pub nonzero_currency_totals: i64,
    /// Accounts whose stored ledger balance differs from the sum of their entries.
    pub balance_mismatches: i64,
    /// Accounts whose held amount differs from the sum of their active holds.
    pub held_mismatches: i64,
    /// Customer accounts whose available balance is below minus their overdraft limit.
    pub below_overdraft_limit: i64,
    /// Holds still active (after every saga ended, none should be).
    pub active_holds: i64,
    /// Holds captured into more than one journal, or journals capturing a hold twice.
    pub double_postings: i64,
    /// Journals that no saga posted: no transaction, or no saga of that
    /// transaction, references them. Money moved around the saga.
    pub journals_outside_a_saga: i64,
    /// COMPLETED transactions without exactly one journal referencing them.
    pub completed_without_one_journal: i64,
    /// FAILED transactions that nevertheless have a journal.
    pub failed_with_journal: i64,
    /// Transactions not yet COMPLETED or FAILED.
    pub unfinished_transactions: i64,
    /// Sagas not yet in a terminal state.
    pub unfinished_sagas: i64,
}

impl InvariantReport {
    /// Every invariant holds.
    pub fn ok(&self) -> bool {
        self.violations().is_empty()
    }

    /// One line per broken invariant.
    pub fn violations(&self) -> Vec<String> {
        let checks = [
            (self.unbalanced_journals, "journals do not balance"),
            (
                self.nonzero_currency_totals,
                "currencies whose entries do not sum to zero",
            ),
            (
                self.balance_mismatches,
                "accounts whose balance differs from their entries",
            ),
            (
                self.held_mismatches,
                "accounts whose held amount differs from their active holds",
            ),
            (
                self.below_overdraft_limit,
                "accounts below their overdraft limit",
            ),
            (self.active_holds, "holds left active"),
            (self.double_postings, "holds posted more than once"),
            (
                self.journals_outside_a_saga,
                "journals posted outside a saga (no transaction or no saga of it)",
            ),
            (
                self.completed_without_one_journal,
                "completed transactions without exactly one journal",
            ),
            (
                self.failed_with_journal,
                "failed transactions with a journal",
            ),
            (self.unfinished_transactions, "transactions not terminal"),
            (self.unfinished_sagas, "sagas not terminal"),
        ];
        checks
            .iter()
            .filter(|(count, _)| *count != 0)
            .map(|(count, what)| format!("{count} {what}"))
            .collect()
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await?)
}

async fn schema_exists(pool: &PgPool, schema: &str) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("select exists (select 1 from pg_namespace where nspname = $1)")
            .bind(schema)
            .fetch_one(pool)
            .await?,
    )
}

/// Checks the ledger only (the account schema).
pub async fn check_ledger(pool: &PgPool) -> anyhow::Result<InvariantReport> {
    Ok(InvariantReport {
        unbalanced_journals: count(
            pool,
            "select count(*) from (
                select journal_id from account.entry group by journal_id, currency
                having sum(case direction when 'credit' then amount else -amount end) <> 0) unbalanced",
        )
        .await?,
        nonzero_currency_totals: count(
            pool,
            "select count(*) from (
                select currency from account.entry group by currency
                having sum(case direction when 'credit' then amount else -amount end) <> 0) totals",
        )
        .await?,
        balance_mismatches: count(
            pool,
            "select count(*) from account.account a
             where a.ledger_balance <> coalesce((
                select sum(case e.direction when 'credit' then e.amount else -e.amount end)
                from account.entry e where e.account_id = a.account_id), 0)",
        )
        .await?,
        held_mismatches: count(
            pool,
            "select count(*) from account.account a
             where a.held_amount <> coalesce((
                select sum(h.amount) from account.hold h
                where h.account_id = a.account_id and h.status = 'active'), 0)",
        )
        .await?,
        below_overdraft_limit: count(
            pool,
            "select count(*) from account.account
             where product <> 'settlement' and ledger_balance - held_amount + overdraft_limit < 0",
        )
        .await?,
        active_holds: count(pool, "select count(*) from account.hold where status = 'active'").await?,
        double_postings: count(
            pool,
            "select count(*) from (
                select hold_id from account.journal where hold_id is not null
                group by hold_id having count(*) > 1) twice",
        )
        .await?,
        ..InvariantReport::default()
    })
}

/// Checks the ledger and, where those schemas exist, transactions and sagas.
pub async fn check(pool: &PgPool) -> anyhow::Result<InvariantReport> {
    let mut report = check_ledger(pool).await?;
    if schema_exists(pool, "transaction").await? {
        report.completed_without_one_journal = count(
            pool,
            // One pass over each table (a correlated count per transaction
            // would scan the journals once per transaction).
            "select count(*) from transaction.transaction t
               left join (select reference, count(*) as journals
                            from account.journal group by reference) j
                 on j.reference = t.transaction_id::text
              where t.status = 'completed' and coalesce(j.journals, 0) <> 1",
        )
        .await?;
        report.failed_with_journal = count(
            pool,
            "select count(*) from transaction.transaction t
             where t.status = 'failed' and exists (
                select 1 from account.journal j where j.reference = t.transaction_id::text)",
        )
        .await?;
        report.unfinished_transactions = count(
            pool,
            "select count(*) from transaction.transaction where status not in ('completed', 'failed')",
        )
        .await?;
    }
    if schema_exists(pool, "transaction").await? && schema_exists(pool, "orchestrator").await? {
        // Each transaction has one saga (unique transaction id) and each
        // journal names its transaction: a journal belongs to exactly one
        // saga and one transaction, or to none.
        report.journals_outside_a_saga = count(
            pool,
            "select count(*) from account.journal j
             where not exists (
                select 1 from transaction.transaction t where t.transaction_id::text = j.reference)
                or not exists (
                select 1 from orchestrator.saga s where s.transaction_id::text = j.reference)",
        )
        .await?;
    }
    if schema_exists(pool, "orchestrator").await? {
        report.unfinished_sagas = count(
            pool,
            "select count(*) from orchestrator.saga where state not in ('completed', 'compensated', 'failed')",
        )
        .await?;
    }
    Ok(report)
}
