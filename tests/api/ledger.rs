//! The ledger's invariants (every journal balances, every balance is the sum
//! of its entries) under any sequence of saga commands, and each command
//! applied once per command id however often and however concurrently it
//! arrives. Money moves only through these commands; no RPC moves it.

use std::collections::HashMap;

use corebank_proto::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use sqlx::PgPool;

use crate::helpers::{SagaCommands, TestApp, key, reason, succeeded, usd};

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
        let saga = SagaCommands::new();
        assert!(succeeded(
            &app.command(&saga.reserve(&source, usd(amount))).await
        ));
        assert!(succeeded(&app.command(&saga.post(&source, to)).await));
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

fn dollars(cents: i64) -> pb::Money {
    usd(&format_cents(cents))
}

/// What the ledger should say, in cents, from the commands that succeeded.
#[derive(Debug, Default)]
struct Model {
    ledger: HashMap<String, i64>,
    held: HashMap<String, i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HoldState {
    Active,
    Captured,
    Released,
}

/// One reserve that succeeded: its saga, account, amount and what became of it.
struct Placed {
    saga: SagaCommands,
    account: String,
    cents: i64,
    state: HoldState,
}

/// A refusal must be one the model expects; anything else is a bug.
fn expect_refusal(reply: &pb::CommandReply, expected: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        reply.outcome,
        pb::CommandOutcome::Rejected as i32,
        "{:?}",
        reply
    );
    prop_assert_eq!(&reply.reason_code, expected);
    Ok(())
}

fn expect_success(reply: &pb::CommandReply) -> Result<(), TestCaseError> {
    prop_assert!(succeeded(reply), "unexpected refusal: {:?}", reply);
    Ok(())
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
    let mut holds: Vec<Placed> = Vec::new();
    for op in ops {
        match op {
            Op::Deposit { account, cents } => {
                let saga = SagaCommands::new();
                let reply = app
                    .command(&saga.deposit(&accounts[account], dollars(cents)))
                    .await;
                expect_success(&reply)?;
                *model.ledger.entry(accounts[account].clone()).or_default() += cents;
            }
            Op::Hold { account, cents } | Op::Withdraw { account, cents } => {
                let account_id = accounts[account].clone();
                let available = model.ledger.get(&account_id).copied().unwrap_or(0)
                    - model.held.get(&account_id).copied().unwrap_or(0)
                    + overdraft[account];
                let saga = SagaCommands::new();
                let reply = app
                    .command(&saga.reserve(&account_id, dollars(cents)))
                    .await;
                if cents > available {
                    expect_refusal(&reply, "INSUFFICIENT_FUNDS")?;
                    continue;
                }
                expect_success(&reply)?;
                if matches!(op, Op::Withdraw { .. }) {
                    expect_success(&app.command(&saga.post(&account_id, "")).await)?;
                    *model.ledger.entry(account_id).or_default() -= cents;
                } else {
                    *model.held.entry(account_id.clone()).or_default() += cents;
                    holds.push(Placed {
                        saga,
                        account: account_id,
                        cents,
                        state: HoldState::Active,
                    });
                }
            }
            Op::Capture { .. } | Op::Release { .. } if holds.is_empty() => {}
            Op::Capture { hold, to } => {
                let count = holds.len();
                let placed = &mut holds[hold % count];
                let destination = to
                    .map(|to| accounts[to].clone())
                    .filter(|to| *to != placed.account);
                let reply = app
                    .command(
                        &placed
                            .saga
                            .post(&placed.account, destination.as_deref().unwrap_or_default()),
                    )
                    .await;
                match placed.state {
                    HoldState::Active => {
                        expect_success(&reply)?;
                        placed.state = HoldState::Captured;
                        *model.held.entry(placed.account.clone()).or_default() -= placed.cents;
                        *model.ledger.entry(placed.account.clone()).or_default() -= placed.cents;
                        if let Some(destination) = destination {
                            *model.ledger.entry(destination).or_default() += placed.cents;
                        }
                    }
                    // A post re-sent: its first reply again, no second journal.
                    HoldState::Captured => expect_success(&reply)?,
                    HoldState::Released => expect_refusal(&reply, "HOLD_NOT_ACTIVE")?,
                }
            }
            Op::Release { hold } => {
                let count = holds.len();
                let placed = &mut holds[hold % count];
                let reply = app.command(&placed.saga.release(&placed.account)).await;
                match placed.state {
                    HoldState::Active => {
                        expect_success(&reply)?;
                        placed.state = HoldState::Released;
                        *model.held.entry(placed.account.clone()).or_default() -= placed.cents;
                    }
                    HoldState::Released => expect_success(&reply)?,
                    HoldState::Captured => expect_refusal(&reply, "HOLD_ALREADY_CAPTURED")?,
                }
            }
        }
    }
    for account_id in &accounts {
        let balance = app.balance(account_id).await;
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
fn any_sequence_of_commands_keeps_every_journal_balanced_and_every_balance_equal_to_its_entries() {
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
async fn a_deposit_command_delivered_twice_credits_once_and_answers_alike() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let account_id = app.open_account(&customer_id, "USD").await.account_id;
    let saga = SagaCommands::new();
    let command = saga.deposit(&account_id, usd("100"));
    app.send_command(&command).await;
    let first = app.command(&command).await;
    assert!(succeeded(&first), "{first:?}");
    app.send_command(&command).await;
    app.wait_for_count(
        &format!(
            "select count(*) from account.outbox where message_type = 'corebank.v1.CommandReply' \
             and correlation_id = '{}'",
            saga.saga_id
        ),
        3,
        "every copy answered",
    )
    .await;
    assert_eq!(app.command_reply(&command.command_id).await, first);
    assert_eq!(app.count("account.journal").await, 1);
    assert_eq!(
        app.balance(&account_id).await.ledger.unwrap().amount,
        "100.00"
    );
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
async fn ten_copies_of_one_reserve_at_once_place_exactly_one_hold() {
    let app = TestApp::spawn().await;
    let account_id = app.funded_account("100").await.account_id;
    let saga = SagaCommands::new();
    let command = saga.reserve(&account_id, usd("10"));
    let sends: Vec<_> = (0..10).map(|_| app.send_command(&command)).collect();
    futures::future::join_all(sends).await;
    app.wait_for_count(
        &format!(
            "select count(*) from account.outbox where message_type = 'corebank.v1.CommandReply' \
             and correlation_id = '{}'",
            saga.saga_id
        ),
        10,
        "every copy answered",
    )
    .await;
    let reply = app.command_reply(&command.command_id).await;
    assert!(succeeded(&reply), "{reply:?}");
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
async fn concurrent_posts_in_both_directions_neither_deadlock_nor_lose_an_update() {
    let app = TestApp::spawn().await;
    let first = app.funded_account("1000").await.account_id;
    let second = app.funded_account("1000").await.account_id;
    let mut posts = Vec::new();
    for round in 0..20 {
        let (from, to) = if round % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let saga = SagaCommands::new();
        assert!(succeeded(&app.command(&saga.reserve(from, usd("7"))).await));
        posts.push(saga.post(from, to));
    }
    futures::future::join_all(posts.iter().map(|post| app.send_command(post))).await;
    for post in &posts {
        let reply = app.command_reply(&post.command_id).await;
        assert!(succeeded(&reply), "every post succeeds: {reply:?}");
    }
    for account_id in [&first, &second] {
        let balance = app.balance(account_id).await;
        assert_eq!(balance.ledger.unwrap().amount, "1000.00");
        assert_eq!(balance.held.unwrap().amount, "0.00");
    }
    assert_eq!(ledger_violations(&app.owner).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_deposits_in_a_currency_create_one_settlement_account() {
    let app = TestApp::spawn().await;
    let customer_id = app.verified_customer().await;
    let mut deposits = Vec::new();
    for _ in 0..5 {
        let account_id = app.open_account(&customer_id, "CHF").await.account_id;
        deposits.push(SagaCommands::new().deposit(
            &account_id,
            pb::Money {
                currency: "CHF".to_owned(),
                amount: "10".to_owned(),
            },
        ));
    }
    futures::future::join_all(deposits.iter().map(|deposit| app.send_command(deposit))).await;
    for deposit in &deposits {
        let reply = app.command_reply(&deposit.command_id).await;
        assert!(succeeded(&reply), "every deposit succeeds: {reply:?}");
    }
    let settlement: (i64, rust_decimal::Decimal) = sqlx::query_as(
        "select count(*), sum(ledger_balance) from account.account where product = 'settlement' and currency = 'CHF'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(settlement, (1, rust_decimal::Decimal::from(-50)));
}
