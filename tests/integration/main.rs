//! The integration tests, in one binary to keep link time down.

mod support;

mod composition;
mod concurrency;
mod conformance;
mod failures;
mod flow;
mod keys_and_bodies;
mod observability;
