//! Shared helpers for the API suite (see `corebank_tests::harness`).

pub use corebank_tests::harness::*;
