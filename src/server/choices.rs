//! The knobs whose only valid values are a few named choices, as types.

use http::StatusCode;

/// The status the layer answers a conflict with (same key, different request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConflictStatus {
    /// `409 Conflict` (the default).
    #[default]
    Conflict,
    /// `422 Unprocessable Content`, the IETF draft's choice.
    UnprocessableContent,
}

impl ConflictStatus {
    /// The HTTP status.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Conflict => StatusCode::CONFLICT,
            Self::UnprocessableContent => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// What becomes of the key when the inner service fails after it started: it returns an
/// error, or it panics (its response body failing is not this: the status was sent, and
/// the key is recorded without the body).
///
/// The handler may have committed its write before it failed, so the default records the
/// failure: a retry gets a `500` problem (`outcome-unknown`) saying the outcome is unknown,
/// never a second run. Releasing lets a retry run again, which is right only for handlers
/// that fail before any side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HandlerFailure {
    /// Record the failure as a `500` problem that says the outcome is unknown (the
    /// default; Stripe records such failures too).
    #[default]
    Record,
    /// ⚠️ Release the key, so that a retry runs the handler again.
    Release,
}
