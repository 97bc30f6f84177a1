//! The authenticated caller, as handlers see it.

use std::collections::BTreeSet;

use super::{AUDIT_READS, AUDIT_SCOPE, SERVICE_SCOPE, STAFF_SCOPES};
use crate::error::{ApiError, ErrorCode};

/// The error of a caller without `scope`.
pub fn missing_scope(scope: &str) -> ApiError {
    ApiError::new(
        ErrorCode::PermissionDenied,
        "MISSING_SCOPE",
        format!("this call needs scope {scope}"),
    )
    .with_metadata("scope", scope)
}

/// What kind of caller a principal is, which decides tenancy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// Another corebank service: every scope, no tenant.
    Service,
    /// Bank staff (KYC, fraud analysts, auditors, operators): not tenant-bound.
    Staff,
    /// A partner: reaches only its own customers (tenant = subject).
    Partner,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub scopes: BTreeSet<String>,
    pub kind: PrincipalKind,
}

impl Principal {
    /// Classifies a verified token: internal audience with scope `service`
    /// is a service, any staff scope is staff, anything else a partner.
    pub fn from_token(subject: String, scopes: BTreeSet<String>, internal: bool) -> Self {
        let kind = if internal && scopes.contains(SERVICE_SCOPE) {
            PrincipalKind::Service
        } else if STAFF_SCOPES.iter().any(|scope| scopes.contains(*scope)) {
            PrincipalKind::Staff
        } else {
            PrincipalKind::Partner
        };
        Self {
            subject,
            scopes,
            kind,
        }
    }

    /// A service identified by a verified client certificate.
    pub fn service(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            scopes: BTreeSet::from([SERVICE_SCOPE.to_owned()]),
            kind: PrincipalKind::Service,
        }
    }

    /// Whether the caller may use `scope`; services may use every scope,
    /// and an auditor (`audit:read`) reads every account, its transactions
    /// and statements without holding those scopes by name.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.kind == PrincipalKind::Service
            || self.scopes.contains(scope)
            || (AUDIT_READS.contains(&scope) && self.scopes.contains(AUDIT_SCOPE))
    }

    /// The partner whose data this caller is limited to; `None` for
    /// services and staff, who are not tenant-bound.
    pub fn tenant(&self) -> Option<&str> {
        match self.kind {
            PrincipalKind::Partner => Some(&self.subject),
            PrincipalKind::Service | PrincipalKind::Staff => None,
        }
    }

    /// PERMISSION_DENIED (reason `MISSING_SCOPE`) unless the caller holds `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            return Ok(());
        }
        Err(missing_scope(scope))
    }

    /// The principal the server's auth layer attached to `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Principal> {
        request.extensions().get::<Principal>()
    }

    /// The actor of `request`'s caller; UNAUTHENTICATED when the server's
    /// auth layer attached no principal.
    pub fn actor_of<T>(request: &tonic::Request<T>) -> Result<String, tonic::Status> {
        Self::of(request)
            .map(Principal::actor)
            .ok_or_else(|| tonic::Status::unauthenticated("no authenticated caller"))
    }

    /// What audit records (KYC transitions, saga admin, fraud decisions,
    /// account freezes) name as the actor: the token's subject.
    pub fn actor(&self) -> String {
        self.subject.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> BTreeSet<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn an_internal_service_token_is_a_service_with_every_scope_and_no_tenant() {
        let principal = Principal::from_token("service:account".into(), scopes("service"), true);
        assert_eq!(principal.kind, PrincipalKind::Service);
        assert!(principal.has_scope("kyc:write"));
        assert_eq!(principal.tenant(), None);
    }

    #[test]
    fn scope_service_on_a_partner_token_grants_nothing() {
        let principal = Principal::from_token("p".into(), scopes("service"), false);
        assert_eq!(principal.kind, PrincipalKind::Partner);
        assert!(!principal.has_scope("kyc:write"));
        assert_eq!(principal.tenant(), Some("p"));
    }

    #[test]
    fn an_auditor_reads_accounts_transactions_and_statements_and_nothing_more() {
        let auditor = Principal::from_token("eve".into(), scopes("audit:read"), true);
        assert_eq!(auditor.tenant(), None);
        for read in AUDIT_READS {
            assert!(auditor.has_scope(read), "{read}");
        }
        for other in [
            "accounts:write",
            "payments:write",
            "customers:read",
            "ops:admin",
        ] {
            assert!(!auditor.has_scope(other), "{other}");
        }
    }

    #[test]
    fn a_staff_scope_makes_a_staff_principal_that_is_not_tenant_bound() {
        let principal =
            Principal::from_token("alice".into(), scopes("customers:read kyc:write"), false);
        assert_eq!(principal.kind, PrincipalKind::Staff);
        assert_eq!(principal.tenant(), None);
        assert!(principal.has_scope("customers:read"));
        assert!(!principal.has_scope("ops:admin"));
        assert_eq!(principal.actor(), "alice");
    }
}
