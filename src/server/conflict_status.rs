//! [`ConflictStatus`]: the two statuses a conflict may be answered with.

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
