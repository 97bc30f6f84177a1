//! `corebank`: run the services (`up`, `serve`), prepare the database
//! (`migrate`), and work with customers and accounts from a shell.

mod bench;
mod client;
mod output;
mod run;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "corebank",
    version,
    about = "A core-banking backend: services, migrations and a client"
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
    /// Create each service's schema and role and apply its migrations (idempotent).
    Migrate(run::MigrateArgs),
    /// Customers and KYC.
    Customer(client::CustomerCommand),
    /// Accounts, balances and ledger entries.
    Account(client::AccountCommand),
    /// Benchmark transfer sagas against the running services.
    Bench(bench::BenchArgs),
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
        Command::Bench(args) => bench::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            std::process::ExitCode::FAILURE
        }
    }
}
