//! corebank-reporting: the read side. Projects the ledger's events into read
//! models (statements, daily totals), makes signed auditor exports that
//! verify offline, and reconciles itself against the ledger.

pub mod domain;
