//! What happened to an intercepted request: the [`Outcome`] in the response extensions,
//! and the [`Metrics`] counters of those outcomes.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crate::telemetry::emit;

/// What the layer did with an intercepted request.
///
/// Inserted into the extensions of every response to an intercepted request, so outer
/// layers, metrics and tests can read it without parsing bodies:
///
/// ```
/// # use tower_idempotency::Outcome;
/// # let response = http::Response::new(());
/// match response.extensions().get::<Outcome>() {
///     Some(Outcome::Replayed) => { /* served from the store */ }
///     Some(other) => println!("idempotency outcome: {other}"),
///     None => { /* not intercepted: other method, or no key */ }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A fresh key: the inner service ran and its response was recorded.
    Fresh,
    /// A completed key: the recorded response was replayed; the inner service did not run.
    Replayed,
    /// The key is held by a different request: `409` (or `422`).
    Conflict,
    /// The key is held by this same request sent with other credentials: `409` (or
    /// `422`), with the advice to retry with the original credentials.
    OtherCredentials,
    /// The key is held by the same request, still running: `409` with `Retry-After`.
    InProgress,
    /// The key is malformed, repeated, or required and absent: `400`.
    InvalidKey,
    /// The request body is over `max_request_body`: `413`.
    TooLarge,
    /// The request body failed while it was read: `400`.
    BodyUnreadable,
    /// The route reads the body as JSON (its key or its fingerprint), and it is not:
    /// `400`.
    InvalidJson,
    /// The store failed at claim time: `503` (fail closed), or the request ran
    /// unprotected (fail open).
    StoreError,
    /// The store holds a record under this key that it cannot read (corrupt, foreign):
    /// `500`, nothing run.
    RecordUnreadable,
    /// The key completed, but its response was not kept (too large, or its body failed):
    /// `409`, nothing run.
    ResponseNotStored,
    /// The inner service ran but its answer (a transient status, or an error or panic with
    /// [`HandlerFailure::Release`](crate::HandlerFailure::Release)) released the key, so a
    /// retry runs afresh.
    Released,
    /// The inner service failed (an error or a panic) after it started: its outcome is
    /// unknown, so the key was recorded as a `500` problem that says so, and a retry gets
    /// that answer rather than a second run.
    HandlerFailed,
    /// The inner service said nothing was executed ([`NotExecuted`](crate::NotExecuted),
    /// as the `axum` extractors' rejections do): the key was released and its answer not
    /// recorded, so a corrected retry runs.
    NotExecuted,
}

impl Outcome {
    /// All outcomes, in declaration order.
    pub const ALL: [Outcome; 15] = [
        Self::Fresh,
        Self::Replayed,
        Self::Conflict,
        Self::OtherCredentials,
        Self::InProgress,
        Self::InvalidKey,
        Self::TooLarge,
        Self::BodyUnreadable,
        Self::InvalidJson,
        Self::StoreError,
        Self::RecordUnreadable,
        Self::ResponseNotStored,
        Self::Released,
        Self::HandlerFailed,
        Self::NotExecuted,
    ];

    /// The outcome's name as it appears in the tracing span (`fresh`, `replayed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Replayed => "replayed",
            Self::Conflict => "conflict",
            Self::OtherCredentials => "other_credentials",
            Self::InProgress => "in_progress",
            Self::InvalidKey => "invalid_key",
            Self::TooLarge => "too_large",
            Self::BodyUnreadable => "body_unreadable",
            Self::InvalidJson => "invalid_json",
            Self::StoreError => "store_error",
            Self::RecordUnreadable => "record_unreadable",
            Self::ResponseNotStored => "response_not_stored",
            Self::Released => "released",
            Self::HandlerFailed => "handler_failed",
            Self::NotExecuted => "not_executed",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).expect("listed")
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of the layer's outcomes, shared by every clone of one layer and its services.
///
/// Get it from [`IdempotencyLayer::metrics`](crate::IdempotencyLayer::metrics) and export
/// it to your metrics system:
///
/// ```
/// use tower_idempotency::{IdempotencyLayer, MemoryStore, Outcome};
///
/// let layer = IdempotencyLayer::new(MemoryStore::new());
/// let metrics = layer.metrics();
/// assert_eq!(metrics.count(Outcome::Replayed), 0);
/// for (outcome, count) in metrics.snapshot() {
///     println!("idempotency_requests_total{{outcome=\"{outcome}\"}} {count}");
/// }
/// ```
#[derive(Clone, Default)]
pub struct Metrics {
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    record_failures: AtomicU64,
    completion_retries: AtomicU64,
}

impl Metrics {
    /// How many intercepted requests ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counters.outcomes[outcome.index()].load(Ordering::Relaxed)
    }

    /// Every outcome with its count.
    pub fn snapshot(&self) -> Vec<(Outcome, u64)> {
        Outcome::ALL.iter().map(|&o| (o, self.count(o))).collect()
    }

    /// How many responses (or releases) could not be stored after the inner service had
    /// run: the store kept failing for the whole
    /// [`completion_retry`](crate::IdempotencyLayer::completion_retry) period, or the claim
    /// was lost meanwhile. The client still got its response; such a key stays in flight
    /// until its lease ends, and a retry after that runs again.
    pub fn record_failures(&self) -> u64 {
        self.counters.record_failures.load(Ordering::Relaxed)
    }

    /// How many completions failed at first and were retried (while the claim was held and
    /// its lease renewed). Those that were stored in the end are not record failures.
    pub fn completion_retries(&self) -> u64 {
        self.counters.completion_retries.load(Ordering::Relaxed)
    }

    pub(crate) fn add_completion_retry(&self) {
        self.counters
            .completion_retries
            .fetch_add(1, Ordering::Relaxed);
        emit::completion_retry();
    }

    pub(crate) fn add(&self, outcome: Outcome) {
        self.counters.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        emit::request(outcome.as_str());
    }

    pub(crate) fn add_record_failure(&self) {
        self.counters
            .record_failures
            .fetch_add(1, Ordering::Relaxed);
        emit::record_failure();
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (outcome, count) in self.snapshot() {
            map.entry(&outcome.as_str(), &count);
        }
        map.entry(&"record_failures", &self.record_failures())
            .entry(&"completion_retries", &self.completion_retries())
            .finish()
    }
}
