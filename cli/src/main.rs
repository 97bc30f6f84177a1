//! `corebank`: run the services (`up`, `serve`), prepare the database and
//! broker (`migrate`), move money and operate sagas from a shell, and
//! benchmark the whole (`bench`).
//!
//! The exit status says how a command ended, one code per class
//! ([`exit::TABLE`]); usage errors are clap's own, which exit 2 (bad input)
//! like a request the server refused as given.

mod audit;
mod bench;
mod client;
mod dlq;
mod exit;
mod export;
mod fraud;
mod movements;
mod output;
mod progress;
mod reporting;
mod run;
mod saga;
mod token;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "corebank",
    version,
    about = "A core-banking backend: services, migrations and a client",
    after_help = exit::TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process (development).
    Up(run::UpArgs),
    /// Run one service (the production unit).
    Serve(run::ServeArgs),
    /// Create each service's schema and role, apply migrations, declare the broker topology (idempotent).
    Migrate(run::MigrateArgs),
    /// Customers and KYC.
    Customer(client::CustomerCommand),
    /// Accounts, balances and ledger entries.
    Account(client::AccountCommand),
    /// Credit an account (a deposit saga).
    Deposit(movements::DepositCommand),
    /// Debit an account (a withdrawal saga).
    Withdraw(movements::WithdrawCommand),
    /// Move money between two accounts (a transfer saga).
    Transfer(movements::TransferCommand),
    /// Show, list and watch transactions.
    Transaction(movements::TransactionCommand),
    /// Operate sagas: list, show with history, retry, abort.
    Saga(saga::SagaCommand),
    /// Fraud screening: the review queue, decisions, alerts, rules, watchlist.
    Fraud(fraud::FraudCommand),
    /// Inspect and replay parked (dead-lettered) messages.
    Dlq(dlq::DlqCommand),
    /// Measure completed transfer sagas per second and their latency.
    Bench(bench::BenchArgs),
    /// Measure the REST gateway's cost: GetBalance through it beside direct gRPC, same run.
    BenchGateway(bench::edge::EdgeArgs),
    /// Check the ledger and saga invariants (money conserved, no double posting, every saga ended); exit 1 when one is broken.
    Audit(audit::AuditArgs),
    /// Make an Ed25519 key pair for signing auditor exports.
    Keygen(export::KeygenArgs),
    /// Signed auditor exports: create and download them, verify them offline, prove one journal.
    Export(export::ExportCommand),
    /// Statements, daily totals, the projection's status, reconciliation reports, rebuilds.
    Reporting(reporting::ReportingCommand),
    /// Compare the read models with the ledger now; exit 1 on any mismatch.
    Reconcile(reporting::ReconcileArgs),
    /// Development tokens signed with the key `corebank up` trusts.
    Token(token::TokenCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => run::up(args).await,
        Command::Serve(args) => run::serve(args).await,
        Command::Migrate(args) => run::migrate(args).await,
        Command::Customer(command) => client::customer(command).await,
        Command::Account(command) => client::account(command).await,
        Command::Deposit(command) => movements::deposit(command).await,
        Command::Withdraw(command) => movements::withdraw(command).await,
        Command::Transfer(command) => movements::transfer(command).await,
        Command::Transaction(command) => movements::transaction(command).await,
        Command::Saga(command) => saga::saga(command).await,
        Command::Fraud(command) => fraud::fraud(command).await,
        Command::Dlq(command) => dlq::dlq(command).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchGateway(args) => bench::edge::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Keygen(args) => export::keygen(args),
        Command::Export(command) => export::export(command).await,
        Command::Reporting(command) => reporting::reporting(command).await,
        Command::Reconcile(args) => reporting::reconcile(args).await,
        Command::Token(command) => token::token(command),
    };
    match result {
        Ok(()) => exit::Exit::Done.into(),
        Err(error) => {
            output::print_error(&error);
            exit::Exit::of(&error).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every service's flags live side by side in `up`: a flag or argument
    /// id used twice would make `corebank up` panic at start.
    #[test]
    fn every_command_and_flag_is_well_formed_and_unique() {
        Cli::command().debug_assert();
    }
}
