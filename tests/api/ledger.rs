//! The ledger's invariants (every journal balances, every balance is the sum
//! of its entries) under any sequence of operations, and idempotency of the
//! methods that move money.

use std::collections::HashMap;

use corebank_proto::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{TestApp, key, reason};

fn usd(amount: &str) -> Option<pb::Money> {
    Some(pb::Money {
        currency: "USD".to_owned(),
        amount: amount.to_owned(),
    })
}

fn hold_request(account_id: &str, amount: &str) -> pb::PlaceHoldRequest {
    pb::PlaceHoldRequest {
        account_id: account_id.to_owned(),
        idempotency_key: key(),
        amount: usd(amount),
        reference: String::new(),
        ttl: None,
    }
}

/// Every way the ledger could disagree with itself, as readable lines; empty
/// when it is consistent.
async fn ledger_violations(owner: &PgPool) -> Vec<String> {
    let mut problems = Vec::new();
    let unbalanced: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "select journal_id, currency from account.entry group by journal_id, currency
         having sum(case direction when 'credit' then amount else -amount end) <> 0",
    )
    .fetch_all(owner)
    .await
    .expect("check journals");
    problems.extend(
        unbalanced
            .iter()
            .map(|(journal, currency)| format!("journal {journal} unbalanced in {currency}")),
    );
    let drifted: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "select a.account_id from account.account a
         left join account.entry e on e.account_id = a.account_id
         group by a.account_id, a.ledger_balance
         having a.ledger_balance <> coalesce(sum(case e.direction when 'credit' then e.amount else -e.amount end), 0)",
    )
    .fetch_all(owner)
    .await
    .expect("check balances");
    problems.extend(
        drifted
            .iter()
            .map(|(account,)| format!("account {account} ledger is not the sum of its entries")),
    );
    let wrong_running: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "select a.account_id from account.account a
         join lateral (select balance_after from account.entry e where e.account_id = a.account_id
                       order by account_seq desc limit 1) last on true
         where last.balance_after <> a.ledger_balance",
    )
    .fetch_all(owner)
    .await
    .expect("check running balances");
    problems.extend(
        wrong_running
            .iter()
            .map(|(account,)| format!("account {account} last running balance is off")),
    );
    let wrong_held: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "select a.account_id from account.account a
         left join account.hold h on h.account_id = a.account_id and h.status = 'active'
         group by a.account_id, a.held_amount
         having a.held_amount <> coalesce(sum(h.amount), 0)",
    )
    .fetch_all(owner)
    .await
    .expect("check held amounts");
    problems.extend(
        wrong_held
            .iter()
            .map(|(account,)| format!("account {account} held amount is not its active holds")),
    );
    let total: Option<rust_decimal::Decimal> = sqlx::query_scalar(
        "select sum(case direction when 'credit' then amount else -amount end) from account.entry",
    )
    .fetch_one(owner)
    .await
    .expect("sum entries");
    if total.is_some_and(|total| !total.is_zero()) {
        problems.push(format!("all entries sum to {total:?}, not zero"));
    }
    problems
}

#[tokio::test(flavor = "multi_thread")]
async fn every_journal_balances_and_every_balance_is_the_sum_of_its_entries() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let source = app.open_account(&customer_id, "USD").await.account_id;
    let destination = app.open_account(&customer_id, "USD").await.account_id;
    app.deposit(&source, "500").await;
    for (amount, to) in [("120", destination.as_str()), ("30.5", "")] {
        let hold = app
            .account
            .clone()
            .place_hold(hold_request(&source, amount))
            .await
            .unwrap()
            .into_inner();
        app.account
            .clone()
            .capture_hold(pb::CaptureHoldRequest {
                hold_id: hold.hold_id,
                idempotency_key: key(),
                destination_account_id: to.to_owned(),
                reference: String::new(),
            })
            .await
            .unwrap();
    }
    assert_eq!(app.count("account.journal").await, 3);
    assert_eq!(app.count("account.entry").await, 6);
    assert_eq!(ledger_violations(&app.owner).await, Vec::<String>::new());
}

#[derive(Debug, Clone)]
enum Op {
    Deposit { account: usize, cents: i64 },
    Hold { account: usize, cents: i64 },
    Capture { hold: usize, to: Option<usize> },
    Release { hold: usize },
    Withdraw { account: usize, cents: i64 },
}

const ACCOUNTS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let cents = 1_i64..30_000;
    prop_oneof![
        (0..ACCOUNTS, cents.clone()).prop_map(|(account, cents)| Op::Deposit { account, cents }),
        (0..ACCOUNTS, cents.clone()).prop_map(|(account, cents)| Op::Hold { account, cents }),
        (0_usize..8, proptest::option::of(0..ACCOUNTS))
            .prop_map(|(hold, to)| Op::Capture { hold, to }),
        (0_usize..8).prop_map(|hold| Op::Release { hold }),
        (0..ACCOUNTS, cents).prop_map(|(account, cents)| Op::Withdraw { account, cents }),
    ]
}

fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// What the ledger should say, in cents, from the operations that succeeded.
#[derive(Debug, Default)]
struct Model {
    ledger: HashMap<String, i64>,
    held: HashMap<String, i64>,
}

/// A business refusal is part of the game; anything else is a bug.
fn refused(status: &tonic::Status) -> Result<(), TestCaseError> {
    match (status.code(), reason(status).as_str()) {
        (Code::FailedPrecondition, "INSUFFICIENT_FUNDS" | "HOLD_NOT_ACTIVE") => Ok(()),
        _ => Err(TestCaseError::fail(format!("unexpected error: {status:?}"))),
    }
}

async fn run_case(app: &TestApp, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let customer_id = app.verified_customer().await;
    let mut accounts = Vec::new();
    for overdraft in ["", "100", ""] {
        let account = app
            .account
            .clone()
            .open_account(pb::OpenAccountRequest {
                idempotency_key: key(),
                customer_id: customer_id.clone(),
                currency: "USD".to_owned(),
                product: pb::AccountProduct::Checking as i32,
                overdraft_limit: overdraft.to_owned(),
            })
            .await
            .map_err(|status| TestCaseError::fail(format!("open account: {status:?}")))?
            .into_inner();
        accounts.push(account.account_id);
    }
    let overdraft = [0_i64, 10_000, 0];
    let mut model = Model::default();
    let mut holds: Vec<(String, String, i64)> = Vec::new();
    let mut client = app.account.clone();
    for op in ops {
        match op {
            Op::Deposit { account, cents } => {
                app.deposit(&accounts[account], &format_cents(cents)).await;
                *model.ledger.entry(accounts[account].clone()).or_default() += cents;
            }
            Op::Hold { account, cents } => {
                let account_id = &accounts[account];
                let available = model.ledger.get(account_id).copied().unwrap_or(0)
                    - model.held.get(account_id).copied().unwrap_or(0)
                    + overdraft[account];
                match client
                    .place_hold(hold_request(account_id, &format_cents(cents)))
                    .await
                {
                    Ok(hold) => {
                        prop_assert!(
                            cents <= available,
                            "hold of {cents} granted with {available} available"
                        );
                        holds.push((hold.into_inner().hold_id, account_id.clone(), cents));
                        *model.held.entry(account_id.clone()).or_default() += cents;
                    }
                    Err(status) => {
                        refused(&status)?;
                        prop_assert!(
                            cents > available,
                            "hold of {cents} refused with {available} available"
                        );
                    }
                }
            }
            Op::Capture { .. } | Op::Release { .. } if holds.is_empty() => {}
            Op::Capture { hold, to } => {
                let (hold_id, source, cents) = holds[hold % holds.len()].clone();
                let destination = to.map(|to| accounts[to].clone()).filter(|to| *to != source);
                let request = pb::CaptureHoldRequest {
                    hold_id,
                    idempotency_key: key(),
                    destination_account_id: destination.clone().unwrap_or_default(),
                    reference: String::new(),
                };
                match client.capture_hold(request).await {
                    Ok(_) => {
                        *model.held.entry(source.clone()).or_default() -= cents;
                        *model.ledger.entry(source).or_default() -= cents;
                        if let Some(destination) = destination {
                            *model.ledger.entry(destination).or_default() += cents;
                        }
                    }
                    Err(status) => refused(&status)?,
                }
            }
            Op::Release { hold } => {
                let (hold_id, source, cents) = holds[hold % holds.len()].clone();
                let request = pb::ReleaseHoldRequest {
                    hold_id,
                    idempotency_key: key(),
                    reason: String::new(),
                };
                match client.release_hold(request).await {
                    Ok(_) => *model.held.entry(source).or_default() -= cents,
                    Err(status) => refused(&status)?,
                }
            }
            Op::Withdraw { account, cents } => {
                let account_id = accounts[account].clone();
                let placed = client
                    .place_hold(hold_request(&account_id, &format_cents(cents)))
                    .await;
                if let Err(status) = &placed {
                    refused(status)?;
                }
                if let Ok(hold) = placed {
                    let request = pb::CaptureHoldRequest {
                        hold_id: hold.into_inner().hold_id,
                        idempotency_key: key(),
                        destination_account_id: String::new(),
                        reference: "atm".to_owned(),
                    };
                    client.capture_hold(request).await.map_err(|status| {
                        TestCaseError::fail(format!("withdrawal capture: {status:?}"))
                    })?;
                    *model.ledger.entry(account_id).or_default() -= cents;
                }
            }
        }
    }
    for account_id in &accounts {
        let balance = client
            .get_balance(pb::GetBalanceRequest {
                account_id: account_id.clone(),
            })
            .await
            .map_err(|status| TestCaseError::fail(format!("get balance: {status:?}")))?
            .into_inner();
        let ledger = model.ledger.get(account_id).copied().unwrap_or(0);
        let held = model.held.get(account_id).copied().unwrap_or(0);
        prop_assert_eq!(&balance.ledger.unwrap().amount, &format_cents(ledger));
        prop_assert_eq!(&balance.held.unwrap().amount, &format_cents(held));
        prop_assert_eq!(
            &balance.available.unwrap().amount,
            &format_cents(ledger - held)
        );
    }
    let problems = ledger_violations(&app.owner).await;
    prop_assert!(problems.is_empty(), "{problems:?}");
    Ok(())
}

#[test]
fn any_sequence_of_operations_keeps_every_journal_balanced_and_every_balance_equal_to_its_entries()
{
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let app = runtime.block_on(TestApp::spawn());
    let config = ProptestConfig {
        max_shrink_iters: 16,
        ..ProptestConfig::with_cases(12)
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        runtime.block_on(run_case(&app, ops))
    });
    drop(app);
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_hold_with_the_same_key_returns_the_first_hold_and_reserves_once() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account_id = app.open_account(&customer_id, "USD").await.account_id;
    app.deposit(&account_id, "100").await;
    let request = hold_request(&account_id, "40");
    let first = app
        .account
        .clone()
        .place_hold(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = app
        .account
        .clone()
        .place_hold(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    assert_eq!(app.count("account.hold").await, 1);
    let balance = app
        .account
        .clone()
        .get_balance(pb::GetBalanceRequest {
            account_id: account_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.held.unwrap().amount, "40.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_deposit_with_the_same_key_returns_the_first_journal_and_credits_once() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account_id = app.open_account(&customer_id, "USD").await.account_id;
    let request = pb::PostDepositRequest {
        account_id: account_id.clone(),
        idempotency_key: key(),
        amount: usd("75"),
        reference: "payroll".to_owned(),
    };
    let first = app
        .account
        .clone()
        .post_deposit(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = app
        .account
        .clone()
        .post_deposit(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    assert_eq!(app.count("account.journal").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_reused_with_another_request_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account_id = app.open_account(&customer_id, "USD").await.account_id;
    app.deposit(&account_id, "100").await;
    let request = hold_request(&account_id, "40");
    app.account
        .clone()
        .place_hold(request.clone())
        .await
        .unwrap();
    let other = pb::PlaceHoldRequest {
        amount: usd("41"),
        ..request.clone()
    };
    let status = app.account.clone().place_hold(other).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    let deposit = pb::PostDepositRequest {
        account_id: account_id.clone(),
        idempotency_key: request.idempotency_key.clone(),
        amount: usd("40"),
        reference: String::new(),
    };
    let status = app.account.clone().post_deposit(deposit).await.unwrap_err();
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("account.hold").await, 1);
    assert_eq!(app.count("account.journal").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lifecycle_key_reused_for_another_action_is_refused() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account_id = app.open_account(&customer_id, "USD").await.account_id;
    let freeze = pb::AccountActionRequest {
        account_id: account_id.clone(),
        idempotency_key: key(),
        actor: "ops-3".to_owned(),
        reason: "check".to_owned(),
    };
    let first = app
        .account
        .clone()
        .freeze_account(freeze.clone())
        .await
        .unwrap()
        .into_inner();
    let replay = app
        .account
        .clone()
        .freeze_account(freeze.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, replay);
    let status = app
        .account
        .clone()
        .unfreeze_account(freeze)
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_concurrent_holds_with_one_key_place_exactly_one_hold() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account_id = app.open_account(&customer_id, "USD").await.account_id;
    app.deposit(&account_id, "100").await;
    let request = hold_request(&account_id, "10");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut client = app.account.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(
            async move { client.place_hold(request).await },
        ));
    }
    let mut hold_ids = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(hold) => hold_ids.push(hold.into_inner().hold_id),
            Err(status) => assert_eq!(reason(&status), "IDEMPOTENCY_KEY_IN_USE", "{status:?}"),
        }
    }
    assert!(!hold_ids.is_empty());
    assert!(hold_ids.iter().all(|id| *id == hold_ids[0]));
    assert_eq!(app.count("account.hold").await, 1);
    let held: rust_decimal::Decimal =
        sqlx::query_scalar("select held_amount from account.account where account_id = $1::uuid")
            .bind(&account_id)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(held, rust_decimal::Decimal::from(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_transfers_in_both_directions_neither_deadlock_nor_lose_an_update() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let first = app.open_account(&customer_id, "USD").await.account_id;
    let second = app.open_account(&customer_id, "USD").await.account_id;
    app.deposit(&first, "1000").await;
    app.deposit(&second, "1000").await;
    let mut captures = Vec::new();
    for round in 0..20 {
        let (from, to) = if round % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let hold = app
            .account
            .clone()
            .place_hold(hold_request(from, "7"))
            .await
            .unwrap()
            .into_inner();
        captures.push(pb::CaptureHoldRequest {
            hold_id: hold.hold_id,
            idempotency_key: key(),
            destination_account_id: to.clone(),
            reference: format!("round {round}"),
        });
    }
    let tasks: Vec<_> = captures
        .into_iter()
        .map(|request| {
            let mut client = app.account.clone();
            tokio::spawn(async move { client.capture_hold(request).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every capture succeeds");
    }
    for account_id in [&first, &second] {
        let balance = app
            .account
            .clone()
            .get_balance(pb::GetBalanceRequest {
                account_id: account_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(balance.ledger.unwrap().amount, "1000.00");
        assert_eq!(balance.held.unwrap().amount, "0.00");
    }
    assert_eq!(ledger_violations(&app.owner).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_deposits_in_a_currency_create_one_settlement_account() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let mut accounts = Vec::new();
    for _ in 0..5 {
        accounts.push(app.open_account(&customer_id, "CHF").await.account_id);
    }
    let tasks: Vec<_> = accounts
        .iter()
        .map(|account_id| {
            let mut client = app.account.clone();
            let request = pb::PostDepositRequest {
                account_id: account_id.clone(),
                idempotency_key: key(),
                amount: Some(pb::Money {
                    currency: "CHF".to_owned(),
                    amount: "10".to_owned(),
                }),
                reference: String::new(),
            };
            tokio::spawn(async move { client.post_deposit(request).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every deposit succeeds");
    }
    let settlement: (i64, rust_decimal::Decimal) = sqlx::query_as(
        "select count(*), sum(ledger_balance) from account.account where product = 'settlement' and currency = 'CHF'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(settlement, (1, rust_decimal::Decimal::from(-50)));
}
