//! Make HTTP writes safe to retry: an `Idempotency-Key` middleware for tower and axum.
//!
//! Clients send one key per logical operation and reuse it on every retry. The
//! [`IdempotencyLayer`] records the key *before* the handler's side effect and, on a
//! retry, answers with the recorded response instead of running the handler again; a
//! reused key on a different request, a retry while the first is running, a store that
//! is down: each gets an [RFC 9457 problem](problems) saying what to do.
//!
//! ```
//! use axum::{body::Body, http::Request, routing::post, Router};
//! use tower::ServiceExt;
//! use tower_idempotency::{IdempotencyLayer, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = Router::new()
//!     .route("/orders", post(|| async { "order created" }))
//!     .layer(IdempotencyLayer::new(MemoryStore::new()));
//!
//! let request = || {
//!     Request::post("/orders")
//!         .header("Idempotency-Key", "order-7f3a")
//!         .body(Body::from(r#"{"item":"book"}"#))
//!         .unwrap()
//! };
//! let first = app.clone().oneshot(request()).await.unwrap();
//! let retry = app.clone().oneshot(request()).await.unwrap(); // the response was lost
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! # let _ = first;
//! # }
//! ```
//!
//! # Where to start
//!
//! - [`IdempotencyLayer`]: the server layer and every knob (defaults in [`defaults`]);
//!   [`Idempotency`] is the service it builds.
//! - Stores: [`MemoryStore`] (one process), `RedisStore` (feature `redis`: one server or
//!   a Redis Cluster; `redis-tls` for TLS) and `PostgresStore` (feature `postgres`;
//!   `postgres-tls` for TLS, `sqlx` for an sqlx pool), all in [`store`];
//!   [`store::BoxedStore`] for a store chosen at run time; [`IdempotencyStore`] to write
//!   your own, checked by `store::conformance` (feature `test-util`).
//! - In the handler: [`IdempotencyKey`] (the key, and [`IdempotencyKey::derive`] for the
//!   keys of downstream calls), [`NotExecuted`] (release the key: nothing was done), and
//!   with PostgreSQL `PostgresStore::complete_and_commit` (the record in the handler's own
//!   transaction). The `axum` module (feature `axum`) has extractors whose rejections
//!   release the key.
//! - What the layer answers: [`Outcome`] and [`Metrics`] (what happened to each
//!   request), [`problems`] (every problem type), [`ProblemDetails`] (render them your
//!   way), [`protocol`] (header names, problem types).
//! - The client half: the `client` module (feature `client`), one key per logical call,
//!   retried with it.
//!
//! The crate's README covers the request flow, what a retry gets on each failure, the
//! stores and the benchmarks.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod maybe_buffered;
pub mod protocol;
mod server;
pub mod store;
pub mod telemetry;

#[cfg(feature = "axum")]
pub mod axum;
#[doc = include_str!("../docs/problems.md")]
pub mod problems {}

/// The README's examples, compiled as doctests. They use every feature, with no hidden
/// lines (the README is read on pages that would show them).
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "postgres",
    feature = "sqlx",
    feature = "reqwest"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
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
        ProblemDetails, RequestBody, ResponseBody, ResponseFuture,
    },
    store::{IdempotencyStore, MemoryStore},
};
