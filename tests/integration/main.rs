//! The integration tests, in one binary to keep link time down.

mod support;

#[cfg(any(feature = "redis", feature = "postgres"))]
mod backend_faults;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod backends;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod cleanup;
#[cfg(feature = "postgres")]
mod commit_crash;
#[cfg(feature = "postgres")]
mod postgres_store;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod processes;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod proxy;
#[cfg(feature = "redis")]
mod redis_failover;
#[cfg(feature = "redis")]
mod redis_store;
#[cfg(feature = "reqwest")]
mod reqwest_client;
#[cfg(any(feature = "redis-tls", feature = "postgres-tls"))]
mod tls;
#[cfg(feature = "postgres")]
mod transactional;

mod answers;
#[cfg(feature = "client")]
mod client;
mod composition;
mod concurrency;
mod conformance;
mod docs;
mod failures;
mod faults;
mod faulty_store;
mod flow;
mod grpc_shaped;
mod handler_key;
mod key_sources;
mod keys_and_bodies;
mod observability;
mod replay_cache;
#[cfg(feature = "metrics")]
mod telemetry;
mod trailers;
