//! The ledger as a feed for reporting: journal events of schema version 2,
//! `ListLedgerEntries` in ledger order, and account status events (the
//! summary is in `ledger_summary`).

use std::collections::{HashMap, HashSet};

use corebank_proto::v1 as pb;
use corebank_proto::wire;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{EventTap, TestApp, key, violated_fields};

pub(crate) fn entries_request(
    after: i64,
    up_to: i64,
    account_id: &str,
    page_size: i32,
) -> pb::ListLedgerEntriesRequest {
    pb::ListLedgerEntriesRequest {
        after_ledger_seq: after,
        up_to_ledger_seq: up_to,
        account_id: account_id.to_owned(),
        page_size,
        page_token: String::new(),
    }
}

/// Every entry a listing returns, following its page tokens.
pub(crate) async fn all_entries(
    app: &TestApp,
    request: pb::ListLedgerEntriesRequest,
) -> Vec<pb::LedgerEntry> {
    let mut entries = Vec::new();
    let mut request = request;
    loop {
        let page = app
            .account
            .clone()
            .list_ledger_entries(request.clone())
            .await
            .expect("list ledger entries")
            .into_inner();
        assert!(
            page.entries.len() <= request.page_size.max(1) as usize || request.page_size == 0,
            "a page holds at most page_size entries"
        );
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        request.page_token = page.next_page_token;
    }
}

fn ledger_order(entry: &pb::LedgerEntry) -> (i64, Uuid) {
    (
        entry.ledger_seq,
        entry.account_id.parse().expect("account id is a uuid"),
    )
}

/// The signed amount of a feed entry, as the journal event writes it.
fn signed(entry: &pb::LedgerEntry) -> String {
    if entry.direction == pb::EntryDirection::Debit as i32 {
        format!("-{}", entry.amount)
    } else {
        entry.amount.clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_posted_journals_event_carries_schema_version_two_and_the_positions_the_feed_lists() {
    let app = TestApp::spawn().await;
    let tap = EventTap::bind(&app.namespace, &[wire::event::JOURNAL_POSTED]).await;
    let source = app.funded_account("100").await;
    let customer_id = app.verified_customer().await;
    let destination = app.open_account(&customer_id, "USD").await;
    app.clock.advance(chrono::Duration::minutes(1));
    let transfer = app
        .transfer(&source.account_id, &destination.account_id, "40")
        .await;
    assert_eq!(transfer.status, pb::TransactionStatus::Completed as i32);

    let feed: HashMap<String, pb::LedgerEntry> = all_entries(&app, entries_request(0, 0, "", 0))
        .await
        .into_iter()
        .map(|entry| (entry.entry_id.clone(), entry))
        .collect();
    assert_eq!(feed.len(), 4, "a deposit and a transfer, two legs each");
    let mut journals = Vec::new();
    for _ in 0..2 {
        let delivered = tap.next().await;
        assert_eq!(delivered.routing_key, wire::event::JOURNAL_POSTED);
        assert_eq!(delivered.schema_version, Some(2));
        let event: pb::JournalPostedEvent = delivered.decode();
        assert!(event.ledger_seq > 0);
        let post_time = event.post_time.expect("a post time");
        assert_eq!(event.entries.len(), 2);
        for posted in &event.entries {
            let listed = feed
                .get(&posted.entry_id)
                .unwrap_or_else(|| panic!("entry {} is in the feed", posted.entry_id));
            assert_eq!(listed.journal_id, event.journal_id);
            assert_eq!(listed.ledger_seq, event.ledger_seq);
            assert_eq!(listed.account_id, posted.account_id);
            assert_eq!(listed.account_seq, posted.account_seq);
            assert_eq!(signed(listed), posted.amount);
            assert_eq!(listed.balance_after, posted.balance_after);
            assert_eq!(listed.transaction_id, event.transaction_id);
            assert_eq!(listed.post_time, Some(post_time));
            assert_eq!(listed.currency, event.currency);
        }
        journals.push(event);
    }
    tap.close().await;

    let transfer_event = journals
        .iter()
        .find(|event| event.kind == "transfer")
        .expect("the transfer's event");
    assert_eq!(transfer_event.transaction_id, transfer.transaction_id);
    let deposit_event = journals
        .iter()
        .find(|event| event.kind == "deposit")
        .expect("the deposit's event");
    assert!(deposit_event.ledger_seq < transfer_event.ledger_seq);
    let seconds = |event: &pb::JournalPostedEvent| event.post_time.map(|time| time.seconds);
    assert!(seconds(deposit_event) < seconds(transfer_event));
    // The source's second entry is the transfer's debit, towards the destination.
    let debit = transfer_event
        .entries
        .iter()
        .find(|posted| posted.account_id == source.account_id)
        .expect("the debit");
    assert_eq!(debit.account_seq, 2);
    assert_eq!(debit.amount, "-40.00");
    assert_eq!(
        feed[&debit.entry_id].counterparty_account_id,
        destination.account_id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_feed_pages_through_every_entry_in_ledger_order_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let first = app.funded_account("100").await;
    let second = app.funded_account("50").await;
    for (from, to, amount) in [
        (&first, &second, "10"),
        (&second, &first, "5"),
        (&first, &second, "2.5"),
    ] {
        let transfer = app.transfer(&from.account_id, &to.account_id, amount).await;
        assert_eq!(transfer.status, pb::TransactionStatus::Completed as i32);
    }

    let everything = all_entries(&app, entries_request(0, 0, "", 0)).await;
    let paged = all_entries(&app, entries_request(0, 0, "", 3)).await;
    assert_eq!(paged, everything, "pages of three join into the whole feed");
    assert_eq!(everything.len() as i64, app.count("account.entry").await);
    assert_eq!(everything.len(), 10, "five journals, two legs each");
    let ids: HashSet<&str> = everything.iter().map(|e| e.entry_id.as_str()).collect();
    assert_eq!(ids.len(), everything.len(), "no entry twice");
    assert!(
        everything
            .windows(2)
            .all(|pair| ledger_order(&pair[0]) < ledger_order(&pair[1])),
        "ledger order: journal sequence, then account id"
    );
    let head = app
        .account
        .clone()
        .list_ledger_entries(entries_request(0, 0, "", 1))
        .await
        .unwrap()
        .into_inner()
        .head_ledger_seq;
    assert_eq!(Some(head), everything.last().map(|e| e.ledger_seq));

    // One account: its entries only, in its own sequence 1, 2, 3, …
    let mine = all_entries(&app, entries_request(0, 0, &first.account_id, 2)).await;
    let expected: Vec<_> = everything
        .iter()
        .filter(|e| e.account_id == first.account_id)
        .cloned()
        .collect();
    assert_eq!(mine, expected);
    let sequences: Vec<i64> = mine.iter().map(|e| e.account_seq).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);

    // Bounds: after is exclusive, up_to inclusive.
    let journal_seqs: Vec<i64> = {
        let mut seqs: Vec<i64> = everything.iter().map(|e| e.ledger_seq).collect();
        seqs.dedup();
        seqs
    };
    assert_eq!(journal_seqs.len(), 5);
    let (after, up_to) = (journal_seqs[1], journal_seqs[3]);
    let bounded = all_entries(&app, entries_request(after, up_to, "", 1)).await;
    let expected: Vec<_> = everything
        .iter()
        .filter(|e| e.ledger_seq > after && e.ledger_seq <= up_to)
        .cloned()
        .collect();
    assert_eq!(bounded, expected);
    assert_eq!(bounded.len(), 4);
    let resumed = all_entries(&app, entries_request(journal_seqs[3], 0, "", 0)).await;
    assert_eq!(resumed, everything[8..].to_vec());

    // A token is bound to the filters it was issued for.
    let page = app
        .account
        .clone()
        .list_ledger_entries(entries_request(0, 0, &first.account_id, 1))
        .await
        .unwrap()
        .into_inner();
    let mut other = entries_request(0, 0, &second.account_id, 1);
    other.page_token = page.next_page_token;
    let status = app
        .account
        .clone()
        .list_ledger_entries(other)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["page_token"]);

    // A listing to the head stays on the head its first page saw: a journal
    // posted meanwhile is left for the next listing, which resumes after it.
    let first_page = app
        .account
        .clone()
        .list_ledger_entries(entries_request(0, 0, "", 4))
        .await
        .unwrap()
        .into_inner();
    let late = app.deposit_saga(&second.account_id, "1").await;
    assert_eq!(late.status, pb::TransactionStatus::Completed as i32);
    let mut rest = entries_request(0, 0, "", 4);
    rest.page_token = first_page.next_page_token;
    let mut listed = first_page.entries;
    listed.extend(all_entries(&app, rest).await);
    assert_eq!(listed, everything);
    let next = all_entries(&app, entries_request(journal_seqs[4], 0, "", 0)).await;
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|e| e.transaction_id == late.transaction_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_feed_names_a_bad_page_size_account_id_or_sequence() {
    let app = TestApp::spawn().await;
    let cases: [(pb::ListLedgerEntriesRequest, &[&str]); 4] = [
        (entries_request(0, 0, "", -1), &["page_size"]),
        (entries_request(0, 0, "not-a-uuid", 0), &["account_id"]),
        (
            entries_request(-1, -2, "", 0),
            &["after_ledger_seq", "up_to_ledger_seq"],
        ),
        (
            entries_request(0, 0, "nope", -5),
            &["account_id", "page_size"],
        ),
    ];
    for (request, fields) in cases {
        let status = app
            .account
            .clone()
            .list_ledger_entries(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(violated_fields(&status), fields, "{request:?}");
    }
    let mut forged = entries_request(0, 0, "", 0);
    forged.page_token = "bm90LWEtdG9rZW4".to_owned();
    let status = app
        .account
        .clone()
        .list_ledger_entries(forged)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["page_token"]);

    let empty = app
        .account
        .clone()
        .list_ledger_entries(entries_request(0, 0, "", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.head_ledger_seq, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn freeze_unfreeze_and_close_each_publish_one_status_event_and_a_replay_publishes_nothing() {
    let app = TestApp::spawn().await;
    let tap = EventTap::bind(
        &app.namespace,
        &[
            wire::event::ACCOUNT_FROZEN,
            wire::event::ACCOUNT_UNFROZEN,
            wire::event::ACCOUNT_CLOSED,
        ],
    )
    .await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    let request = |reason: &str| pb::AccountActionRequest {
        account_id: account.account_id.clone(),
        idempotency_key: key(),
        actor: "ops-3".to_owned(),
        reason: reason.to_owned(),
    };

    let freeze = request("court order 12");
    let unfreeze = request("order lifted");
    let close = request("customer asked");
    let mut client = app.account.clone();
    for _ in 0..2 {
        client.freeze_account(freeze.clone()).await.unwrap();
    }
    for _ in 0..2 {
        client.unfreeze_account(unfreeze.clone()).await.unwrap();
    }
    for _ in 0..2 {
        client.close_account(close.clone()).await.unwrap();
    }

    for (routing_key, from, to, reason) in [
        (
            wire::event::ACCOUNT_FROZEN,
            "active",
            "frozen",
            "court order 12",
        ),
        (
            wire::event::ACCOUNT_UNFROZEN,
            "frozen",
            "active",
            "order lifted",
        ),
        (
            wire::event::ACCOUNT_CLOSED,
            "active",
            "closed",
            "customer asked",
        ),
    ] {
        let delivered = tap.next().await;
        assert_eq!(delivered.routing_key, routing_key);
        let event: pb::AccountStatusChangedEvent = delivered.decode();
        assert_eq!(event.account_id, account.account_id);
        assert_eq!(
            (event.from_status.as_str(), event.to_status.as_str()),
            (from, to)
        );
        // The caller's token subject, not the request's `actor`.
        assert_eq!(event.actor, crate::helpers::OPERATOR);
        assert_eq!(event.reason, reason);
        assert!(event.change_time.is_some());
    }
    tap.nothing_more().await;
    tap.close().await;
}
