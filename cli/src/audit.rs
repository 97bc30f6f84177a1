//! `corebank audit`: checks the ledger and saga invariants across every
//! schema with an owner login; exits non-zero when one is broken.

use corebank_platform::config::DatabaseArgs;
use corebank_platform::db;

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
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.ok() {
        println!("every invariant holds");
    } else {
        for violation in report.violations() {
            println!("broken: {violation}");
        }
    }
    if report.ok() {
        Ok(())
    } else {
        anyhow::bail!("{} invariant(s) broken", report.violations().len())
    }
}
