//! What tests build on a running app: customers, accounts, money moved
//! through sagas, and the checks that every invariant still holds.

use super::*;

impl TestApp {
    /// A valid create-customer request with a unique email.
    pub fn new_customer_request(&self) -> pb::CreateCustomerRequest {
        let unique = Uuid::new_v4().simple().to_string();
        pb::CreateCustomerRequest {
            idempotency_key: key(),
            legal_name: "Ada Lovelace".to_owned(),
            email: format!("ada.{}@example.com", &unique[..12]),
            phone: "+441234567890".to_owned(),
            date_of_birth: "1990-12-10".to_owned(),
            country: "GB".to_owned(),
            national_id: format!("AB{}", &unique[..8]).to_uppercase(),
        }
    }

    /// A customer in PENDING status.
    pub async fn pending_customer(&self) -> String {
        let request = self.new_customer_request();
        self.customer
            .clone()
            .create_customer(request)
            .await
            .expect("create customer")
            .into_inner()
            .customer_id
    }

    /// A customer in VERIFIED status.
    pub async fn verified_customer(&self) -> String {
        let customer_id = self.pending_customer().await;
        self.customer
            .clone()
            .verify_customer(pb::KycTransitionRequest {
                customer_id: customer_id.clone(),
                idempotency_key: key(),
                actor: "analyst-7".to_owned(),
                reason: "documents checked".to_owned(),
            })
            .await
            .expect("verify customer");
        customer_id
    }

    /// An open checking account with no overdraft.
    pub async fn open_account(&self, customer_id: &str, currency: &str) -> pb::Account {
        self.account
            .clone()
            .open_account(pb::OpenAccountRequest {
                idempotency_key: key(),
                customer_id: customer_id.to_owned(),
                currency: currency.to_owned(),
                product: pb::AccountProduct::Checking as i32,
                overdraft_limit: String::new(),
            })
            .await
            .expect("open account")
            .into_inner()
    }

    /// Credits `amount` (decimal string, in the account's currency) from the
    /// settlement account through a deposit saga; the journal it posted.
    pub async fn deposit(&self, account_id: &str, amount: &str) -> pb::Journal {
        let currency = self
            .account
            .clone()
            .get_account(pb::GetAccountRequest {
                account_id: account_id.to_owned(),
            })
            .await
            .expect("get account")
            .into_inner()
            .currency;
        let money = pb::Money {
            currency,
            amount: amount.to_owned(),
        };
        let transaction = self.deposit_money(account_id, money).await;
        assert_eq!(
            transaction.status,
            pb::TransactionStatus::Completed as i32,
            "deposit: {transaction:?}"
        );
        self.account
            .clone()
            .get_journal(pb::GetJournalRequest {
                journal_id: transaction.journal_id,
            })
            .await
            .expect("get journal")
            .into_inner()
    }

    /// Rows in a table of the test database (schema-qualified name).
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&self.owner)
            .await
            .expect("count rows")
    }

    /// A verified customer's fresh USD account holding `amount`, funded by a
    /// deposit saga.
    pub async fn funded_account(&self, amount: &str) -> pb::Account {
        let customer_id = self.verified_customer().await;
        let account = self.open_account(&customer_id, "USD").await;
        let deposit = self.deposit_saga(&account.account_id, amount).await;
        assert_eq!(
            deposit.status,
            pb::TransactionStatus::Completed as i32,
            "funding deposit: {deposit:?}"
        );
        account
    }

    /// A deposit through the transaction service (a saga), waited for.
    pub async fn deposit_saga(&self, account_id: &str, amount: &str) -> pb::Transaction {
        self.deposit_money(account_id, usd(amount)).await
    }

    /// A deposit saga of `money`, waited for until terminal.
    pub async fn deposit_money(&self, account_id: &str, money: pb::Money) -> pb::Transaction {
        let created = self
            .transaction
            .clone()
            .create_deposit(pb::CreateDepositRequest {
                idempotency_key: key(),
                account_id: account_id.to_owned(),
                amount: Some(money),
                description: "test deposit".to_owned(),
                wait: Some(prost_types::Duration {
                    seconds: 20,
                    nanos: 0,
                }),
            })
            .await
            .expect("create deposit")
            .into_inner();
        self.terminal(&created.transaction_id).await
    }

    /// A transfer submitted without waiting for it; its transaction id.
    pub async fn submit_transfer(&self, from: &str, to: &str, amount: &str) -> String {
        self.transaction
            .clone()
            .create_transfer(pb::CreateTransferRequest {
                idempotency_key: key(),
                source_account_id: from.to_owned(),
                destination_account_id: to.to_owned(),
                amount: Some(usd(amount)),
                description: "test transfer".to_owned(),
                wait: None,
            })
            .await
            .expect("create transfer")
            .into_inner()
            .transaction_id
    }

    /// A transfer, waited for until terminal.
    pub async fn transfer(&self, from: &str, to: &str, amount: &str) -> pb::Transaction {
        let transaction_id = self.submit_transfer(from, to, amount).await;
        self.terminal(&transaction_id).await
    }

    /// Waits (at most 20 s) until the count query `sql` reaches `at_least`.
    pub async fn wait_for_count(&self, sql: &str, at_least: i64, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&self.owner)
                .await
                .expect("count query");
            if count >= at_least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls a transaction until COMPLETED or FAILED (at most 60 s).
    pub async fn terminal(&self, transaction_id: &str) -> pb::Transaction {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let transaction = self
                .transaction
                .clone()
                .get_transaction(pb::GetTransactionRequest {
                    transaction_id: transaction_id.to_owned(),
                })
                .await
                .expect("get transaction")
                .into_inner();
            let status = transaction.status();
            if status == pb::TransactionStatus::Completed || status == pb::TransactionStatus::Failed
            {
                return transaction;
            }
            if tokio::time::Instant::now() >= deadline {
                // A transaction held for review says which rules fired.
                let screened: Option<(String, serde_json::Value, serde_json::Value)> =
                    sqlx::query_as(
                        "select outcome, fired, features from fraud.decision
                          where transaction_id = $1::uuid",
                    )
                    .bind(transaction_id)
                    .fetch_optional(&self.owner)
                    .await
                    .ok()
                    .flatten();
                panic!("transaction never ended: {transaction:?}; screened: {screened:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The balance of an account.
    pub async fn balance(&self, account_id: &str) -> pb::Balance {
        self.account
            .clone()
            .get_balance(pb::GetBalanceRequest {
                account_id: account_id.to_owned(),
            })
            .await
            .expect("get balance")
            .into_inner()
    }

    /// Waits until every saga and transaction ended, then asserts every
    /// invariant of the ledger.
    pub async fn assert_invariants(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let report = corebank_audit::check(&self.owner)
                .await
                .expect("invariant check runs");
            if report.ok() {
                return;
            }
            let only_unfinished = report
                .violations()
                .iter()
                .all(|v| v.contains("not terminal") || v.contains("holds left active"));
            assert!(
                only_unfinished && tokio::time::Instant::now() < deadline,
                "invariants broken: {:?}",
                report.violations()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
