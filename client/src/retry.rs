//! When a failed call is tried again, and after how long: exponential backoff with jitter,
//! never shorter than the `google.rpc.RetryInfo` delay the server asked for.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// `ErrorInfo.domain` of the errors integration-hub answers.
pub const ERROR_DOMAIN: &str = "integrationhub";

/// How calls are retried. [`RetryPolicy::default`]: 5 attempts, backoff from 100 ms doubling
/// to at most 5 s, with jitter; watch streams reconnect without limit.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts of one unary call, the first included (1 means no retry).
    pub max_attempts: u32,
    /// Backoff before the first retry (before jitter).
    pub initial_backoff: Duration,
    /// The backoff never grows past this (before jitter).
    pub max_backoff: Duration,
    /// Growth of the backoff from one retry to the next.
    pub multiplier: f64,
    /// Consecutive failed reconnects after which a watch stream gives up and yields the last
    /// error; `None` keeps trying (the default: a subscriber should outlast any outage).
    pub max_watch_reconnects: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            max_watch_reconnects: None,
        }
    }
}

impl RetryPolicy {
    /// Every call is tried once, and a watch stream ends with the first error it meets.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            max_watch_reconnects: Some(0),
            ..RetryPolicy::default()
        }
    }

    /// The backoff before retry number `retry` (0 for the first): `initial * multiplier^retry`
    /// capped at `max_backoff`, then "equal jitter" (a random point in its upper half), so
    /// clients that failed together do not come back together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let grown = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = grown.min(self.max_backoff.as_secs_f64()).max(0.0);
        let half = capped / 2.0;
        Duration::from_secs_f64(half + half * fastrand::f64())
    }

    /// How long to wait before retry number `retry` after `status`: the backoff, or the
    /// server's `RetryInfo` delay when that is longer.
    pub fn delay(&self, retry: u32, status: &Status) -> Duration {
        let backoff = self.backoff(retry);
        match retry_info_delay(status) {
            Some(asked) => asked.max(backoff),
            None => backoff,
        }
    }
}

/// The delay of the status's `google.rpc.RetryInfo`, if it carries one.
pub fn retry_info_delay(status: &Status) -> Option<Duration> {
    status.get_details_retry_info()?.retry_delay
}

/// The `ErrorInfo` reason of a status integration-hub answered (domain `integrationhub`).
pub fn error_reason(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == ERROR_DOMAIN)
        .map(|info| info.reason)
}

/// Whether `status` says the call did not happen or may be tried again unchanged: UNAVAILABLE
/// (from the server, or made by the transport when it could not connect), or an error the
/// transport made when a connection broke (no `ErrorInfo` of the service, codes UNKNOWN,
/// INTERNAL or CANCELLED). An INTERNAL the service answered (a broken invariant) is not.
pub fn is_transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => error_reason(status).is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::ErrorDetails;

    fn answered(code: Code, reason: &str) -> Status {
        Status::with_error_details(
            code,
            "m",
            ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
        )
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            multiplier: 2.0,
            ..RetryPolicy::default()
        };
        for (retry, full) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (60, 1000),
        ] {
            let full = Duration::from_millis(full);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                let d = policy.backoff(retry);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
                seen.insert(d);
            }
            assert!(seen.len() > 100, "jittered, not constant");
        }
    }

    #[test]
    fn the_servers_retry_delay_is_a_floor() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        let mut details =
            ErrorDetails::with_error_info("UNAVAILABLE", ERROR_DOMAIN, HashMap::new());
        details.set_retry_info(Some(Duration::from_secs(1)));
        let status = Status::with_error_details(Code::Unavailable, "later", details);
        assert_eq!(retry_info_delay(&status), Some(Duration::from_secs(1)));
        assert_eq!(policy.delay(0, &status), Duration::from_secs(1));
        assert!(policy.delay(0, &Status::unavailable("x")) <= Duration::from_millis(10));
    }

    #[test]
    fn only_unavailable_and_broken_connections_are_transient() {
        assert!(is_transient(&Status::unavailable("tcp connect error")));
        assert!(is_transient(&answered(Code::Unavailable, "UNAVAILABLE")));
        assert!(is_transient(&Status::unknown(
            "error reading a body from connection"
        )));
        assert!(is_transient(&Status::internal("h2 protocol error")));
        assert!(!is_transient(&answered(Code::Internal, "INTERNAL")));
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Aborted,
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            assert!(!is_transient(&Status::new(code, "m")), "{code:?}");
        }
    }
}
