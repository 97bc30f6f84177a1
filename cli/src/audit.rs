//! `corebank audit`: checks the ledger and saga invariants across every
//! schema with an owner login; exits 1 ([`Exit::ProblemFound`]) when one is
//! broken, 3 when the database cannot be reached.

use corebank_platform::config::DatabaseArgs;
use corebank_platform::db;

use crate::exit::{Exit, fail};
use crate::output::outln;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let options = db::options(&args.db.database_url)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let report = corebank_audit::check(&pool).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else if report.ok() {
        outln!("every invariant holds")?;
    } else {
        for violation in report.violations() {
            outln!("broken: {violation}")?;
        }
    }
    if report.ok() {
        Ok(())
    } else {
        Err(fail(
            Exit::ProblemFound,
            format!("{} invariant(s) broken", report.violations().len()),
        ))
    }
}
