//! The retry policy: which answers may be retried with the same key, and how long to
//! wait before the next attempt.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use retry_policies::{policies::ExponentialBackoff, Jitter, RetryDecision, RetryPolicy};
use tokio::time::Instant;

use super::config::ClientConfig;
use crate::protocol::ProblemType;

/// Whether a status may be retried with the same key. A `409` is retried only when it is
/// "in progress": it carries `Retry-After`, or its problem type says so; a conflict does
/// neither.
pub(crate) fn retryable_status(status: StatusCode) -> Retry {
    match status.as_u16() {
        429 | 502 | 503 | 504 => Retry::Yes,
        409 => Retry::IfInProgress,
        _ => Retry::No,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Yes,
    No,
    /// Read the body to tell in progress from a conflict.
    IfInProgress,
}

/// Whether a `409` says "in progress" rather than "conflict".
pub(crate) fn in_progress(headers: &HeaderMap, body: &Bytes) -> bool {
    if headers.contains_key(header::RETRY_AFTER) {
        return true;
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|problem| {
            let kind = ProblemType::from_uri(problem.get("type")?.as_str()?)?;
            Some(kind == ProblemType::InProgress)
        })
        .unwrap_or(false)
}

/// The longest `Retry-After` taken from the wire: a day. A server's larger value (or a
/// hostile one, `18446744073709551615`) is read as this; the call's time cap decides the
/// rest.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The `Retry-After` of a response, in seconds or as an HTTP-date, at most
/// [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let date = httpdate::parse_http_date(value).ok()?;
            date.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Exponential backoff with full jitter (through `retry-policies`): a uniform wait
/// between zero and `min(cap, base × 2^(retry − 1))`, for the `retry`-th retry (from 1).
pub(crate) fn jittered(base: Duration, cap: Duration, retry: u32) -> Duration {
    // Bounded so that the crate's arithmetic cannot overflow, and its bounds never cross.
    let cap = cap.min(MAX_RETRY_AFTER);
    let backoff = ExponentialBackoff::builder()
        .retry_bounds(base.min(cap), cap)
        .jitter(Jitter::Full)
        .base(2)
        .build_with_max_retries(u32::MAX);
    // The crate adds its wait to the clock it reads; the clock read here may be earlier,
    // or stepped: the wait is clamped to its ceiling.
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(cap);
    let now = SystemTime::now();
    match backoff.should_retry(now, retry.saturating_sub(1)) {
        RetryDecision::Retry { execute_after } => execute_after
            .duration_since(now)
            .unwrap_or_default()
            .min(ceiling),
        RetryDecision::DoNotRetry => ceiling,
    }
}

/// Whether an attempt's answer may be retried with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Final: hand it to the caller.
    Final,
    /// Retryable, waiting at least the server's `Retry-After`, if it gave one.
    Retry { after: Option<Duration> },
}

/// The attempts of one call: how many it may make, until when, and how long to wait
/// between them. Both client halves (the tower layer and the reqwest middleware) run
/// their calls on it.
#[derive(Debug)]
pub(crate) struct Schedule {
    made: u32,
    max_attempts: u32,
    /// `None`: a cap too far to reach (a `max_elapsed` of `Duration::MAX`).
    deadline: Option<Instant>,
    base: Duration,
    cap: Duration,
}

impl Schedule {
    /// The schedule of a call; a call without a key gets one attempt.
    pub(crate) fn new(config: &ClientConfig, keyed: bool) -> Self {
        Self {
            made: 0,
            max_attempts: if keyed { config.max_attempts.get() } else { 1 },
            deadline: Instant::now().checked_add(config.max_elapsed),
            base: config.base_delay,
            cap: config.max_delay,
        }
    }

    /// Counts one more attempt, answered with `verdict`: the wait before the next
    /// attempt, or `None` when the call ends here (a final answer, the attempts spent,
    /// or a wait that would end past the time cap).
    pub(crate) fn after(&mut self, verdict: Verdict) -> Option<Duration> {
        self.made += 1;
        let Verdict::Retry { after } = verdict else {
            return None;
        };
        if self.made >= self.max_attempts {
            return None;
        }
        let wait = jittered(self.base, self.cap, self.made).max(after.unwrap_or_default());
        let past = match (self.deadline, Instant::now().checked_add(wait)) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(deadline), Some(end)) => end > deadline,
        };
        (!past).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        headers.insert(header::RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        headers.insert(header::RETRY_AFTER, past.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn retry_after_from_the_wire_is_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "18446744073709551615".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(MAX_RETRY_AFTER));
        headers.insert(
            header::RETRY_AFTER,
            "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(MAX_RETRY_AFTER));
        headers.insert(
            header::RETRY_AFTER,
            "99999999999999999999999".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, now), None, "not a number, not a date");
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config(10_000))]
        /// Any bytes a server may send as `Retry-After`: never a panic, never past the bound.
        #[test]
        fn any_retry_after_is_bounded_and_never_panics(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let Ok(value) = http::HeaderValue::from_bytes(&raw) else { return Ok(()) };
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, value);
            if let Some(wait) = retry_after(&headers, SystemTime::now()) {
                proptest::prop_assert!(wait <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn any_number_of_seconds_is_bounded(seconds in proptest::num::u64::ANY) {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
            let wait = retry_after(&headers, SystemTime::now()).unwrap();
            proptest::prop_assert_eq!(wait, Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
        }
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for code in [429, 502, 503, 504] {
            assert_eq!(
                retryable_status(StatusCode::from_u16(code).unwrap()),
                Retry::Yes
            );
        }
        for code in [200, 201, 400, 401, 404, 422, 500, 501] {
            assert_eq!(
                retryable_status(StatusCode::from_u16(code).unwrap()),
                Retry::No
            );
        }
        assert_eq!(retryable_status(StatusCode::CONFLICT), Retry::IfInProgress);
    }

    #[test]
    fn a_conflict_is_not_in_progress() {
        let conflict = Bytes::from_static(br#"{"type":"urn:tower-idempotency:problem:conflict"}"#);
        let busy = Bytes::from_static(br#"{"type":"urn:tower-idempotency:problem:in-progress"}"#);
        assert!(!in_progress(&HeaderMap::new(), &conflict));
        let other =
            Bytes::from_static(br#"{"type":"urn:tower-idempotency:problem:other-credentials"}"#);
        assert!(
            !in_progress(&HeaderMap::new(), &other),
            "never retried: new credentials would not help"
        );
        assert!(in_progress(&HeaderMap::new(), &busy));
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "1".parse().unwrap());
        assert!(in_progress(&headers, &Bytes::new()));
    }

    #[test]
    fn jitter_stays_under_the_exponential_ceiling() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        for retry in 1..10 {
            let ceiling = (base * 2u32.pow(retry - 1)).min(cap);
            for _ in 0..100 {
                assert!(jittered(base, cap, retry) <= ceiling);
            }
        }
    }
}
