//! What the client layer did for one call.

use std::time::Duration;

use http::StatusCode;

/// The record of one call, in the response's extensions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOutcome {
    /// The key sent on every attempt (`None`: the call had no key and was sent once).
    pub key: Option<String>,
    /// Every attempt, in order; the last one produced the response.
    pub attempts: Vec<Attempt>,
    /// Whether the server answered with a replay of an earlier attempt's response
    /// (`Idempotent-Replayed: true`, or a peer's marker: `Idempotency-Replayed`,
    /// `X-Idempotent-Replayed`).
    pub replayed: bool,
}

/// One attempt of a call.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Attempt {
    /// How long the layer waited before sending it.
    pub waited: Duration,
    /// What came back.
    pub result: AttemptResult,
}

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptResult {
    /// A response with this status.
    Status(StatusCode),
    /// A transport error (connection refused or reset, response lost), as text.
    TransportError(String),
    /// No response within the per-attempt timeout.
    TimedOut,
}
