//! The wire vocabulary both halves speak: header names, the problem media type and the
//! problem types the server answers with.
//!
//! The server layer writes these; the client layer reads them. Neither half imports the
//! other: both import this module.

use http::HeaderName;

/// The header that carries the key, as the IETF draft names it (`Idempotency-Key`).
/// Both layers use it unless configured with another name.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The header a replayed response carries, with the value `true`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `Idempotency-Replayed`, the replay marker some other servers send
/// ([`IdempotencyLayer::replay_headers`](crate::IdempotencyLayer::replay_headers) adds
/// it; the client layer recognises it).
pub const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// `X-Idempotent-Replayed`, the replay marker other servers send, as
/// [`IDEMPOTENCY_REPLAYED`].
pub const X_IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("x-idempotent-replayed");

/// `Idempotency-Expires`: the HTTP-date until which the server keeps the record of this
/// key, on fresh and replayed responses when the layer advertises it
/// ([`IdempotencyLayer::advertise_expiry`](crate::IdempotencyLayer::advertise_expiry)).
/// Until then, a retry with the key is answered from the record.
pub const IDEMPOTENCY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-expires");

/// Every replay marker the client layer recognises: ours and the peers'.
pub const REPLAY_MARKERS: [HeaderName; 3] = [
    IDEMPOTENT_REPLAYED,
    IDEMPOTENCY_REPLAYED,
    X_IDEMPOTENT_REPLAYED,
];

/// `Idempotency-Problem`: on a gRPC call the layer refuses, the problem's `type` URI (the
/// call's status says what to do; this says which of the layer's problems it is, so a
/// client can tell "in progress" from its server's own `UNAVAILABLE`).
pub const IDEMPOTENCY_PROBLEM: HeaderName = HeaderName::from_static("idempotency-problem");

/// The media type of every error the layer answers itself (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of every problem `type` URI this crate answers with.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:tower-idempotency:problem:";

/// Where the crate documents its problem types, one anchor per
/// [`slug`](ProblemType::slug): the page of this version on docs.rs, by default the base
/// of the `Link: <…>; rel="describedby"` every problem answer carries.
pub const PROBLEM_DOCS: &str = concat!(
    "https://docs.rs/tower-idempotency/",
    env!("CARGO_PKG_VERSION"),
    "/tower_idempotency/problems/index.html#"
);

/// The kinds of problem the server layer answers with, each with its own `type` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemType {
    /// The key is malformed, repeated, or required and absent (`400`).
    InvalidKey,
    /// The request body is over the layer's limit (`413`).
    BodyTooLarge,
    /// The request body failed while it was read (`400`).
    BodyUnreadable,
    /// The route reads the request body as JSON (its key or its fingerprint), and it is
    /// not JSON (`400`).
    InvalidJson,
    /// The key was used for a different request (`409` or `422`).
    Conflict,
    /// The key was used for this same request with other credentials (`409` or `422`):
    /// retry with the original credentials, never with a new key.
    OtherCredentials,
    /// The first request with this key has not finished (`409` + `Retry-After`).
    InProgress,
    /// The store could not record the key; nothing ran (`503` + `Retry-After`).
    StoreUnavailable,
    /// The request ran, but its response was not kept and cannot be replayed (`409`).
    ResponseNotStored,
    /// The request started, then the server failed (an error or a crash of its handler):
    /// whether it took effect is unknown, and it will not run again with this key (`500`).
    OutcomeUnknown,
    /// The server holds a record for this key that it cannot read: whether the request
    /// took effect is unknown, and it will not run with this key (`500`).
    RecordUnreadable,
    /// The handler asked for the idempotency key, but no idempotency layer intercepted the
    /// request (a mistake in the server's setup); nothing ran (`500`).
    NotIntercepted,
}

impl ProblemType {
    /// Every problem type, in declaration order.
    pub const ALL: [ProblemType; 12] = [
        Self::InvalidKey,
        Self::BodyTooLarge,
        Self::BodyUnreadable,
        Self::InvalidJson,
        Self::Conflict,
        Self::OtherCredentials,
        Self::InProgress,
        Self::StoreUnavailable,
        Self::ResponseNotStored,
        Self::OutcomeUnknown,
        Self::RecordUnreadable,
        Self::NotIntercepted,
    ];

    /// The last segment of the `type` URI (`in-progress`, `conflict`, …).
    pub const fn slug(self) -> &'static str {
        match self {
            Self::InvalidKey => "invalid-key",
            Self::BodyTooLarge => "body-too-large",
            Self::BodyUnreadable => "body-unreadable",
            Self::InvalidJson => "invalid-json",
            Self::Conflict => "conflict",
            Self::OtherCredentials => "other-credentials",
            Self::InProgress => "in-progress",
            Self::StoreUnavailable => "store-unavailable",
            Self::ResponseNotStored => "response-not-stored",
            Self::OutcomeUnknown => "outcome-unknown",
            Self::RecordUnreadable => "record-unreadable",
            Self::NotIntercepted => "not-intercepted",
        }
    }

    /// The gRPC status code a protected gRPC call is answered with for this problem (as
    /// `tonic::Code` numbers it): only `in-progress`, `store-unavailable` and
    /// `body-unreadable`, where nothing ran or the first call is still running, are
    /// `UNAVAILABLE`, the code retry policies retry.
    ///
    /// | problem | code |
    /// |---|---|
    /// | `invalid-key`, `invalid-json` | `INVALID_ARGUMENT` (3) |
    /// | `body-too-large` | `RESOURCE_EXHAUSTED` (8), as gRPC answers a message over its limit |
    /// | `body-unreadable`, `in-progress`, `store-unavailable` | `UNAVAILABLE` (14) |
    /// | `conflict` | `FAILED_PRECONDITION` (9) |
    /// | `other-credentials` | `PERMISSION_DENIED` (7) |
    /// | `response-not-stored` | `ALREADY_EXISTS` (6) |
    /// | `outcome-unknown` | `UNKNOWN` (2) |
    /// | `record-unreadable` | `DATA_LOSS` (15) |
    /// | `not-intercepted` | `INTERNAL` (13) |
    ///
    /// ```
    /// use tower_idempotency::protocol::ProblemType;
    ///
    /// assert_eq!(ProblemType::InProgress.grpc_code(), 14);
    /// assert_eq!(ProblemType::Conflict.grpc_code(), 9);
    /// ```
    pub const fn grpc_code(self) -> i32 {
        match self {
            Self::InvalidKey | Self::InvalidJson => 3,
            Self::BodyTooLarge => 8,
            Self::BodyUnreadable | Self::InProgress | Self::StoreUnavailable => 14,
            Self::Conflict => 9,
            Self::OtherCredentials => 7,
            Self::ResponseNotStored => 6,
            Self::OutcomeUnknown => 2,
            Self::RecordUnreadable => 15,
            Self::NotIntercepted => 13,
        }
    }

    /// The full `type` URI, [`PROBLEM_TYPE_PREFIX`] followed by the [`slug`](Self::slug).
    pub fn uri(self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.slug())
    }

    /// The problem type a `type` URI names, if it is one of ours.
    ///
    /// ```
    /// use tower_idempotency::protocol::ProblemType;
    ///
    /// let uri = ProblemType::InProgress.uri();
    /// assert_eq!(ProblemType::from_uri(&uri), Some(ProblemType::InProgress));
    /// assert_eq!(ProblemType::from_uri("about:blank"), None);
    /// ```
    pub fn from_uri(uri: &str) -> Option<Self> {
        let slug = uri.strip_prefix(PROBLEM_TYPE_PREFIX)?;
        Self::ALL.into_iter().find(|kind| kind.slug() == slug)
    }
}
