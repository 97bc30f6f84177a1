//! `GetLedgerSummary` against the account's own figures, as of any ledger
//! sequence and period.

use std::collections::HashMap;

use corebank_proto::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, violated_fields};
use crate::ledger_feed::{all_entries, entries_request};

fn summary_request(as_of: i64, page_size: i32) -> pb::GetLedgerSummaryRequest {
    pb::GetLedgerSummaryRequest {
        as_of_ledger_seq: as_of,
        post_time_start: None,
        post_time_end: None,
        page_size,
        page_token: String::new(),
    }
}

/// Every account of a summary, following its page tokens, and the pages.
async fn whole_summary(
    app: &TestApp,
    request: pb::GetLedgerSummaryRequest,
) -> (Vec<pb::AccountLedgerSummary>, Vec<pb::LedgerSummary>) {
    let mut accounts = Vec::new();
    let mut pages = Vec::new();
    let mut request = request;
    loop {
        let page = app
            .account
            .clone()
            .get_ledger_summary(request.clone())
            .await
            .expect("get ledger summary")
            .into_inner();
        accounts.extend(page.accounts.clone());
        let next = page.next_page_token.clone();
        pages.push(page);
        if next.is_empty() {
            return (accounts, pages);
        }
        request.page_token = next;
    }
}

/// Every entry of one account through ListEntries.
async fn account_entry_count(app: &TestApp, account_id: &str) -> i64 {
    let mut count = 0;
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
        count += page.entries.len() as i64;
        if page.next_page_token.is_empty() {
            return count;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_summary_agrees_with_balances_and_entries_as_of_any_sequence_and_period() {
    let app = TestApp::spawn().await;
    let first = app.funded_account("100").await;
    let second = app.funded_account("50").await;
    app.clock.advance(chrono::Duration::minutes(1));
    let transfer = app
        .transfer(&first.account_id, &second.account_id, "30")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Completed as i32);
    app.clock.advance(chrono::Duration::minutes(1));
    let transfer = app
        .transfer(&second.account_id, &first.account_id, "5")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Completed as i32);

    // As of the head: what GetBalance and ListEntries say, account by account.
    let (accounts, pages) = whole_summary(&app, summary_request(0, 1)).await;
    assert_eq!(accounts.len(), 3, "two customers' accounts and settlement");
    assert_eq!(pages.len(), 3, "one account a page");
    let head = pages[0].head_ledger_seq;
    assert_eq!(pages[0].as_of_ledger_seq, head);
    let total_entries = app.count("account.entry").await;
    for account in &accounts {
        let balance = app.balance(&account.account_id).await;
        assert_eq!(
            Some(account.balance.as_str()),
            balance.ledger.as_ref().map(|m| m.amount.as_str()),
            "{}",
            account.account_id
        );
        let entries = account_entry_count(&app, &account.account_id).await;
        assert_eq!(account.entry_count, entries);
        assert_eq!(account.last_account_seq, entries);
        assert_eq!(account.currency, "USD");
    }
    assert!(
        accounts.windows(2).all(|pair| {
            pair[0].account_id.parse::<Uuid>().unwrap()
                < pair[1].account_id.parse::<Uuid>().unwrap()
        }),
        "accounts by id"
    );
    for page in &pages {
        assert_eq!(
            page.currencies, pages[0].currencies,
            "currencies on every page"
        );
        assert_eq!(page.as_of_ledger_seq, head);
    }
    let usd = &pages[0].currencies;
    assert_eq!(usd.len(), 1);
    assert_eq!(usd[0].currency, "USD");
    assert_eq!(usd[0].debits, usd[0].credits);
    assert_eq!(usd[0].debits, "185.00");
    assert_eq!(usd[0].entry_count, total_entries);
    let (unpaged, _) = whole_summary(&app, summary_request(0, 0)).await;
    assert_eq!(unpaged, accounts);

    // As of the second journal: both deposits, neither transfer.
    let feed = all_entries(&app, entries_request(0, 0, "", 0)).await;
    let mut journal_seqs: Vec<i64> = feed.iter().map(|e| e.ledger_seq).collect();
    journal_seqs.dedup();
    assert_eq!(journal_seqs.len(), 4);
    let (earlier, earlier_pages) = whole_summary(&app, summary_request(journal_seqs[1], 0)).await;
    assert_eq!(earlier_pages[0].as_of_ledger_seq, journal_seqs[1]);
    assert_eq!(earlier_pages[0].head_ledger_seq, head);
    let by_account: HashMap<&str, &pb::AccountLedgerSummary> =
        earlier.iter().map(|a| (a.account_id.as_str(), a)).collect();
    assert_eq!(by_account[first.account_id.as_str()].balance, "100.00");
    assert_eq!(by_account[first.account_id.as_str()].entry_count, 1);
    assert_eq!(by_account[second.account_id.as_str()].balance, "50.00");
    let settlement = earlier
        .iter()
        .find(|a| a.account_id != first.account_id && a.account_id != second.account_id)
        .expect("the settlement account");
    assert_eq!(settlement.balance, "-150.00");
    assert_eq!(settlement.last_account_seq, 2);
    assert_eq!(earlier_pages[0].currencies[0].debits, "150.00");
    assert_eq!(earlier_pages[0].currencies[0].entry_count, 4);

    // A post-time window [start, end) counts only the first transfer.
    let first_transfer = feed
        .iter()
        .find(|e| e.ledger_seq == journal_seqs[2])
        .expect("the first transfer's entries");
    let second_transfer = feed
        .iter()
        .find(|e| e.ledger_seq == journal_seqs[3])
        .expect("the second transfer's entries");
    let mut window = summary_request(0, 0);
    window.post_time_start = first_transfer.post_time;
    window.post_time_end = second_transfer.post_time;
    let (inside, inside_pages) = whole_summary(&app, window).await;
    assert_eq!(inside.len(), 2);
    for account in &inside {
        assert_eq!(account.entry_count, 1);
        let expected = if account.account_id == first.account_id {
            "-30.00"
        } else {
            "30.00"
        };
        assert_eq!(account.balance, expected);
    }
    let totals = &inside_pages[0].currencies[0];
    assert_eq!(
        (totals.debits.as_str(), totals.credits.as_str()),
        ("30.00", "30.00")
    );
    assert_eq!(totals.entry_count, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_summary_names_a_bad_sequence_window_or_page_size() {
    let app = TestApp::spawn().await;
    let now = prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    };
    let earlier = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };
    let mut backwards = summary_request(0, 0);
    backwards.post_time_start = Some(now);
    backwards.post_time_end = Some(earlier);
    let mut malformed = summary_request(-1, -1);
    malformed.post_time_start = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    });
    let cases: [(pb::GetLedgerSummaryRequest, &[&str]); 2] = [
        (backwards, &["post_time_end"]),
        (
            malformed,
            &["as_of_ledger_seq", "post_time_start", "page_size"],
        ),
    ];
    for (request, fields) in cases {
        let status = app
            .account
            .clone()
            .get_ledger_summary(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(violated_fields(&status), fields, "{request:?}");
    }
    let empty = app
        .account
        .clone()
        .get_ledger_summary(summary_request(0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (empty.as_of_ledger_seq, empty.head_ledger_seq),
        (0, 0),
        "an empty ledger is as of 0"
    );
    assert!(empty.accounts.is_empty() && empty.currencies.is_empty());
}
