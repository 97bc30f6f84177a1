//! Serde for durations as whole seconds (an integer in jsonb), so stored
//! snapshots and rule sets read the same in SQL and survive a round trip.
//! Sub-second parts are dropped: the domain only ever holds whole seconds
//! (the proto edge refuses fractions, [`super::features::age`] truncates).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// `#[serde(with = "seconds")]` for a `Duration`.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_secs())
}

/// `#[serde(with = "seconds")]` for a `Duration`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

/// `#[serde(with = "seconds::option")]` for an `Option<Duration>` (null when absent).
pub mod option {
    use super::*;

    /// Whole seconds, or null.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&duration.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    /// Whole seconds, or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(deserializer).map(|seconds| seconds.map(Duration::from_secs))
    }
}
