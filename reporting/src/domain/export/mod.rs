//! Auditor exports.
