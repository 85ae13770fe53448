#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod maybe_buffered;
pub mod protocol;
mod server;
pub mod store;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "postgres")]
pub use crate::store::PostgresStore;
#[cfg(feature = "redis")]
pub use crate::store::RedisStore;
pub use crate::{
    maybe_buffered::MaybeBuffered,
    protocol::IDEMPOTENT_REPLAYED,
    server::{
        defaults, limits, ConfigError, ConflictStatus, HandlerFailure, Idempotency,
        IdempotencyLayer, InFlight, Metrics, Outcome, RequestBody, ResponseBody, ResponseFuture,
    },
    store::{IdempotencyStore, MemoryStore},
};
