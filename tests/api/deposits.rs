//! AccountService's ledger side: deposits from the settlement account, entries
//! with running balances, and a ledger nobody can rewrite or unbalance.

use corebank_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, key, reason, usd, violated_fields};

fn amount(money: &Option<pb::Money>) -> &str {
    &money.as_ref().expect("money is set").amount
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_credits_the_account_from_the_settlement_account() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    let journal = app.deposit(&account.account_id, "125.5").await;
    assert_eq!(journal.kind, pb::JournalKind::Deposit as i32);
    assert_eq!(journal.entries.len(), 2);
    let credit = journal
        .entries
        .iter()
        .find(|e| e.account_id == account.account_id)
        .expect("an entry on the account");
    assert_eq!(credit.direction, pb::EntryDirection::Credit as i32);
    assert_eq!(amount(&credit.amount), "125.50");
    assert_eq!(amount(&credit.running_balance), "125.50");
    let settlement = journal
        .entries
        .iter()
        .find(|e| e.account_id != account.account_id)
        .expect("an entry on the settlement account");
    assert_eq!(settlement.direction, pb::EntryDirection::Debit as i32);
    assert_eq!(amount(&settlement.running_balance), "-125.50");

    let settlement_account = app
        .account
        .clone()
        .get_account(pb::GetAccountRequest {
            account_id: settlement.account_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        settlement_account.product,
        pb::AccountProduct::Settlement as i32
    );
    assert_eq!(
        settlement_account.customer_id,
        uuid::Uuid::nil().to_string()
    );
    assert_eq!(
        amount(&app.balance(&account.account_id).await.ledger),
        "125.50"
    );

    let fetched = app
        .account
        .clone()
        .get_journal(pb::GetJournalRequest {
            journal_id: journal.journal_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, journal);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_settlement_account_serves_every_deposit_in_a_currency() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let first = app.open_account(&customer_id, "USD").await;
    let second = app.open_account(&customer_id, "USD").await;
    app.deposit(&first.account_id, "10").await;
    app.deposit(&second.account_id, "15").await;
    let settlements: i64 = sqlx::query_scalar(
        "select count(*) from account.account where product = 'settlement' and currency = 'USD'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(settlements, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_with_bad_fields_names_each_field_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let status = app
        .account
        .clone()
        .post_deposit(pb::PostDepositRequest {
            account_id: String::new(),
            idempotency_key: String::new(),
            amount: Some(pb::Money {
                currency: "XXX".to_owned(),
                amount: String::new(),
            }),
            reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "account_id",
            "idempotency_key",
            "amount.currency",
            "amount.amount"
        ]
    );

    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    for bad in ["0", "-1", "1.005", "1e3", "abc"] {
        let status = app
            .account
            .clone()
            .post_deposit(pb::PostDepositRequest {
                account_id: account.account_id.clone(),
                idempotency_key: key(),
                amount: Some(usd(bad)),
                reference: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["amount.amount"], "{bad}");
    }
    let status = app
        .account
        .clone()
        .post_deposit(pb::PostDepositRequest {
            account_id: account.account_id.clone(),
            idempotency_key: key(),
            amount: None,
            reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&status), ["amount"]);
    assert_eq!(app.count("account.journal").await, 0);
    assert_eq!(app.count("account.entry").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_in_another_currency_than_the_account_is_refused() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "EUR").await;
    let status = app
        .account
        .clone()
        .post_deposit(pb::PostDepositRequest {
            account_id: account.account_id.clone(),
            idempotency_key: key(),
            amount: Some(usd("10")),
            reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "CURRENCY_MISMATCH");
    assert_eq!(app.count("account.journal").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_to_an_unknown_account_is_not_found() {
    let app = TestApp::spawn().await;
    let status = app
        .account
        .clone()
        .post_deposit(pb::PostDepositRequest {
            account_id: uuid::Uuid::now_v7().to_string(),
            idempotency_key: key(),
            amount: Some(usd("10")),
            reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "ACCOUNT_NOT_FOUND");
    assert_eq!(app.count("account.journal").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_are_listed_newest_first_with_their_running_balance() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    for amount in ["1", "2", "3", "4", "5"] {
        app.deposit(&account.account_id, amount).await;
    }
    let mut balances = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .account
            .clone()
            .list_entries(pb::ListEntriesRequest {
                account_id: account.account_id.clone(),
                page_size: 2,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        balances.extend(
            page.entries
                .iter()
                .map(|e| amount(&e.running_balance).to_owned()),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(balances, ["15.00", "10.00", "6.00", "3.00", "1.00"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_role_cannot_rewrite_the_ledger() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    app.deposit(&account.account_id, "10").await;
    let service = app.db.service_pool(&corebank_account::SCHEMA, 1).await;
    for statement in [
        "update entry set amount = 1",
        "delete from entry",
        "update journal set reference = 'x'",
        "delete from journal",
    ] {
        let error = sqlx::query(statement).execute(&service).await.unwrap_err();
        assert_eq!(
            error.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "{statement}"
        );
    }
    // Even the owner trips the append-only triggers.
    let error = sqlx::query("update account.entry set amount = 1")
        .execute(&app.owner)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unbalanced_journal_cannot_be_committed() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account = app.open_account(&customer_id, "USD").await;
    let mut tx = app.owner.begin().await.unwrap();
    let journal_id = uuid::Uuid::now_v7();
    sqlx::query("insert into account.journal (journal_id, kind, reference, created_at) values ($1, 'deposit', '', now())")
        .bind(journal_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "insert into account.entry (entry_id, journal_id, account_id, currency, direction, amount, balance_after,
                                    account_seq, created_at)
         values ($1, $2, $3::uuid, 'USD', 'credit', 5, 5, 1, now())",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(journal_id)
    .bind(&account.account_id)
    .execute(&mut *tx)
    .await
    .unwrap();
    let error = tx.commit().await.unwrap_err();
    assert!(error.to_string().contains("does not balance"), "{error}");
    assert_eq!(app.count("account.journal").await, 0);
}
