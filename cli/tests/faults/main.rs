//! The fault matrix: each row runs a whole `corebank up` under a load of
//! transfers (a burst that queues sagas up, then a trickle through the fault
//! and past it), breaks what it depends on while transfers are in flight,
//! holds the fault a few seconds, heals it, and then demands every
//! invariant: each transaction ends within a bound, none is lost or made
//! twice, money is conserved, no hold is left active, each completed
//! transfer has exactly one journal, reporting reconciles with the ledger
//! and no message is parked.
//!
//! A row that stops or kills a server runs the system on a private one of
//! its own; the shared PostgreSQL and RabbitMQ are never stopped. Each row
//! prints how long the system took, from the heal, until every transaction
//! had ended (run with `--no-capture` to see it).

#[path = "../common/mod.rs"]
mod common;
mod crashes;
mod links;
mod replicas;
mod row;
mod servers;
