//! Pure reporting logic: no tonic, sqlx or lapin. What an entry is, where an
//! arriving entry stands in its account's sequence, how a statement line is
//! described, how the read model is compared with the ledger, and the signed
//! auditor export.

pub mod entry;
pub mod export;
pub mod reconcile;

pub use entry::{Direction, Offer, PostedEntry, Sequenced, describe, offer, sequence};
