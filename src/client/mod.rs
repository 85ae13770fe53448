//! The client half (feature `client`): one idempotency key per logical call, reused on
//! every retry of that call.
//!
//! The most common idempotency bug is a key minted inside the retry loop: every retry is
//! then a new operation, and the server runs it again. [`IdempotencyClientLayer`] wraps an
//! HTTP client (hyper-util's legacy `Client<_, Full<Bytes>>`, or any tower
//! `Service<http::Request<Full<Bytes>>>`) and, for each POST or PATCH call:
//!
//! - keeps the key the caller set, or derives one from the request with
//!   [`key_from`](IdempotencyClientLayer::key_from), or mints a UUID v4, once;
//! - buffers the body once, so every attempt sends identical bytes;
//! - retries transport errors, `409` in progress, `429`, `502`, `503` and `504` with
//!   exponential backoff and full jitter, waiting at least `Retry-After` (seconds or
//!   HTTP-date), within a cap on attempts and on total time;
//! - never retries a conflict (`409` without `Retry-After`), `422` or another `4xx`, nor a
//!   call without a key.
//!
//! The response carries a [`ClientOutcome`] in its extensions: the key, every attempt,
//! and whether the server replayed the response.
//!
//! With `reqwest` (feature `reqwest`), the same configuration is a `reqwest-middleware`
//! middleware: `IdempotencyClientLayer::new().reqwest_middleware()`, an
//! `IdempotencyMiddleware` whose docs say how to set it up beside `reqwest-retry`.
//! Both halves run their calls on one retry schedule.
//!
//! **Keys that survive a restart**: a key minted in memory dies with the process, and a
//! process that crashed mid-call would mint another. Persist the key with your local
//! attempt before the first send, and derive it from that record with
//! [`key_from`](IdempotencyClientLayer::key_from): one key per logical operation, such
//! as `checkout:<attemptId>` (`examples/reqwest_client.rs --intent-file` shows it).
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_idempotency::client::{ClientOutcome, IdempotencyClientLayer};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let client = ServiceBuilder::new()
//!     .layer(IdempotencyClientLayer::new())
//!     .service(http);
//! let request = http::Request::post("http://127.0.0.1:3000/orders")
//!     .body(Full::new(Bytes::from(r#"{"item":"book","quantity":1}"#)))?;
//! // `oneshot` (or `ready` with the request type spelled out): the client takes any body.
//! let response = client.clone().oneshot(request).await?;
//! let outcome = response.extensions().get::<ClientOutcome>().unwrap();
//! println!("{} after {} attempt(s)", response.status(), outcome.attempts.len());
//! # Ok(()) }
//! ```

mod body;
mod call;
mod config;
pub mod defaults;
mod layer;
mod outcome;
mod policy;
mod problem_body;
#[cfg(feature = "reqwest")]
mod reqwest;
mod service;

#[cfg(feature = "reqwest")]
pub use self::reqwest::IdempotencyMiddleware;
pub use self::{
    body::ClientResponseBody,
    layer::IdempotencyClientLayer,
    outcome::{Attempt, AttemptResult, AttemptTimedOut, ClientOutcome},
    service::{IdempotencyClient, ResponseFuture},
};
