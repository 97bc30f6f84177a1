//! The shared runtime every corebank service stands on: configuration,
//! telemetry (logs, metrics, traces), PostgreSQL, the gRPC server, the
//! error model, money, paging and idempotency. No domain logic lives here.

pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod failpoint;
pub mod grpc;
pub mod idempotency;
pub mod input;
pub mod listen;
pub mod messaging;
pub mod money;
pub mod paging;
pub mod schedule;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy;
pub mod time;
pub mod tracing_otel;

pub use error::{ApiError, ErrorCode, Violations};
