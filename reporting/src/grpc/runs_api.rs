//! `Reconcile` and `RebuildReadModels`: the runs an auditor or an operator
//! starts by hand. Each is guarded by its idempotency key, claimed in the
//! transaction that writes the run, so the same key with the same request
//! replays the first answer and nothing runs twice.

use corebank_platform::idempotency::{fingerprint, required_key};
use corebank_platform::tenancy::Tenancy;
use corebank_platform::{ApiError, Violations};
use corebank_proto::v1 as pb;
use tonic::Request;

use super::ReportingApi;
use super::convert::reconciliation_to_proto;
use crate::runs;

impl ReportingApi {
    /// Compares the read models with the ledger and stores the report,
    /// once per key.
    pub(super) async fn reconcile_once(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<pb::Reconciliation, ApiError> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.check(
            request.as_of_ledger_seq >= 0,
            "as_of_ledger_seq",
            "must not be negative",
        );
        violations.into_result()?;
        let fingerprint = fingerprint(
            &tenancy.scoped("Reconcile"),
            &pb::ReconcileRequest {
                idempotency_key: String::new(),
                ..request
            },
        );
        let now = self.clock.now();
        // A replay answers the stored report without asking the ledger again.
        if let Some(report) = self.store.replay(&key, &fingerprint, now).await? {
            return Ok(report);
        }
        let report = runs::compare(
            &self.store,
            &self.ledger,
            &self.broker,
            &self.clock,
            request.as_of_ledger_seq,
            "manual",
        )
        .await?;
        // Two first requests with one key may both compare; the key, claimed
        // with the insert, keeps one report and answers both with it.
        self.store
            .idempotent(Some(&key), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    runs::record(conn, &report).await?;
                    Ok(reconciliation_to_proto(&report.0, &report.1))
                })
            })
            .await
    }

    /// Rebuilds the read models from the ledger, once per key.
    pub(super) async fn rebuild_once(
        &self,
        request: Request<pb::RebuildReadModelsRequest>,
    ) -> Result<pb::RebuildReadModelsResponse, ApiError> {
        let tenancy = Tenancy::of(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::default();
        let key = required_key(&mut violations, &request.idempotency_key);
        violations.into_result()?;
        let fingerprint = fingerprint(
            &tenancy.scoped("RebuildReadModels"),
            &pb::RebuildReadModelsRequest {
                idempotency_key: String::new(),
            },
        );
        let now = self.clock.now();
        let ledger = self.ledger.clone();
        // The rebuild's transaction holds the key: a concurrent request with
        // it waits for the rebuild, then replays its answer (or, waiting
        // longer than the key's lock timeout, is told to retry).
        self.store
            .idempotent(Some(&key), &fingerprint, now, move |conn| {
                Box::pin(async move {
                    let rebuilt = runs::rebuild(conn, &ledger, now).await?;
                    Ok(pb::RebuildReadModelsResponse {
                        entries: rebuilt.entries,
                        accounts: rebuilt.accounts,
                        ledger_head_seq: rebuilt.ledger_head_seq,
                    })
                })
            })
            .await
    }
}
