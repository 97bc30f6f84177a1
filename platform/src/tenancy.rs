//! Tenancy: a partner reaches only its own customers, their accounts and
//! their transactions; staff and services reach everything. Whatever a
//! partner may not reach answers NOT_FOUND, exactly like an unknown id, so
//! existence does not leak; lists are filtered to the partner's own.

use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};

/// Whose data a request may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenancy {
    /// Staff and services: not tenant-bound.
    All,
    /// A partner: only what it owns.
    Partner(String),
}

impl Tenancy {
    /// The tenancy of the authenticated caller of `request`. A request the
    /// auth layer did not mark reaches nothing (fail closed).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, ApiError> {
        let principal = Principal::of(request).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "UNAUTHENTICATED",
                "the caller is not authenticated",
            )
        })?;
        Ok(match principal.tenant() {
            Some(partner) => Self::Partner(partner.to_owned()),
            None => Self::All,
        })
    }

    /// The partner a new customer is recorded as owned by; `None` when
    /// staff or a service creates it (the bank's own).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::Partner(partner) => Some(partner),
        }
    }

    /// Whether a resource owned by `owner` (`None`: the bank's own) is
    /// within reach.
    pub fn reaches(&self, owner: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Partner(partner) => owner == Some(partner.as_str()),
        }
    }

    /// `Ok` when the resource is within reach, else `not_found` (the same
    /// answer an unknown id gets).
    pub fn check(
        &self,
        owner: Option<&str>,
        not_found: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        if self.reaches(owner) {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// Distinguishes idempotency fingerprints per tenant, so one partner's
    /// key can never replay another partner's response.
    pub fn scoped(&self, operation: &str) -> String {
        match self {
            Self::All => operation.to_owned(),
            Self::Partner(partner) => format!("{operation} for partner {partner}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_reaches_only_what_it_owns_and_staff_reach_everything() {
        let partner = Tenancy::Partner("acme".to_owned());
        assert!(partner.reaches(Some("acme")));
        assert!(!partner.reaches(Some("globex")));
        assert!(!partner.reaches(None), "the bank's own is not a partner's");
        assert!(Tenancy::All.reaches(Some("acme")));
        assert!(Tenancy::All.reaches(None));
        assert_eq!(partner.owner(), Some("acme"));
        assert_eq!(Tenancy::All.owner(), None);
        assert_ne!(
            partner.scoped("OpenAccount"),
            Tenancy::All.scoped("OpenAccount")
        );
    }

    #[test]
    fn a_request_without_a_principal_reaches_nothing() {
        let request = tonic::Request::new(());
        let error = Tenancy::of(&request).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unauthenticated);
    }
}
