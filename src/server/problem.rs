//! The `application/problem+json` (RFC 9457) responses the layer answers itself.

use std::{panic::AssertUnwindSafe, sync::Arc};

use bytes::Bytes;

use http::{Response, StatusCode};

use super::{
    config::Config,
    grpc::{self, Protocol},
    key::KeyError,
    outcome::Outcome,
    problem_details::ProblemDetails,
};
use crate::protocol::{ProblemType, PROBLEM_DOCS};

/// A problem the layer answers instead of calling the inner service.
#[derive(Debug, Clone)]
pub(crate) enum Problem {
    /// A key refused, with the header the layer reads keys from (`None`: not known).
    InvalidKey(KeyError, Option<Arc<str>>),
    BodyTooLarge {
        limit: usize,
    },
    BodyUnreadable,
    /// The body of a route that reads JSON is not JSON: why.
    InvalidJson(String),
    Conflict {
        status: StatusCode,
    },
    OtherCredentials {
        status: StatusCode,
    },
    InProgress,
    StoreUnavailable,
    ResponseNotStored {
        original: StatusCode,
    },
    OutcomeUnknown,
    RecordUnreadable,
    /// The handler asked for a key no layer gave it (the `axum` extractor's rejection).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    NotIntercepted,
}

impl Problem {
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            Self::InvalidKey(..) => Outcome::InvalidKey,
            Self::BodyTooLarge { .. } => Outcome::TooLarge,
            Self::BodyUnreadable => Outcome::BodyUnreadable,
            Self::InvalidJson(_) => Outcome::InvalidJson,
            Self::Conflict { .. } => Outcome::Conflict,
            Self::OtherCredentials { .. } => Outcome::OtherCredentials,
            Self::InProgress => Outcome::InProgress,
            Self::StoreUnavailable => Outcome::StoreError,
            Self::ResponseNotStored { .. } => Outcome::ResponseNotStored,
            Self::OutcomeUnknown => Outcome::HandlerFailed,
            Self::RecordUnreadable => Outcome::RecordUnreadable,
            Self::NotIntercepted => Outcome::NotExecuted,
        }
    }

    /// The response as `config` renders it: the app's hook, or problem+json; to a gRPC
    /// call, its gRPC status (the hook renders HTTP answers only). Whatever the hook
    /// answers, the status and `Retry-After` are the contract's (clients act on them),
    /// and a hook that panics gets the default rendering: this answer may be the record
    /// of a write that happened, and must be written.
    pub(crate) fn render(self, config: &Config, protocol: Protocol) -> Response<Bytes> {
        let details = self.details_for(config.problem_docs.as_deref(), protocol);
        if protocol == Protocol::Grpc {
            return grpc::render(&details);
        }
        let Some(hook) = &config.problem_response else {
            return details.to_response();
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| hook(&details))) {
            Ok(mut response) => {
                details.enforce(&mut response);
                response
            }
            Err(_) => {
                tracing::error!(
                    problem = details.problem_type().slug(),
                    "the problem_response hook panicked; answering with the default rendering"
                );
                details.to_response()
            }
        }
    }

    /// The response, rendered the default way, linking to the crate's documentation
    /// (where no layer's configuration is at hand).
    pub(crate) fn into_response(self) -> Response<Bytes> {
        self.details(Some(PROBLEM_DOCS)).to_response()
    }

    /// What the app's hook is given: the problem, documented under `docs` (a base the
    /// problem type's slug is appended to; `None`: no link).
    pub(crate) fn details(self, docs: Option<&str>) -> ProblemDetails {
        self.details_for(docs, Protocol::Http)
    }

    /// The problem, its detail worded for a client of `protocol` (where it says when to
    /// retry, and what the first call was answered).
    fn details_for(self, docs: Option<&str>, protocol: Protocol) -> ProblemDetails {
        let wait = match protocol {
            Protocol::Http => "Retry-After",
            Protocol::Grpc => "the wait its grpc-retry-pushback-ms gives",
        };
        let (status, kind, title, detail, retry_after) = match &self {
            Self::InvalidKey(err, header) => (
                StatusCode::BAD_REQUEST,
                ProblemType::InvalidKey,
                "Invalid idempotency key",
                format!(
                    "{}. Send one key of 1 to 255 visible ASCII characters, new for each \
                     logical operation.",
                    err.detail(header.as_deref())
                ),
                None,
            ),
            Self::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemType::BodyTooLarge,
                "Request body too large",
                format!(
                    "the request body exceeds the limit of {limit} bytes; it was not processed"
                ),
                None,
            ),
            Self::BodyUnreadable => (
                StatusCode::BAD_REQUEST,
                ProblemType::BodyUnreadable,
                "Request body could not be read",
                "the request body failed while it was being read; it was not processed".to_owned(),
                None,
            ),
            Self::InvalidJson(why) => (
                StatusCode::BAD_REQUEST,
                ProblemType::InvalidJson,
                "Request body is not valid JSON",
                format!(
                    "this endpoint reads the request body as JSON, and it is not ({why}); \
                     it was not processed: send it as JSON, with the same key"
                ),
                None,
            ),
            Self::Conflict { status } => (
                *status,
                ProblemType::Conflict,
                "Idempotency key reused for a different request",
                "this key was already used for a different request (method, host, path and \
                 query, or body); fix the request and send it with a new key"
                    .to_owned(),
                None,
            ),
            Self::OtherCredentials { status } => (
                *status,
                ProblemType::OtherCredentials,
                "Idempotency key used with other credentials",
                "this key was used for this same request with other credentials (a refreshed \
                 token, a changed session cookie, or another caller); it may already have \
                 taken effect. Retry with the original credentials; do not send it with a new \
                 key"
                .to_owned(),
                None,
            ),
            Self::InProgress => (
                StatusCode::CONFLICT,
                ProblemType::InProgress,
                "Request with this idempotency key is in progress",
                format!(
                    "the first request with this key has not finished; retry the same request \
                     with the same key after {wait}"
                ),
                Some(1),
            ),
            Self::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemType::StoreUnavailable,
                "Idempotency store unavailable",
                format!(
                    "the request was not processed because its key could not be recorded; \
                     retry the same request with the same key after {wait}"
                ),
                Some(2),
            ),
            Self::ResponseNotStored { original } => (
                StatusCode::CONFLICT,
                ProblemType::ResponseNotStored,
                "Request already processed; response not available",
                format!(
                    "the request with this key was already processed{}, but its response \
                     could not be kept (too large, the store full, or its body failed while \
                     it was sent) and cannot be replayed; it will not run again",
                    match protocol {
                        Protocol::Http => format!(" with status {}", original.as_u16()),
                        // Its HTTP status is always 200; its gRPC status came after the body.
                        Protocol::Grpc => String::new(),
                    }
                ),
                None,
            ),
            Self::OutcomeUnknown => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemType::OutcomeUnknown,
                "Outcome of the request unknown",
                "the server failed while it processed the request with this key, after it had \
                 started; it may or may not have taken effect, and it will not run again with \
                 this key. Check whether the operation took effect before you start it again"
                    .to_owned(),
                None,
            ),
            Self::RecordUnreadable => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemType::RecordUnreadable,
                "Idempotency record unreadable",
                "the server holds a record for this key that it cannot read, so it cannot tell \
                 whether the request already took effect; it will not run with this key. Check \
                 whether the operation took effect before you start it again"
                    .to_owned(),
                None,
            ),
            Self::NotIntercepted => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemType::NotIntercepted,
                "Idempotency layer missing",
                "the server needs an idempotency key for this request, but no idempotency \
                 layer handled it (a mistake in the server's setup); the request was not \
                 processed"
                    .to_owned(),
                None,
            ),
        };
        ProblemDetails {
            kind,
            status,
            title,
            detail,
            retry_after,
            original_status: match self {
                Self::ResponseNotStored { original } => Some(original),
                _ => None,
            },
            documentation: docs.map(|base| format!("{base}{}", kind.slug())),
        }
    }
}

/// Why the handler's key extractor rejected a request.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRejectionKind {
    /// The request has no key.
    Missing,
    /// It has one, but no idempotency layer intercepted it.
    NotIntercepted,
}

/// The answer to a request whose handler asked for a key it was not given.
#[cfg(feature = "axum")]
pub(crate) fn key_rejection(kind: KeyRejectionKind) -> Response<Bytes> {
    match kind {
        KeyRejectionKind::Missing => Problem::InvalidKey(KeyError::Missing, None),
        KeyRejectionKind::NotIntercepted => Problem::NotIntercepted,
    }
    .into_response()
}
