//! The server layer's defaults, each in one place: [`IdempotencyLayer::new`] starts from
//! these, and each builder method's docs name the one it replaces.
//!
//! [`IdempotencyLayer::new`]: crate::IdempotencyLayer::new

use std::time::Duration;

use http::{header, HeaderName, Method, StatusCode};

use super::choices::{ConflictStatus, HandlerFailure};
use crate::protocol;

/// The header that carries the key: `Idempotency-Key`.
pub const HEADER_NAME: HeaderName = protocol::IDEMPOTENCY_KEY;

/// The methods intercepted: POST and PATCH (PUT, DELETE and GET are idempotent by
/// definition).
pub const METHODS: [Method; 2] = [Method::POST, Method::PATCH];

/// Whether an intercepted request must carry a key: no, it passes through unprotected.
pub const REQUIRE_KEY: bool = false;

/// The status of a conflict: `409 Conflict`.
pub const CONFLICT_STATUS: ConflictStatus = ConflictStatus::Conflict;

/// How long a completed response is kept for replay: 24 hours.
pub const TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claim lives without renewal: 30 seconds (renewed every third of it while the
/// handler runs).
pub const LEASE: Duration = Duration::from_secs(30);

/// The largest request body buffered: 2 MiB, axum's default limit.
pub const MAX_REQUEST_BODY: usize = 2 * 1024 * 1024;

/// The largest response body recorded: 1 MiB.
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// The headers whose values enter the caller's digest: `authorization`, `cookie`,
/// `x-api-key`: whatever may identify the caller, so that by default no caller is ever
/// shown another's response. A browser's retry often carries changed cookies (analytics,
/// a refreshed session); it is then refused as `other-credentials` (never told to use a
/// new key). Name the cookies that identify the caller with
/// [`fingerprint_cookies`](crate::IdempotencyLayer::fingerprint_cookies) so that the
/// others do not count.
pub const FINGERPRINT_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// Whether the authority (the host a request was sent to) is part of the request
/// digest: yes, so that another virtual host never gets this one's replay.
pub const FINGERPRINT_AUTHORITY: bool = true;

/// The prefix of the layer's records: `idem`.
pub const NAMESPACE: &str = "idem";

/// Whether the request runs unprotected when the store is down: no, it is answered `503`.
pub const FAIL_OPEN: bool = false;

/// The statuses that release the claim instead of recording it: 425, 429 and 503. Not
/// 408: a timeout layer inside this one answers it after cutting a write in half.
pub const TRANSIENT_STATUSES: [StatusCode; 3] = [
    StatusCode::TOO_EARLY,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// Response headers never recorded, on top of the hop-by-hop ones: `set-cookie`.
pub const UNSTORED_HEADERS: [HeaderName; 1] = [header::SET_COOKIE];

/// The headers a replay carries, each with the value `true`: `Idempotent-Replayed`.
pub const REPLAY_HEADERS: [HeaderName; 1] = [protocol::IDEMPOTENT_REPLAYED];

/// Whether responses say until when their key's record is kept: no.
pub const ADVERTISE_EXPIRY: bool = false;

/// Whether the handler is driven to completion when the client goes away: yes.
pub const RUN_TO_COMPLETION: bool = true;

/// The bound on every store call: 5 seconds.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What becomes of the key when the handler fails after it started: recorded as a `500`
/// that says the outcome is unknown.
pub const HANDLER_FAILURE: HandlerFailure = HandlerFailure::Record;

/// How long a completion that failed is retried, the claim held and its lease renewed
/// meanwhile: 60 seconds.
pub const COMPLETION_RETRY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = include_str!("../../README.md");

    fn duration(d: Duration) -> String {
        match d.as_secs() {
            s if s % 3600 == 0 => format!("{} h", s / 3600),
            s => format!("{s} s"),
        }
    }

    fn mib(bytes: usize) -> String {
        format!("{} MiB", bytes / (1024 * 1024))
    }

    fn yes_no(b: bool) -> &'static str {
        if b {
            "yes"
        } else {
            "no"
        }
    }

    fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
        items.iter().map(show).collect::<Vec<_>>().join(", ")
    }

    /// The README's defaults table shows each constant's value: this keeps the one
    /// place (the constant) and its description together.
    #[test]
    fn the_readme_table_shows_the_constants() {
        let code = |s: StatusCode| s.as_u16().to_string();
        let name = |h: &HeaderName| h.as_str().to_owned();
        let rows = [
            ("HEADER_NAME", format!("`{}`", HEADER_NAME.as_str())),
            ("METHODS", list(&METHODS, Method::to_string)),
            ("REQUIRE_KEY", yes_no(REQUIRE_KEY).to_owned()),
            ("CONFLICT_STATUS", code(CONFLICT_STATUS.status())),
            ("LEASE", duration(LEASE)),
            ("TTL", duration(TTL)),
            ("MAX_REQUEST_BODY", mib(MAX_REQUEST_BODY)),
            ("MAX_RESPONSE_BODY", mib(MAX_RESPONSE_BODY)),
            ("FINGERPRINT_HEADERS", list(&FINGERPRINT_HEADERS, name)),
            (
                "FINGERPRINT_AUTHORITY",
                yes_no(FINGERPRINT_AUTHORITY).to_owned(),
            ),
            ("NAMESPACE", format!("`{NAMESPACE}`")),
            ("FAIL_OPEN", format!("{} (503)", yes_no(FAIL_OPEN))),
            (
                "TRANSIENT_STATUSES",
                list(&TRANSIENT_STATUSES, |s| code(*s)),
            ),
            ("UNSTORED_HEADERS", list(&UNSTORED_HEADERS, name)),
            ("REPLAY_HEADERS", list(&REPLAY_HEADERS, name)),
            ("ADVERTISE_EXPIRY", yes_no(ADVERTISE_EXPIRY).to_owned()),
            ("RUN_TO_COMPLETION", yes_no(RUN_TO_COMPLETION).to_owned()),
            ("STORE_TIMEOUT", duration(STORE_TIMEOUT)),
            ("COMPLETION_RETRY", duration(COMPLETION_RETRY)),
            (
                "HANDLER_FAILURE",
                format!("{HANDLER_FAILURE:?} (500 `outcome-unknown`)"),
            ),
        ];
        for (constant, value) in rows {
            let cell = format!("| `{constant}` | {value} |");
            assert!(README.contains(&cell), "README lacks {cell}");
        }
    }
}
