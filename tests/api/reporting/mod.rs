//! Reporting: read models projected from the ledger's events, statements,
//! daily totals, signed exports that verify offline, and reconciliation
//! against the ledger, all against the real PostgreSQL and RabbitMQ.

use std::collections::BTreeMap;
use std::time::Duration;

use corebank_platform::clock::Clock;
use corebank_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::{TestApp, key, usd};

mod exports;
mod projection;
mod reconciliation;
mod statements;

/// A rule set whose only rule never fires: every movement is approved, so a
/// random load is never parked for review.
async fn approve_everything(app: &TestApp) {
    app.fraud
        .clone()
        .update_rule_set(pb::UpdateRuleSetRequest {
            rules: vec![pb::Rule {
                rule_id: "alert-huge".to_owned(),
                kind: pb::RuleKind::AmountAbove as i32,
                action: pb::FraudAction::Alert as i32,
                currency: "USD".to_owned(),
                threshold: "1000000000".to_owned(),
                ..Default::default()
            }],
            anomaly_history: 50,
            decline_watchlist_period: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            actor: "analyst-1".to_owned(),
            reason: "reporting tests".to_owned(),
            idempotency_key: key(),
        })
        .await
        .expect("update rule set");
}

/// `count` verified customers' USD accounts, each funded with `amount`.
async fn funded_accounts(app: &TestApp, count: usize, amount: &str) -> Vec<String> {
    let mut accounts = Vec::with_capacity(count);
    for _ in 0..count {
        accounts.push(app.funded_account(amount).await.account_id);
    }
    accounts
}

/// A random amount between 0.01 and 40.00.
fn amount(rng: &mut StdRng) -> String {
    let cents: u32 = rng.random_range(1..=4000);
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Submits `count` random transfers, deposits and withdrawals among
/// `accounts` (16 in flight) and waits until each ended; some fail for
/// want of funds, as they would.
async fn random_load(app: &TestApp, accounts: &[String], count: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plan = Vec::with_capacity(count);
    for _ in 0..count {
        let kind: u32 = rng.random_range(0..10);
        let from = accounts[rng.random_range(0..accounts.len())].clone();
        let mut to = accounts[rng.random_range(0..accounts.len())].clone();
        while to == from {
            to = accounts[rng.random_range(0..accounts.len())].clone();
        }
        plan.push((kind, from, to, amount(&mut rng)));
    }
    for batch in plan.chunks(16) {
        let mut submitted = Vec::with_capacity(batch.len());
        for (kind, from, to, amount) in batch {
            let transaction = app.transaction.clone();
            let request = match kind {
                0..=5 => transaction
                    .clone()
                    .create_transfer(pb::CreateTransferRequest {
                        idempotency_key: key(),
                        source_account_id: from.clone(),
                        destination_account_id: to.clone(),
                        amount: Some(usd(amount)),
                        description: "random transfer".to_owned(),
                        wait: None,
                    })
                    .await
                    .map(|created| created.into_inner().transaction_id),
                6..=7 => transaction
                    .clone()
                    .create_deposit(pb::CreateDepositRequest {
                        idempotency_key: key(),
                        account_id: to.clone(),
                        amount: Some(usd(amount)),
                        description: "random deposit".to_owned(),
                        wait: None,
                    })
                    .await
                    .map(|created| created.into_inner().transaction_id),
                _ => transaction
                    .clone()
                    .create_withdrawal(pb::CreateWithdrawalRequest {
                        idempotency_key: key(),
                        account_id: from.clone(),
                        amount: Some(usd(amount)),
                        description: "random withdrawal".to_owned(),
                        wait: None,
                    })
                    .await
                    .map(|created| created.into_inner().transaction_id),
            };
            submitted.push(request.expect("movement accepted"));
        }
        for transaction_id in submitted {
            app.terminal(&transaction_id).await;
        }
    }
}

/// Waits until the read model holds every ledger entry and nothing waits.
async fn caught_up(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ledger = app.count("account.entry").await;
        let model = app.count("reporting.entry").await;
        let pending = app.count("reporting.pending_entry").await;
        if ledger == model && pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection never caught up: ledger {ledger}, read model {model}, waiting {pending}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every line of an account's statement over all time, through every page.
async fn full_statement(
    app: &TestApp,
    account_id: &str,
) -> (pb::Statement, Vec<pb::StatementLine>) {
    let mut lines = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .reporting
            .clone()
            .get_statement(pb::GetStatementRequest {
                account_id: account_id.to_owned(),
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("get statement")
            .into_inner();
        lines.extend(page.lines.iter().cloned());
        if page.next_page_token.is_empty() {
            return (page, lines);
        }
        page_token = page.next_page_token;
    }
}

/// Every ledger entry of an account, oldest first, from the account service.
async fn ledger_entries(app: &TestApp, account_id: &str) -> Vec<pb::Entry> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .account
            .clone()
            .list_entries(pb::ListEntriesRequest {
                account_id: account_id.to_owned(),
                page_size: 100,
                page_token: page_token.clone(),
            })
            .await
            .expect("list entries")
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            entries.reverse();
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// Every account with at least one ledger entry (settlement included).
async fn ledger_accounts(app: &TestApp) -> Vec<String> {
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("select distinct account_id from account.entry order by 1")
            .fetch_all(&app.owner)
            .await
            .expect("accounts with entries");
    ids.iter().map(|id| id.to_string()).collect()
}

/// The ledger-derived read model, every row but the times it was applied,
/// for comparing two ways of building it.
async fn snapshot(app: &TestApp) -> BTreeMap<&'static str, Vec<String>> {
    let queries = [
        (
            "entry",
            "select concat_ws('|', entry_id, journal_id, ledger_seq, account_id, account_seq,
                    counterparty_account_id, currency, direction, amount, running_balance,
                    ledger_balance_after, kind, transaction_id, post_time)
             from reporting.entry order by entry_id",
        ),
        (
            "account_cursor",
            "select concat_ws('|', account_id, currency, last_account_seq, balance)
             from reporting.account_cursor order by account_id",
        ),
        (
            "daily_total",
            "select concat_ws('|', account_id, day, currency, debits, credits, entry_count,
                    closing_balance, last_account_seq)
             from reporting.daily_total order by account_id, day",
        ),
        (
            "pending_entry",
            "select concat_ws('|', account_id, account_seq) from reporting.pending_entry order by 1",
        ),
    ];
    let mut out = BTreeMap::new();
    for (name, sql) in queries {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&app.owner)
            .await
            .expect("snapshot query");
        out.insert(name, rows);
    }
    out
}

/// A manual reconciliation as of the projection's position.
async fn reconcile(app: &TestApp) -> pb::Reconciliation {
    app.reporting
        .clone()
        .reconcile(pb::ReconcileRequest {
            as_of_ledger_seq: 0,
            idempotency_key: key(),
        })
        .await
        .expect("reconcile")
        .into_inner()
}
