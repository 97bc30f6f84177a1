//! The API suite: every test spawns the services on a fresh database.

mod account;
mod conflicts;
mod customer;
mod deposits;
mod fraud;
mod helpers;
mod holds;
mod ledger;
mod ledger_feed;
mod platform;
mod reporting;
mod saga;
mod saga_engine;
mod transaction;
