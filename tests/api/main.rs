//! The API suite: every test spawns the services on a fresh database.

mod account;
mod audit;
mod auth;
mod command_batches;
mod conflicts;
mod customer;
mod customer_identity;
mod deposits;
mod fraud;
mod gateway;
mod hardening;
mod helpers;
mod holds;
mod ledger;
mod ledger_feed;
mod ledger_summary;
mod platform;
mod reporting;
mod saga;
mod saga_engine;
mod saga_faults;
mod saga_load;
mod tenancy;
mod transaction;
