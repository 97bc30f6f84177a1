//! Test support for corebank's end-to-end suites: a fresh database per test,
//! provisioned exactly as `corebank migrate` does, and the services running
//! in-process on free ports.

pub mod harness;
