//! `corebank reporting …` and `corebank reconcile`: statements, daily
//! totals, the projection's status, reconciliations and rebuilds, from the
//! reporting service.

use chrono::{DateTime, Utc};
use corebank_platform::auth::AuthedChannel;
use corebank_proto::v1 as pb;
use corebank_proto::v1::reporting_service_client::ReportingServiceClient;

use crate::client::channel;
use crate::exit::{Exit, fail};
use crate::export::ExportClientArgs;
use crate::export::online::{parse_instant, timestamp};
use crate::output::print;

#[derive(Debug, clap::Args)]
pub struct ReportingCommand {
    #[command(flatten)]
    client: ExportClientArgs,
    #[command(subcommand)]
    action: ReportingAction,
}

#[derive(Debug, clap::Subcommand)]
enum ReportingAction {
    /// An account's statement of [from, to): opening balance, lines, closing balance.
    Statement {
        account_id: String,
        /// Inclusive: RFC 3339 or a UTC day (YYYY-MM-DD); the beginning when absent.
        #[arg(long, value_parser = parse_instant)]
        from: Option<DateTime<Utc>>,
        /// Exclusive, same forms; now when absent.
        #[arg(long, value_parser = parse_instant)]
        to: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Debits, credits, count and closing balance per account and UTC day,
    /// with bank-wide totals per currency.
    DailyTotals {
        #[arg(long, default_value = "")]
        account_id: String,
        #[arg(long, default_value = "")]
        currency: String,
        /// First day, YYYY-MM-DD.
        #[arg(long, default_value = "")]
        from: String,
        /// Last day (inclusive), YYYY-MM-DD.
        #[arg(long, default_value = "")]
        to: String,
        #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// How far the projection is behind the event stream.
    Status,
    /// Throw the read models away and build them again from the ledger.
    Rebuild {
        #[command(flatten)]
        key: IdempotencyKeyArg,
    },
    /// Stored reconciliation reports, newest first.
    Reconciliations {
        #[arg(long, default_value_t = 20, allow_negative_numbers = true)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One stored reconciliation report.
    Reconciliation { reconciliation_id: String },
}

/// `corebank reconcile`: compare the read models with the ledger now.
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    client: ExportClientArgs,
    /// The ledger sequence to compare as of; the projection's position when absent.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    as_of: i64,
    #[command(flatten)]
    key: IdempotencyKeyArg,
}

/// `--idempotency-key` of a command that starts a run.
#[derive(Debug, clap::Args)]
struct IdempotencyKeyArg {
    /// Idempotency key; a fresh one when omitted. Run again with the same
    /// key, the command replays the first answer instead of running again.
    #[arg(long, env = "COREBANK_IDEMPOTENCY_KEY")]
    idempotency_key: Option<String>,
}

impl IdempotencyKeyArg {
    fn key(self) -> String {
        self.idempotency_key
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
    }
}

async fn client(args: &ExportClientArgs) -> anyhow::Result<ReportingServiceClient<AuthedChannel>> {
    Ok(ReportingServiceClient::new(
        channel(&args.reporting_endpoint).await?,
    ))
}

pub async fn reporting(command: ReportingCommand) -> anyhow::Result<()> {
    let json = command.client.json;
    let mut client = client(&command.client).await?;
    match command.action {
        ReportingAction::Statement {
            account_id,
            from,
            to,
            page_size,
            page_token,
        } => {
            let statement = client
                .get_statement(pb::GetStatementRequest {
                    account_id,
                    start_time: from.map(timestamp),
                    end_time: to.map(timestamp),
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            print(&statement, json)
        }
        ReportingAction::DailyTotals {
            account_id,
            currency,
            from,
            to,
            page_size,
            page_token,
        } => {
            let totals = client
                .list_daily_totals(pb::ListDailyTotalsRequest {
                    account_id,
                    currency,
                    start_date: from,
                    end_date: to,
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            print(&totals, json)
        }
        ReportingAction::Status => {
            let status = client
                .get_projection_status(pb::GetProjectionStatusRequest {})
                .await?
                .into_inner();
            print(&status, json)
        }
        ReportingAction::Rebuild { key } => {
            let spinner = crate::progress::spinner("rebuilding the read models from the ledger");
            let rebuilt = client
                .rebuild_read_models(pb::RebuildReadModelsRequest {
                    idempotency_key: key.key(),
                })
                .await;
            spinner.finish_and_clear();
            print(&rebuilt?.into_inner(), json)
        }
        ReportingAction::Reconciliations {
            page_size,
            page_token,
        } => {
            let runs = client
                .list_reconciliations(pb::ListReconciliationsRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            print(&runs, json)
        }
        ReportingAction::Reconciliation { reconciliation_id } => {
            let run = client
                .get_reconciliation(pb::GetReconciliationRequest { reconciliation_id })
                .await?
                .into_inner();
            print(&run, json)
        }
    }
}

/// Prints the report; fails with exit 1 ([`Exit::ProblemFound`]) when it
/// found a mismatch, so a script can alert on it apart from a failed call.
pub async fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let mut client = client(&args.client).await?;
    let spinner = crate::progress::spinner("comparing the read models with the ledger");
    let report = client
        .reconcile(pb::ReconcileRequest {
            as_of_ledger_seq: args.as_of,
            idempotency_key: args.key.key(),
        })
        .await;
    spinner.finish_and_clear();
    let report = report?.into_inner();
    print(&report, args.client.json)?;
    if report.clean {
        Ok(())
    } else {
        Err(fail(
            Exit::ProblemFound,
            format!(
                "{} mismatches between the read models and the ledger",
                report.mismatches.len()
            ),
        ))
    }
}
