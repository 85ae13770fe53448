#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod body;
mod execute;
mod fingerprint;
mod future;
mod intercept;
mod key;
mod layer;
mod outcome;
mod problem;
mod replay;
mod service;

pub mod store;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "test-util")]
pub mod conformance;

pub use crate::{
    body::{RequestBody, ResponseBody},
    future::ResponseFuture,
    layer::IdempotencyLayer,
    outcome::{Metrics, Outcome},
    replay::IDEMPOTENT_REPLAYED,
    service::Idempotency,
    store::{IdempotencyStore, MemoryStore},
};
