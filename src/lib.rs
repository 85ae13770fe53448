#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod maybe_buffered;
pub mod protocol;
mod server;
pub mod store;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "client")]
pub mod client;

/// A property test's configuration: `cases` cases, or `PROPTEST_CASES` when it is set (a
/// mutation run sets it lower, to spend its time on mutants rather than on inputs).
#[cfg(test)]
fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config::with_cases(cases)
}

#[cfg(feature = "postgres")]
pub use crate::store::PostgresStore;
#[cfg(feature = "redis")]
pub use crate::store::RedisStore;
pub use crate::{
    maybe_buffered::MaybeBuffered,
    protocol::IDEMPOTENT_REPLAYED,
    server::{
        defaults, limits, CommitError, Committed, ConfigError, ConflictStatus, HandlerFailure,
        Idempotency, IdempotencyKey, IdempotencyLayer, InFlight, Metrics, NotExecuted, Outcome,
        RequestBody, ResponseBody, ResponseFuture,
    },
    store::{IdempotencyStore, MemoryStore},
};
