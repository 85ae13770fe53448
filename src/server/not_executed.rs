//! [`NotExecuted`]: a handler's word that it did nothing, so the layer releases the key
//! instead of recording the answer.

use http::Response;

/// A response extension by which a handler (or an extractor's rejection) says that
/// nothing was executed: no side effect happened, so the layer **releases** the key
/// instead of recording the response, and a corrected retry with the same key runs.
///
/// Stripe saves a result only once the endpoint started executing; this is how a handler
/// says it did not. A response without it is recorded as usual: a deliberate `4xx` after
/// the handler did work is replayed like any other answer. The layer never guesses this
/// from a status code.
///
/// With the `axum` feature, `NotExecuted` is also a response part, and the
/// `axum` module's extractors mark their rejections with it.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_idempotency::NotExecuted;
///
/// let refused = NotExecuted::mark(
///     Response::builder().status(StatusCode::BAD_REQUEST).body(()).unwrap(),
/// );
/// assert!(NotExecuted::is_marked(&refused));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotExecuted;

impl NotExecuted {
    /// `response`, marked: the layer releases the key instead of recording it.
    pub fn mark<B>(mut response: Response<B>) -> Response<B> {
        response.extensions_mut().insert(Self);
        response
    }

    /// Whether `response` says nothing was executed.
    pub fn is_marked<B>(response: &Response<B>) -> bool {
        response.extensions().get::<Self>().is_some()
    }
}
