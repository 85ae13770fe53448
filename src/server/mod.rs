//! The server half: [`IdempotencyLayer`] and the middleware it builds.
//!
//! A request flows one way through these modules, each importing only the steps below it
//! and the leaves they share:
//!
//! `layer`, `answers`, `body_reading` and `grpc_methods` (configuration) → `service` (pass through, or intercept) → `intercept` (key,
//! body, fingerprint, claim; refuse or replay) → `execute` (run the inner service, decide
//! what becomes of the key) → `claim` (renew, complete, release) → `store_retries` (writes
//! tried again, background releases). The leaves: `shared`
//! (store, config, counters), `config`, `defaults`, `limits` and `choices`, `buffer`
//! (reading bodies), `record` (response ↔ record), `problem` and `problem_details`, `grpc`
//! (gRPC calls: the methods protected, their status, the layer's answers), `outcome`, `body`, `key`, `key_source`, `json_body`,
//! `fingerprint`, `detach`, `bounds`, and what the handler sees: `idempotency_key`,
//! `not_executed`, `completion` and `handler_record`.

mod answers;
mod body;
mod body_reading;
mod bounds;
mod buffer;
mod choices;
mod claim;
mod completion;
mod config;
pub mod defaults;
mod detach;
mod execute;
mod fingerprint;
mod future;
mod grpc;
mod grpc_methods;
#[cfg(feature = "postgres")]
pub(crate) mod handler_record;
mod idempotency_key;
mod in_flight;
mod intercept;
mod json_body;
mod key;
mod key_source;
mod layer;
pub mod limits;
mod not_executed;
mod outcome;
mod problem;
mod problem_details;
mod record;
mod service;
mod shared;
mod store_retries;

#[cfg(feature = "axum")]
pub(crate) use self::problem::{key_rejection, KeyRejectionKind};
pub use self::{
    body::{RequestBody, ResponseBody},
    choices::{ConflictStatus, HandlerFailure},
    completion::{CommitError, Committed},
    future::ResponseFuture,
    idempotency_key::IdempotencyKey,
    in_flight::InFlight,
    layer::IdempotencyLayer,
    limits::ConfigError,
    not_executed::NotExecuted,
    outcome::{Metrics, Outcome},
    problem_details::ProblemDetails,
    service::Idempotency,
};
