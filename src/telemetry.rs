//! The metrics the layer and its stores emit through the [`metrics`] facade (feature
//! `metrics`), for whichever exporter the application installs (Prometheus with
//! `metrics-exporter-prometheus`, OpenTelemetry through a `metrics` bridge, …). Without
//! the feature, or without an installed recorder, nothing is emitted and nothing costs.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `idempotency_requests_total` | counter | `outcome` ([`Outcome::as_str`]) | requests the layer handled, by what became of them |
//! | `idempotency_store_call_seconds` | histogram | `store`, `operation` (`begin`, `complete`, `release`, `get`), `result` (`ok`, `error`) | how long each store call took, the layer's timeout included |
//! | `idempotency_claims_in_flight` | gauge | — | claims the layer holds right now (see [`InFlight`]) |
//! | `idempotency_lease_renewals_total` | counter | `result` (`ok`, `fenced`, `error`) | lease renewals of running requests |
//! | `idempotency_fenced_writes_total` | counter | `operation` (`complete`, `release`, `renew`) | writes refused because the claim was no longer the caller's |
//! | `idempotency_record_failures_total` | counter | — | responses that could not be stored after the handler ran ([`Metrics::record_failures`]) |
//! | `idempotency_completion_retries_total` | counter | — | completions retried after a store failure ([`Metrics::completion_retries`]) |
//! | `idempotency_memory_evictions_total` | counter | `reason` (`expired`, `lru`) | records the [`MemoryStore`] removed to make room or because they expired |
//! | `idempotency_memory_refused_claims_total` | counter | — | claims the [`MemoryStore`] refused because it (or the caller's scope) was full |
//! | `idempotency_replay_cache_lookups_total` | counter | `store`, `result` (`hit`, `miss`) | claims a [`ReplayCache`] answered from its copies (`hit`: a replay) or passed to the store behind it, `store` |
//!
//! `store` is the store's [`metrics_name`]: its type's name (`MemoryStore`, `RedisStore`,
//! `PostgresStore`, or your own store's); for a [`BoxedStore`], the name of the store
//! inside; for a [`ReplayCache`], `ReplayCache<` that name `>` (its hits are answered in
//! the process, and never timed as the store's round trips). The names are the constants
//! of this module.
//!
//! [`metrics`]: https://docs.rs/metrics
//! [`Outcome::as_str`]: crate::Outcome::as_str
//! [`InFlight`]: crate::InFlight
//! [`Metrics::record_failures`]: crate::Metrics::record_failures
//! [`Metrics::completion_retries`]: crate::Metrics::completion_retries
//! [`MemoryStore`]: crate::MemoryStore
//! [`ReplayCache`]: crate::store::ReplayCache
//! [`BoxedStore`]: crate::store::BoxedStore
//! [`metrics_name`]: crate::IdempotencyStore::metrics_name

/// Counter of the requests the layer handled, labelled `outcome`.
pub const REQUESTS: &str = "idempotency_requests_total";
/// Histogram of store call durations in seconds, labelled `store`, `operation`, `result`.
pub const STORE_CALL_SECONDS: &str = "idempotency_store_call_seconds";
/// Gauge of the claims the layer holds.
pub const CLAIMS_IN_FLIGHT: &str = "idempotency_claims_in_flight";
/// Counter of lease renewals, labelled `result`.
pub const LEASE_RENEWALS: &str = "idempotency_lease_renewals_total";
/// Counter of writes refused because the claim was lost, labelled `operation`.
pub const FENCED_WRITES: &str = "idempotency_fenced_writes_total";
/// Counter of responses not stored after the handler ran.
pub const RECORD_FAILURES: &str = "idempotency_record_failures_total";
/// Counter of completions retried after a store failure.
pub const COMPLETION_RETRIES: &str = "idempotency_completion_retries_total";
/// Counter of records the memory store removed, labelled `reason`.
pub const MEMORY_EVICTIONS: &str = "idempotency_memory_evictions_total";
/// Counter of claims the memory store refused.
pub const MEMORY_REFUSED_CLAIMS: &str = "idempotency_memory_refused_claims_total";
/// Counter of a replay cache's lookups, labelled `store` and `result`.
pub const REPLAY_CACHE_LOOKUPS: &str = "idempotency_replay_cache_lookups_total";

/// The emitters (the store call's duration is emitted where it is measured, in
/// `Shared::timed`).
#[cfg(feature = "metrics")]
pub(crate) mod emit {
    use std::time::Duration;

    pub(crate) fn request(outcome: &'static str) {
        metrics::counter!(super::REQUESTS, "outcome" => outcome).increment(1);
    }

    pub(crate) fn store_call(
        store: &'static str,
        operation: &'static str,
        ok: bool,
        took: Duration,
    ) {
        let result = if ok { "ok" } else { "error" };
        metrics::histogram!(
            super::STORE_CALL_SECONDS,
            "store" => store,
            "operation" => operation,
            "result" => result
        )
        .record(took.as_secs_f64());
    }

    pub(crate) fn claims_in_flight(change: f64) {
        metrics::gauge!(super::CLAIMS_IN_FLIGHT).increment(change);
    }

    pub(crate) fn lease_renewal(result: &'static str) {
        metrics::counter!(super::LEASE_RENEWALS, "result" => result).increment(1);
    }

    pub(crate) fn fenced_write(operation: &'static str) {
        metrics::counter!(super::FENCED_WRITES, "operation" => operation).increment(1);
    }

    pub(crate) fn record_failure() {
        metrics::counter!(super::RECORD_FAILURES).increment(1);
    }

    pub(crate) fn completion_retry() {
        metrics::counter!(super::COMPLETION_RETRIES).increment(1);
    }

    pub(crate) fn memory_eviction(reason: &'static str) {
        metrics::counter!(super::MEMORY_EVICTIONS, "reason" => reason).increment(1);
    }

    pub(crate) fn memory_refused_claim() {
        metrics::counter!(super::MEMORY_REFUSED_CLAIMS).increment(1);
    }

    pub(crate) fn replay_cache_lookup(store: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        metrics::counter!(super::REPLAY_CACHE_LOOKUPS, "store" => store, "result" => result)
            .increment(1);
    }
}

/// Without the feature, the emitters do nothing.
#[cfg(not(feature = "metrics"))]
pub(crate) mod emit {
    pub(crate) fn request(_: &'static str) {}
    pub(crate) fn claims_in_flight(_: f64) {}
    pub(crate) fn lease_renewal(_: &'static str) {}
    pub(crate) fn fenced_write(_: &'static str) {}
    pub(crate) fn record_failure() {}
    pub(crate) fn completion_retry() {}
    pub(crate) fn memory_eviction(_: &'static str) {}
    pub(crate) fn memory_refused_claim() {}
    pub(crate) fn replay_cache_lookup(_: &'static str, _: bool) {}
}
