//! How long a create with `wait` may wait: the caller's wish, shortened to
//! beat the caller's own deadline (`grpc-timeout`) and the server's.

use std::time::Duration;

use corebank_platform::grpc::DEFAULT_DEADLINE;
use tonic::metadata::MetadataMap;

/// Time kept back from a caller's deadline to answer before it expires.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// The caller's wait, shortened so the answer beats both the caller's own
/// deadline and the server's request timeout.
pub(super) fn effective_wait(wait: Duration, caller_timeout: Option<Duration>) -> Duration {
    let server_limit = DEFAULT_DEADLINE.saturating_sub(Duration::from_secs(1));
    let caller_limit = caller_timeout.map_or(Duration::MAX, |timeout| {
        timeout.saturating_sub(DEADLINE_MARGIN)
    });
    wait.min(server_limit).min(caller_limit)
}

/// The `grpc-timeout` a client sent (`<digits><unit>`, units H M S m u n).
pub(super) fn caller_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain;

    #[test]
    fn a_caller_deadline_shortens_the_wait() {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "2S".parse().unwrap());
        let timeout = caller_timeout(&metadata);
        assert_eq!(timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            effective_wait(Duration::from_secs(10), timeout),
            Duration::from_millis(1750)
        );
        assert_eq!(
            effective_wait(Duration::from_secs(1), timeout),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_wait_never_outlasts_the_server_timeout() {
        assert!(effective_wait(domain::MAX_WAIT, None) < DEFAULT_DEADLINE);
    }

    #[test]
    fn every_grpc_timeout_unit_is_understood() {
        for (text, expected) in [
            ("1H", Duration::from_secs(3600)),
            ("3M", Duration::from_secs(180)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("9n", Duration::from_nanos(9)),
        ] {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(caller_timeout(&metadata), Some(expected), "{text}");
        }
    }
}
