//! corebank-fraud: screens every money movement as a saga step, from local
//! state only (features kept from events and from the screen commands
//! themselves), with a versioned rule set, and keeps the analyst's review
//! queue, alerts and watchlist, served as `corebank.v1.FraudService`.

pub mod domain;
