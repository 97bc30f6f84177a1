//! The library half of the `corebank` binary: the one list of services that
//! `up`, `migrate` and `serve` run, shared with the test harness
//! (`corebank-tests`), which runs the same services in-process.

pub mod services;
