//! The bounds the intercepted flow puts on the inner service and its bodies, stated once
//! and named, so each step behind the service (`intercept`, `execute`) says
//! `S: Inner<ReqBody, ResBody>` rather than repeating them. The public `impl Service` in
//! `service.rs` spells them out once more, as the contract users read (a bound through
//! these traits would leave its `ResBody` unconstrained).

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::RequestBody;

/// An inner service whose calls can be driven from a `Send + 'static` future (the request
/// future, or a task of its own when the client goes away).
pub(crate) trait Inner<ReqBody, ResBody>:
    Service<
        Request<RequestBody<ReqBody>>,
        Response = Response<ResBody>,
        Future: Send + 'static,
        Error: Send + 'static,
    > + Send
    + 'static
{
}

impl<S, ReqBody, ResBody> Inner<ReqBody, ResBody> for S where
    S: Service<
            Request<RequestBody<ReqBody>>,
            Response = Response<ResBody>,
            Future: Send + 'static,
            Error: Send + 'static,
        > + Send
        + 'static
{
}

/// A request body the layer can buffer on a `Send + 'static` future.
pub(crate) trait InBody: Body<Data = Bytes> + Send + 'static {}

impl<B> InBody for B where B: Body<Data = Bytes> + Send + 'static {}

/// A response body the layer can read, record and hand on from a `Send + 'static` future.
pub(crate) trait OutBody:
    Body<Data = Bytes, Error: Send + 'static> + Send + 'static
{
}

impl<B> OutBody for B where B: Body<Data = Bytes, Error: Send + 'static> + Send + 'static {}
