//! The server half: [`IdempotencyLayer`] and the middleware it builds.
//!
//! A request flows one way through these modules, each importing only the steps below it
//! and the leaves they share:
//!
//! `layer` (configuration) → `service` (pass through, or intercept) → `intercept` (key,
//! body, fingerprint, claim; refuse or replay) → `execute` (run the inner service, decide
//! what becomes of the key) → `claim` (renew, complete, release). The leaves: `shared`
//! (store, config, counters), `config` and `defaults`, `buffer` (reading bodies), `record`
//! (response ↔ record), `problem`, `outcome`, `body`, `key`, `fingerprint`, `detach`,
//! `bounds`.

mod body;
mod bounds;
mod buffer;
mod claim;
mod config;
mod conflict_status;
pub mod defaults;
mod detach;
mod execute;
mod fingerprint;
mod future;
mod intercept;
mod key;
mod layer;
mod outcome;
mod problem;
mod record;
mod service;
mod shared;

pub use self::{
    body::{RequestBody, ResponseBody},
    conflict_status::ConflictStatus,
    future::ResponseFuture,
    layer::IdempotencyLayer,
    outcome::{Metrics, Outcome},
    service::Idempotency,
};
