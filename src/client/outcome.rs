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

/// The error of a call whose last attempt got no answer within the
/// [`attempt_timeout`](super::IdempotencyClientLayer::attempt_timeout): the error the
/// client layer returns (a `tower::BoxError`), and inside the `reqwest_middleware::Error::Middleware`
/// the middleware returns. Tell it apart with `downcast_ref::<AttemptTimedOut>()`, to
/// retry it with the same key yourself (say, from `reqwest-retry` beside a `keys_only`
/// `IdempotencyMiddleware`, feature `reqwest`: its default policy takes a middleware's
/// error as final).
///
/// ```
/// use tower_idempotency::client::AttemptTimedOut;
///
/// let err: Box<dyn std::error::Error + Send + Sync> = Box::new(AttemptTimedOut::default());
/// assert!(err.downcast_ref::<AttemptTimedOut>().is_some());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptTimedOut {
    /// Whether the answer came (a `409`) but not its body in time.
    pub body: bool,
}

impl std::fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.body {
            "idempotency: the 409's body did not come within the attempt timeout"
        } else {
            "idempotency: no response within the attempt timeout"
        })
    }
}

impl std::error::Error for AttemptTimedOut {}
