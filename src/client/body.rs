//! [`ClientResponseBody`]: the body of the responses the client layer returns.

use crate::maybe_buffered::MaybeBuffered;

/// The body of a response from [`IdempotencyClient`](super::IdempotencyClient): the
/// inner client's body as it streams, or the bytes the layer read to tell an in-progress
/// `409` from a conflict.
pub type ClientResponseBody<B> = MaybeBuffered<B>;
