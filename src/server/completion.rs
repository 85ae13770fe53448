//! Completing the record in the handler's own transaction: the answer the handler returns
//! ([`Committed`]) and what can go wrong ([`CommitError`]). `handler_record.rs` reads the
//! response into the record; the SQL is the store's (`PostgresStore::complete_and_commit`).

use std::{error::Error, fmt};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::{not_executed::NotExecuted, problem::Problem};

pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// The response a handler completed and committed in its own transaction: return it.
///
/// The layer answers the first caller with exactly what was recorded (its status, headers
/// and body), whatever the handler returns after the commit, and every retry replays the
/// same bytes; it does not complete the record again.
pub struct Committed {
    pub(crate) response: Response<Full<Bytes>>,
}

impl fmt::Debug for Committed {
    /// The status only: the body and headers may hold what logs must not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("status", &self.response.status())
            .finish_non_exhaustive()
    }
}

impl Committed {
    /// The response, to return from a plain tower service (an axum handler returns the
    /// `Committed` itself).
    pub fn into_http(self) -> Response<Full<Bytes>> {
        self.response
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }
}

/// Why a handler's transaction could not complete the record and commit.
#[derive(Debug)]
#[non_exhaustive]
pub enum CommitError {
    /// The claim is no longer this request's: its lease ran out and another request took
    /// the key over (or the record is gone). The transaction was rolled back: nothing of it
    /// was committed.
    Fenced,
    /// A step before the commit failed (a statement, or reading the response body). The
    /// transaction was rolled back: nothing of it was committed.
    RolledBack(BoxError),
    /// The commit itself failed, so whether it took effect is unknown.
    Unknown(BoxError),
}

impl CommitError {
    /// The answer to give the client: [`Fenced`](Self::Fenced) is `409` in progress (the
    /// request now running holds the key), [`RolledBack`](Self::RolledBack) a `503` to
    /// retry, both marked [`NotExecuted`] so the layer records nothing; and
    /// [`Unknown`](Self::Unknown) a `500` saying the outcome is unknown, which the layer
    /// records like any answer (a retry never runs it again).
    ///
    /// These are HTTP answers. A gRPC handler returns the status of
    /// [`grpc_code`](Self::grpc_code) instead.
    pub fn into_http(self) -> Response<Full<Bytes>> {
        let (problem, executed) = match self {
            Self::Fenced => (Problem::InProgress, false),
            Self::RolledBack(_) => (Problem::StoreUnavailable, false),
            Self::Unknown(_) => (Problem::OutcomeUnknown, true),
        };
        let response = problem.into_response().map(Full::new);
        if executed {
            response
        } else {
            NotExecuted::mark(response)
        }
    }
}

impl CommitError {
    /// The gRPC status code a gRPC handler answers with: `UNAVAILABLE` (14) for
    /// [`Fenced`](Self::Fenced) and [`RolledBack`](Self::RolledBack) (nothing committed: the
    /// layer releases the key, and the client's retry policy may try again), and `UNKNOWN`
    /// (2) for [`Unknown`](Self::Unknown) (recorded, never run again). With tonic:
    /// `Status::new(Code::from(err.grpc_code()), err.to_string())`.
    ///
    /// ```
    /// use tower_idempotency::CommitError;
    ///
    /// assert_eq!(CommitError::Fenced.grpc_code(), 14);
    /// assert_eq!(CommitError::RolledBack("deadlock".into()).grpc_code(), 14);
    /// assert_eq!(CommitError::Unknown("connection reset".into()).grpc_code(), 2);
    /// ```
    pub fn grpc_code(&self) -> i32 {
        match self {
            Self::Fenced | Self::RolledBack(_) => 14,
            Self::Unknown(_) => 2,
        }
    }
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fenced => f.write_str(
                "the idempotency claim is no longer held; the transaction was rolled back",
            ),
            Self::RolledBack(err) => write!(f, "the transaction was rolled back: {err}"),
            Self::Unknown(err) => write!(f, "the commit failed; its outcome is unknown: {err}"),
        }
    }
}

impl Error for CommitError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Fenced => None,
            Self::RolledBack(err) | Self::Unknown(err) => Some(&**err),
        }
    }
}
