//! `corebank.v1.ReportingService` (proto ⇄ domain): statements, daily
//! totals, exports, signing keys, reconciliations, rebuilds and the
//! projection's status. Read only, but for exports and reconciliation
//! reports, which are append-only records, and rebuilds; those three take an
//! idempotency key, claimed in the transaction that writes them.

mod convert;
mod runs_api;

use std::pin::Pin;

use chrono::{DateTime, NaiveDate, Utc};
use corebank_platform::clock::SharedClock;
use corebank_platform::error::required_uuid as id_field;
use corebank_platform::idempotency::{fingerprint, required_key};
use corebank_platform::messaging::Broker;
use corebank_platform::paging::Page;
use corebank_platform::tenancy::Tenancy;
use corebank_platform::time::from_timestamp;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use corebank_proto::v1::reporting_service_server::ReportingService;
use futures::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::export::FILE_NAMES;
use crate::ledger::Ledger;
use crate::runs::{self, ExportRequest, Signer};
use crate::store::statements::{self, DailyFilter};
use crate::store::{ReportingStore, exports, reconciliations};

use convert::*;

/// Bytes per download chunk.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The reporting API.
#[derive(Debug, Clone)]
pub struct ReportingApi {
    store: ReportingStore,
    ledger: Ledger,
    broker: Broker,
    signer: Signer,
    clock: SharedClock,
}

impl ReportingApi {
    /// Another partner's account, or an unknown one, is answered alike.
    async fn require_reach(&self, tenancy: &Tenancy, account_id: Uuid) -> Result<(), ApiError> {
        if self.ledger.reaches(tenancy, account_id).await? {
            Ok(())
        } else {
            Err(ApiError::not_found(
                "ACCOUNT_NOT_FOUND",
                format!("account {account_id} not found"),
            ))
        }
    }

    pub fn new(
        store: ReportingStore,
        ledger: Ledger,
        broker: Broker,
        signer: Signer,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            ledger,
            broker,
            signer,
            clock,
        }
    }
}

/// A UUID field; an empty one is a violation only when `required`.
fn uuid_field(
    violations: &mut Violations,
    field: &str,
    text: &str,
    required: bool,
) -> Option<Uuid> {
    if text.is_empty() {
        violations.check(!required, field, "is required");
        return None;
    }
    violations.take(field, Uuid::parse_str(text).map_err(|_| "must be a UUID"))
}

fn time_field(
    violations: &mut Violations,
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    let value = value?;
    let parsed = from_timestamp(value).filter(|_| (0..1_000_000_000).contains(&value.nanos));
    if parsed.is_none() {
        violations.add(field, "is not a valid timestamp");
    }
    parsed
}

fn date_field(violations: &mut Violations, field: &str, text: &str) -> Option<NaiveDate> {
    if text.is_empty() {
        return None;
    }
    let parsed = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
    if parsed.is_none() {
        violations.add(field, "must be a date like 2026-12-31");
    }
    parsed
}

/// The `(time, id)` cursor of the newest-first lists.
fn time_cursor(cursor: Option<&str>) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let bad = || ApiError::invalid_field("page_token", "is not a token issued for this query");
    let (time, id) = cursor.split_once('|').ok_or_else(bad)?;
    let time = DateTime::parse_from_rfc3339(time)
        .map_err(|_| bad())?
        .to_utc();
    Ok(Some((time, Uuid::parse_str(id).map_err(|_| bad())?)))
}

fn time_cursor_of(time: DateTime<Utc>, id: Uuid) -> String {
    format!(
        "{}|{id}",
        time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// The download stream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ReportingService for ReportingApi {
    type DownloadExportStream = ChunkStream;

    #[tracing::instrument(skip_all)]
    async fn get_statement(
        &self,
        request: Request<pb::GetStatementRequest>,
    ) -> Result<Response<pb::Statement>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let account_id = uuid_field(&mut violations, "account_id", &request.account_id, true);
        // No ledger entry is older than the epoch.
        let start = time_field(&mut violations, "start_time", request.start_time.as_ref())
            .unwrap_or(DateTime::UNIX_EPOCH);
        let end = time_field(&mut violations, "end_time", request.end_time.as_ref())
            .unwrap_or_else(|| self.clock.now() + chrono::Duration::microseconds(1));
        violations.check(start < end, "end_time", "must be after start_time");
        violations.into_result()?;
        let Some(account_id) = account_id else {
            return Err(ApiError::invalid_field("account_id", "is required").into());
        };
        self.require_reach(&tenancy, account_id).await?;
        let filter = format!("statement:{account_id}:{start}:{end}");
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let after: i64 = match page.after.as_deref() {
            None => 0,
            Some(cursor) => cursor.parse().map_err(|_| {
                ApiError::invalid_field("page_token", "is not a token issued for this query")
            })?,
        };
        let mut conn = self.store.conn().await?;
        let period = statements::period(&mut conn, account_id, start, end).await?;
        let mut lines = match period.seq_range {
            Some(range) => {
                statements::lines(&mut conn, account_id, range, after, page.fetch_limit()).await?
            }
            None => Vec::new(),
        };
        let next_page_token = page.finish(&mut lines, |line| line.account_seq.to_string(), &filter);
        Ok(Response::new(statement_to_proto(
            account_id,
            start,
            end,
            &period,
            &lines,
            next_page_token,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_daily_totals(
        &self,
        request: Request<pb::ListDailyTotalsRequest>,
    ) -> Result<Response<pb::ListDailyTotalsResponse>, Status> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        // A partner reads the totals of one of its accounts, never the bank's.
        let required = tenancy != Tenancy::All;
        let account_id = uuid_field(&mut violations, "account_id", &request.account_id, required);
        let currency = if request.currency.is_empty() {
            None
        } else {
            violations
                .take(
                    "currency",
                    corebank_platform::money::Currency::parse(&request.currency),
                )
                .map(|currency| currency.code().to_owned())
        };
        let start = date_field(&mut violations, "start_date", &request.start_date);
        let end = date_field(&mut violations, "end_date", &request.end_date);
        if let (Some(start), Some(end)) = (start, end) {
            violations.check(start <= end, "end_date", "must not be before start_date");
        }
        let filter = format!(
            "daily:{}:{}:{}:{}",
            request.account_id, request.currency, request.start_date, request.end_date
        );
        violations.into_result()?;
        if let Some(account_id) = account_id {
            self.require_reach(&tenancy, account_id).await?;
        }
        let page = Page::parse(request.page_size, &request.page_token, &filter)?;
        let after = match page.after.as_deref() {
            None => None,
            Some(cursor) => {
                let bad = || {
                    ApiError::invalid_field("page_token", "is not a token issued for this query")
                };
                let (day, account) = cursor.split_once('|').ok_or_else(bad)?;
                Some((
                    NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| bad())?,
                    Uuid::parse_str(account).map_err(|_| bad())?,
                ))
            }
        };
        let filter_rows = DailyFilter {
            account_id,
            currency: currency.clone(),
            start,
            end,
        };
        let mut conn = self.store.conn().await?;
        let mut rows =
            statements::daily_totals(&mut conn, &filter_rows, after, page.fetch_limit()).await?;
        let next_page_token = page.finish(
            &mut rows,
            |row| format!("{}|{}", row.day, row.account_id),
            &filter,
        );
        let mut days: Vec<NaiveDate> = rows.iter().map(|row| row.day).collect();
        days.dedup();
        let bank = statements::bank_totals(&mut conn, &days, currency.as_deref()).await?;
        Ok(Response::new(pb::ListDailyTotalsResponse {
            totals: rows.iter().map(daily_total_to_proto).collect(),
            bank_totals: bank.iter().map(currency_day_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_export(
        &self,
        request: Request<pb::CreateExportRequest>,
    ) -> Result<Response<pb::Export>, Status> {
        let request = request.into_inner();
        let now = self.clock.now();
        let mut violations = Violations::default();
        let key = required_key(&mut violations, &request.idempotency_key);
        let start = time_field(
            &mut violations,
            "period_start",
            request.period_start.as_ref(),
        );
        let end = time_field(&mut violations, "period_end", request.period_end.as_ref());
        violations.check(
            request.period_start.is_some(),
            "period_start",
            "is required",
        );
        violations.check(request.period_end.is_some(), "period_end", "is required");
        if let (Some(start), Some(end)) = (start, end) {
            violations.check(start < end, "period_end", "must be after period_start");
            let settle = chrono::Duration::from_std(runs::EXPORT_SETTLE).unwrap_or_default();
            violations.check(
                end <= now - settle,
                "period_end",
                "must be at least 5 seconds in the past (a period is exported once it has ended)",
            );
        }
        let mut accounts = Vec::with_capacity(request.account_ids.len());
        for (index, text) in request.account_ids.iter().enumerate() {
            let field = format!("account_ids[{index}]");
            accounts.extend(uuid_field(&mut violations, &field, text, true));
        }
        violations.check(
            accounts.len() <= 1000,
            "account_ids",
            "must list at most 1000 accounts",
        );
        violations.into_result()?;
        let (Some(period_start), Some(period_end)) = (start, end) else {
            return Err(ApiError::invalid_field("period_start", "is required").into());
        };
        accounts.sort();
        accounts.dedup();
        let export_request = ExportRequest {
            period_start,
            period_end,
            accounts,
        };
        runs::check_complete(&self.store, &self.ledger, &export_request).await?;
        let mut keyless = request.clone();
        keyless.idempotency_key.clear();
        let signer = self.signer.clone();
        let export = self
            .store
            .idempotent(
                Some(&key),
                &fingerprint("CreateExport", &keyless),
                now,
                move |conn| {
                    Box::pin(async move {
                        let record = runs::make_export(conn, &signer, &export_request, now).await?;
                        Ok(export_to_proto(&record))
                    })
                },
            )
            .await?;
        Ok(Response::new(export))
    }

    #[tracing::instrument(skip_all)]
    async fn get_export(
        &self,
        request: Request<pb::GetExportRequest>,
    ) -> Result<Response<pb::Export>, Status> {
        let export_id = id_field("export_id", &request.into_inner().export_id)?;
        let mut conn = self.store.conn().await?;
        let record = exports::get(&mut conn, export_id).await?;
        Ok(Response::new(export_to_proto(&record)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_exports(
        &self,
        request: Request<pb::ListExportsRequest>,
    ) -> Result<Response<pb::ListExportsResponse>, Status> {
        let request = request.into_inner();
        let filter = "exports";
        let page = Page::parse(request.page_size, &request.page_token, filter)?;
        let after = time_cursor(page.after.as_deref())?;
        let mut conn = self.store.conn().await?;
        let mut rows = exports::list(&mut conn, after, page.fetch_limit()).await?;
        let next_page_token = page.finish(
            &mut rows,
            |row| time_cursor_of(row.created_at, row.export_id),
            filter,
        );
        Ok(Response::new(pb::ListExportsResponse {
            exports: rows.iter().map(export_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn download_export(
        &self,
        request: Request<pb::DownloadExportRequest>,
    ) -> Result<Response<Self::DownloadExportStream>, Status> {
        let export_id = id_field("export_id", &request.into_inner().export_id)?;
        let mut conn = self.store.conn().await?;
        let files = exports::files(&mut conn, export_id).await?;
        let mut chunks = Vec::new();
        for (name, bytes) in
            FILE_NAMES
                .into_iter()
                .zip([files.jsonl, files.csv, files.manifest, files.signature])
        {
            let size = bytes.len() as i64;
            if bytes.is_empty() {
                chunks.push(pb::ExportChunk {
                    file_name: name.to_owned(),
                    offset: 0,
                    data: Vec::new(),
                    file_size: 0,
                });
            }
            for (index, data) in bytes.chunks(CHUNK_SIZE).enumerate() {
                chunks.push(pb::ExportChunk {
                    file_name: name.to_owned(),
                    offset: (index * CHUNK_SIZE) as i64,
                    data: data.to_vec(),
                    file_size: size,
                });
            }
        }
        let stream = futures::stream::iter(chunks.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        let mut conn = self.store.conn().await?;
        let keys = exports::keys(&mut conn).await?;
        Ok(Response::new(pb::SigningKeys {
            keys: keys
                .iter()
                .map(|key| signing_key_to_proto(key, &self.signer.key_id))
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::Reconciliation>, Status> {
        Ok(Response::new(self.reconcile_once(request).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_reconciliation(
        &self,
        request: Request<pb::GetReconciliationRequest>,
    ) -> Result<Response<pb::Reconciliation>, Status> {
        let id = id_field("reconciliation_id", &request.into_inner().reconciliation_id)?;
        let mut conn = self.store.conn().await?;
        let (run, mismatches) = reconciliations::get(&mut conn, id).await?;
        Ok(Response::new(reconciliation_to_proto(&run, &mismatches)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_reconciliations(
        &self,
        request: Request<pb::ListReconciliationsRequest>,
    ) -> Result<Response<pb::ListReconciliationsResponse>, Status> {
        let request = request.into_inner();
        let filter = "reconciliations";
        let page = Page::parse(request.page_size, &request.page_token, filter)?;
        let after = time_cursor(page.after.as_deref())?;
        let mut conn = self.store.conn().await?;
        let mut rows = reconciliations::list(&mut conn, after, page.fetch_limit()).await?;
        let next_page_token = page.finish(
            &mut rows,
            |(run, _)| time_cursor_of(run.created_at, run.reconciliation_id),
            filter,
        );
        Ok(Response::new(pb::ListReconciliationsResponse {
            reconciliations: rows
                .iter()
                .map(|(run, mismatches)| reconciliation_to_proto(run, mismatches))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn rebuild_read_models(
        &self,
        request: Request<pb::RebuildReadModelsRequest>,
    ) -> Result<Response<pb::RebuildReadModelsResponse>, Status> {
        Ok(Response::new(self.rebuild_once(request).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_projection_status(
        &self,
        _request: Request<pb::GetProjectionStatusRequest>,
    ) -> Result<Response<pb::ProjectionStatus>, Status> {
        Ok(Response::new(
            runs::status(&self.store, &self.broker, self.clock.now()).await?,
        ))
    }
}
