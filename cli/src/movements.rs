//! Money movements from a shell: deposit, transfer, withdraw, and following
//! a transaction to its end.
//!
//! A movement's command waits for the outcome and says it in its exit
//! status as well as on stdout: 0 COMPLETED, 4 FAILED, 5 not finished
//! within `--wait` (see [`crate::exit`]).

use std::time::Duration;

use corebank_proto::v1 as pb;
use corebank_proto::v1::transaction_service_client::TransactionServiceClient;

use crate::client::{ClientArgs, channel};
use crate::exit::{Exit, fail};
use crate::output::{outln, print, stdout_closed, to_json};

#[derive(Debug, clap::Args)]
pub struct MoneyArgs {
    /// Decimal amount, e.g. 125.50. A negative one reaches the server, which
    /// refuses it naming the field.
    #[arg(long, allow_negative_numbers = true)]
    amount: String,
    /// ISO 4217, e.g. USD.
    #[arg(long)]
    currency: String,
    #[arg(long, default_value = "")]
    description: String,
    /// Wait up to this many seconds for a terminal status (max 30).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    wait: u64,
}

impl MoneyArgs {
    fn money(&self) -> Option<pb::Money> {
        Some(pb::Money {
            currency: self.currency.clone(),
            amount: self.amount.clone(),
        })
    }

    fn wait(&self) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: self.wait.min(30) as i64,
            nanos: 0,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct DepositCommand {
    #[command(flatten)]
    client: ClientArgs,
    /// The account to credit.
    #[arg(long)]
    account_id: String,
    #[command(flatten)]
    money: MoneyArgs,
}

#[derive(Debug, clap::Args)]
pub struct WithdrawCommand {
    #[command(flatten)]
    client: ClientArgs,
    /// The account to debit.
    #[arg(long)]
    account_id: String,
    #[command(flatten)]
    money: MoneyArgs,
}

#[derive(Debug, clap::Args)]
pub struct TransferCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long)]
    from: String,
    #[arg(long)]
    to: String,
    #[command(flatten)]
    money: MoneyArgs,
}

#[derive(Debug, clap::Args)]
pub struct TransactionCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    action: TransactionAction,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StatusFilter {
    Pending,
    Processing,
    Review,
    Completed,
    Failed,
}

#[derive(Debug, clap::Subcommand)]
enum TransactionAction {
    /// Show one transaction.
    Show { transaction_id: String },
    /// Print every status change until the transaction is terminal.
    Watch { transaction_id: String },
    /// Transactions touching an account, newest first.
    List {
        #[arg(long)]
        account_id: String,
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        #[arg(
            long,
            default_value_t = 50,
            allow_negative_numbers = true,
            allow_negative_numbers = true
        )]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

async fn client(
    args: &ClientArgs,
) -> anyhow::Result<TransactionServiceClient<corebank_platform::auth::AuthedChannel>> {
    Ok(TransactionServiceClient::new(
        channel(&args.transaction_endpoint).await?,
    ))
}

fn deadline(wait: u64) -> Duration {
    Duration::from_secs(wait.min(30) + 10)
}

pub async fn deposit(command: DepositCommand) -> anyhow::Result<()> {
    let mut client = client(&command.client).await?;
    let mut request = tonic::Request::new(pb::CreateDepositRequest {
        idempotency_key: command.client.key(),
        account_id: command.account_id,
        amount: command.money.money(),
        description: command.money.description.clone(),
        wait: command.money.wait(),
    });
    request.set_timeout(deadline(command.money.wait));
    let transaction = client.create_deposit(request).await?.into_inner();
    print(&transaction, command.client.json)?;
    outcome(&transaction, command.money.wait)
}

pub async fn withdraw(command: WithdrawCommand) -> anyhow::Result<()> {
    let mut client = client(&command.client).await?;
    let mut request = tonic::Request::new(pb::CreateWithdrawalRequest {
        idempotency_key: command.client.key(),
        account_id: command.account_id,
        amount: command.money.money(),
        description: command.money.description.clone(),
        wait: command.money.wait(),
    });
    request.set_timeout(deadline(command.money.wait));
    let transaction = client.create_withdrawal(request).await?.into_inner();
    print(&transaction, command.client.json)?;
    outcome(&transaction, command.money.wait)
}

pub async fn transfer(command: TransferCommand) -> anyhow::Result<()> {
    let mut client = client(&command.client).await?;
    let mut request = tonic::Request::new(pb::CreateTransferRequest {
        idempotency_key: command.client.key(),
        source_account_id: command.from,
        destination_account_id: command.to,
        amount: command.money.money(),
        description: command.money.description.clone(),
        wait: command.money.wait(),
    });
    request.set_timeout(deadline(command.money.wait));
    let transaction = client.create_transfer(request).await?.into_inner();
    print(&transaction, command.client.json)?;
    outcome(&transaction, command.money.wait)
}

/// The exit class of a movement's answer: done when COMPLETED, else why not.
fn outcome(transaction: &pb::Transaction, wait: u64) -> anyhow::Result<()> {
    let id = &transaction.transaction_id;
    match transaction.status() {
        pb::TransactionStatus::Completed => Ok(()),
        pb::TransactionStatus::Failed => Err(fail(
            Exit::MovementFailed,
            format!(
                "transaction {id} ended FAILED: {} {}",
                transaction.failure_reason, transaction.failure_detail
            )
            .trim_end()
            .to_owned(),
        )),
        status => Err(fail(
            Exit::MovementUnfinished,
            format!(
                "transaction {id} is {} after waiting {}s; follow it with `corebank transaction watch {id}`",
                status
                    .as_str_name()
                    .trim_start_matches("TRANSACTION_STATUS_"),
                wait.min(30)
            ),
        )),
    }
}

pub async fn transaction(command: TransactionCommand) -> anyhow::Result<()> {
    let mut client = client(&command.client).await?;
    let json = command.client.json;
    match command.action {
        TransactionAction::Show { transaction_id } => print(
            &client
                .get_transaction(pb::GetTransactionRequest { transaction_id })
                .await?
                .into_inner(),
            json,
        ),
        TransactionAction::Watch { transaction_id } => {
            let mut request = tonic::Request::new(pb::GetTransactionRequest { transaction_id });
            request.set_timeout(Duration::from_secs(600));
            let mut stream = client.watch_transaction(request).await?.into_inner();
            while let Some(update) = stream.message().await? {
                // With --json one compact object per line (JSON Lines), so a
                // script reads each update as it comes.
                if json {
                    outln!("{}", serde_json::to_string(&to_json(&update)?)?)?;
                } else {
                    print(&update, false)?;
                    outln!()?;
                }
                if stdout_closed() {
                    break;
                }
            }
            Ok(())
        }
        TransactionAction::List {
            account_id,
            status,
            page_size,
            page_token,
        } => {
            let status = match status {
                None => pb::TransactionStatus::Unspecified,
                Some(StatusFilter::Pending) => pb::TransactionStatus::Pending,
                Some(StatusFilter::Processing) => pb::TransactionStatus::Processing,
                Some(StatusFilter::Review) => pb::TransactionStatus::Review,
                Some(StatusFilter::Completed) => pb::TransactionStatus::Completed,
                Some(StatusFilter::Failed) => pb::TransactionStatus::Failed,
            } as i32;
            let request = pb::ListTransactionsRequest {
                account_id,
                page_size,
                page_token,
                status,
                start_time: None,
                end_time: None,
            };
            print(&client.list_transactions(request).await?.into_inner(), json)
        }
    }
}
