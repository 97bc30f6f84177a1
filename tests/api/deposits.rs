//! The ledger side of deposits (a saga's deposit command): credits from the
//! settlement account, entries with running balances, and a ledger nobody can
//! rewrite or unbalance.

use corebank_proto::v1 as pb;

use crate::helpers::{SagaCommands, TestApp, rejected, usd};

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
async fn a_deposit_command_that_is_malformed_in_another_currency_or_for_no_account_writes_nothing()
{
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let euros = app.open_account(&customer_id, "EUR").await.account_id;
    let deposit =
        |account_id: &str, money: pb::Money| SagaCommands::new().deposit(account_id, money);
    for bad in ["0", "-1", "1.005", "1e3", "abc", ""] {
        let eur = pb::Money {
            currency: "EUR".to_owned(),
            amount: bad.to_owned(),
        };
        let reply = app.command(&deposit(&euros, eur)).await;
        assert_eq!(rejected(&reply), "INVALID_COMMAND", "{bad}");
        assert!(reply.detail.contains("amount.amount"), "{bad}: {reply:?}");
    }
    let reply = app.command(&deposit("", usd("10"))).await;
    assert_eq!(rejected(&reply), "INVALID_COMMAND");
    assert!(reply.detail.contains("account_id"), "{reply:?}");
    let reply = app.command(&deposit(&euros, usd("10"))).await;
    assert_eq!(rejected(&reply), "CURRENCY_MISMATCH");
    let unknown = uuid::Uuid::now_v7().to_string();
    let reply = app.command(&deposit(&unknown, usd("10"))).await;
    assert_eq!(rejected(&reply), "ACCOUNT_NOT_FOUND");
    assert_eq!(app.count("account.journal").await, 0);
    assert_eq!(app.count("account.entry").await, 0);
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
