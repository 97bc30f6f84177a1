//! Statements and daily totals against the ledger, to the cent.

use std::collections::BTreeMap;

use chrono::Duration as ChronoDuration;
use corebank_platform::time::to_timestamp;
use rust_decimal::Decimal;

use super::*;
use crate::helpers::{reason, violated_fields};

fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal string")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_statement_and_daily_total_equals_the_ledger_after_500_random_movements() {
    let app = TestApp::spawn().await;
    approve_everything(&app).await;
    let accounts = funded_accounts(&app, 8, "500.00").await;
    random_load(&app, &accounts, 500, 7).await;
    app.assert_invariants().await;
    caught_up(&app).await;

    let mut per_currency_count = 0;
    for account_id in ledger_accounts(&app).await {
        let (statement, lines) = full_statement(&app, &account_id).await;
        let ledger = ledger_entries(&app, &account_id).await;
        assert_eq!(lines.len(), ledger.len(), "lines of {account_id}");
        assert_eq!(statement.line_count, ledger.len() as i64);
        assert_eq!(statement.opening_balance, "0.00");
        let mut running = Decimal::ZERO;
        let (mut debits, mut credits) = (Decimal::ZERO, Decimal::ZERO);
        for (line, entry) in lines.iter().zip(&ledger) {
            assert_eq!(line.entry_id, entry.entry_id);
            assert_eq!(line.journal_id, entry.journal_id);
            let amount = dec(&entry.amount.as_ref().expect("amount").amount);
            let signed = if entry.direction == pb::EntryDirection::Debit as i32 {
                debits += amount;
                -amount
            } else {
                credits += amount;
                amount
            };
            assert_eq!(dec(&line.amount), signed, "line {}", line.entry_id);
            running += signed;
            assert_eq!(dec(&line.running_balance), running);
            assert_eq!(
                line.running_balance,
                entry
                    .running_balance
                    .as_ref()
                    .expect("running balance")
                    .amount
            );
        }
        // opening + lines = closing, and closing = the ledger's balance.
        assert_eq!(
            dec(&statement.opening_balance) + credits - debits,
            dec(&statement.closing_balance)
        );
        let balance = app.balance(&account_id).await;
        assert_eq!(
            statement.closing_balance,
            balance.ledger.expect("ledger").amount
        );
        assert_eq!(dec(&statement.total_debits), debits);
        assert_eq!(dec(&statement.total_credits), credits);
        per_currency_count += ledger.len() as i64;
    }

    // Daily totals: per account they add up to the statement, bank-wide to the ledger.
    let totals = app
        .reporting
        .clone()
        .list_daily_totals(pb::ListDailyTotalsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("daily totals")
        .into_inner();
    assert!(totals.next_page_token.is_empty(), "one page holds them all");
    let mut by_account: BTreeMap<String, (Decimal, i64)> = BTreeMap::new();
    for total in &totals.totals {
        let entry = by_account.entry(total.account_id.clone()).or_default();
        entry.0 += dec(&total.credits) - dec(&total.debits);
        entry.1 += total.entry_count;
    }
    for (account_id, (net, count)) in &by_account {
        let balance = app.balance(account_id).await;
        assert_eq!(
            *net,
            dec(&balance.ledger.expect("ledger").amount),
            "{account_id}"
        );
        assert_eq!(*count, ledger_entries(&app, account_id).await.len() as i64);
    }
    let summary = app
        .account
        .clone()
        .get_ledger_summary(pb::GetLedgerSummaryRequest::default())
        .await
        .expect("ledger summary")
        .into_inner();
    let usd = summary
        .currencies
        .iter()
        .find(|currency| currency.currency == "USD")
        .expect("usd totals");
    let bank: Vec<_> = totals
        .bank_totals
        .iter()
        .filter(|t| t.currency == "USD")
        .collect();
    let bank_debits: Decimal = bank.iter().map(|t| dec(&t.debits)).sum();
    let bank_credits: Decimal = bank.iter().map(|t| dec(&t.credits)).sum();
    let bank_count: i64 = bank.iter().map(|t| t.entry_count).sum();
    assert_eq!(bank_debits, dec(&usd.debits));
    assert_eq!(bank_credits, dec(&usd.credits));
    assert_eq!(bank_debits, bank_credits, "double entry holds bank-wide");
    assert_eq!(bank_count, usd.entry_count);
    assert_eq!(bank_count, per_currency_count);

    let report = reconcile(&app).await;
    assert!(report.clean, "{:?}", report.mismatches);
    assert_eq!(report.entries_checked, per_currency_count);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_of_a_period_opens_with_the_balance_before_it_and_pages_in_ledger_order() {
    let app = TestApp::spawn().await;
    let t0 = app.clock.now();
    let account = app.funded_account("100.00").await.account_id;
    let other = app.funded_account("1.00").await.account_id;
    app.clock.advance(ChronoDuration::hours(1));
    let t1 = app.clock.now();
    app.transfer(&account, &other, "30.00").await;
    app.transfer(&account, &other, "0.50").await;
    app.clock.advance(ChronoDuration::hours(1));
    let t2 = app.clock.now();
    app.deposit_saga(&account, "5.00").await;
    caught_up(&app).await;

    let period = |start, end, page_size, page_token: String| pb::GetStatementRequest {
        account_id: account.clone(),
        start_time: Some(to_timestamp(start)),
        end_time: Some(to_timestamp(end)),
        page_size,
        page_token,
    };
    let statement = app
        .reporting
        .clone()
        .get_statement(period(t1, t2, 1, String::new()))
        .await
        .expect("statement")
        .into_inner();
    assert_eq!(statement.opening_balance, "100.00");
    assert_eq!(statement.closing_balance, "69.50");
    assert_eq!(statement.total_debits, "30.50");
    assert_eq!(statement.total_credits, "0.00");
    assert_eq!(statement.line_count, 2);
    assert_eq!(statement.lines.len(), 1);
    let first = &statement.lines[0];
    assert_eq!(first.amount, "-30.00");
    assert_eq!(first.running_balance, "70.00");
    assert_eq!(first.counterparty_account_id, other);
    assert_eq!(first.description, format!("transfer to {other}"));
    assert!(!first.transaction_id.is_empty());
    let second = app
        .reporting
        .clone()
        .get_statement(period(t1, t2, 1, statement.next_page_token.clone()))
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.lines.len(), 1);
    assert_eq!(second.lines[0].amount, "-0.50");
    assert_eq!(second.lines[0].running_balance, "69.50");
    assert!(second.next_page_token.is_empty());

    // Before anything was posted: no line, and zero both ends.
    let empty = app
        .reporting
        .clone()
        .get_statement(period(
            t0 - ChronoDuration::hours(2),
            t0 - ChronoDuration::hours(1),
            10,
            String::new(),
        ))
        .await
        .expect("empty statement")
        .into_inner();
    assert!(empty.lines.is_empty());
    assert_eq!(
        (
            empty.opening_balance.as_str(),
            empty.closing_balance.as_str()
        ),
        ("0.00", "0.00")
    );

    // A token is bound to its query.
    let refused = app
        .reporting
        .clone()
        .get_statement(period(t0, t2, 1, statement.next_page_token))
        .await
        .expect_err("a token of another period");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["page_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_statement_or_totals_request_names_the_field_and_an_unknown_account_is_not_found() {
    let app = TestApp::spawn().await;
    let now = app.clock.now();
    let mut reporting = app.reporting.clone();
    let bad_id = reporting
        .get_statement(pb::GetStatementRequest {
            account_id: "not-a-uuid".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("a bad id");
    assert_eq!(bad_id.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&bad_id), ["account_id"]);
    let backwards = reporting
        .get_statement(pb::GetStatementRequest {
            account_id: uuid::Uuid::now_v7().to_string(),
            start_time: Some(to_timestamp(now)),
            end_time: Some(to_timestamp(now - ChronoDuration::hours(1))),
            ..Default::default()
        })
        .await
        .expect_err("end before start");
    assert_eq!(violated_fields(&backwards), ["end_time"]);
    let unknown = reporting
        .get_statement(pb::GetStatementRequest {
            account_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .expect_err("an unknown account");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(reason(&unknown), "ACCOUNT_NOT_FOUND");
    let bad_totals = reporting
        .list_daily_totals(pb::ListDailyTotalsRequest {
            currency: "usd".to_owned(),
            start_date: "2026-02-30".to_owned(),
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("bad totals request");
    assert_eq!(bad_totals.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&bad_totals), ["currency", "start_date"]);
}
