//! [`Idempotency`]: the `impl Service`.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;
use tracing::{Instrument, Span};

use super::{
    body::{RequestBody, ResponseBody},
    future::ResponseFuture,
    grpc::{self, Protocol},
    idempotency_key::IdempotencyKey,
    intercept::{intercept, Claimant},
    shared::Shared,
};
use crate::store::{IdempotencyStore, LockToken};

/// The middleware service built by [`IdempotencyLayer`](crate::IdempotencyLayer).
///
/// The inner service receives requests whose body is a [`RequestBody`]: the original body
/// when the request is passed through, the buffered bytes when it is intercepted.
pub struct Idempotency<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S, St> Idempotency<S, St> {
    pub(crate) fn new(inner: S, shared: Shared<St>) -> Self {
        Self {
            inner,
            shared: Arc::new(shared),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St> Clone for Idempotency<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for Idempotency<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("namespace", &self.shared.config.namespace)
            .finish_non_exhaustive()
    }
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for Idempotency<S, St>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &self.shared.config;
        // A route keyed by its body reads every body; one keyed by the header, only
        // those of requests that carry it (or must).
        let as_http = config.methods.contains(req.method())
            && (config.intercepts_without_header
                || super::key::present(req.headers(), &config.header_name));
        // On a layer that names gRPC methods, a gRPC call (a POST) is protected only on a
        // method named, its key in the metadata; any other passes through untouched,
        // streaming calls among them. A layer that names none has no gRPC calls: a
        // request of that content type is plain HTTP to it, protected as any other.
        let protocol = if !config.grpc_methods.any() {
            as_http.then_some(Protocol::Http)
        } else {
            grpc_protocol(config, &req, as_http)
        };
        let Some(protocol) = protocol else {
            return ResponseFuture::passed_through(
                self.inner.call(req.map(RequestBody::streaming)),
            );
        };
        // `poll_ready` readied `self.inner`; the clone left behind may not be ready. Take
        // the ready one into the future, which calls it only after awaits (body, store).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        // An outer idempotency layer may already guard this request (a router-wide layer
        // around a route-level one): it put its key, with its claim token, in the request.
        let claimant = match req
            .extensions()
            .get::<IdempotencyKey>()
            .and_then(IdempotencyKey::guard)
        {
            Some(token) => Claimant {
                token,
                nested: true,
            },
            None => Claimant {
                token: LockToken::generate(),
                nested: false,
            },
        };
        let span = request_span(&req);
        let shared = Arc::clone(&self.shared);
        // Written into its box, not built and then moved in: the future is ~2 KB.
        let boxed = Box::write(
            Box::new_uninit(),
            intercept(inner, shared, req, claimant, span.clone(), protocol).instrument(span),
        );
        ResponseFuture::intercepted(Box::into_pin(boxed))
    }
}

/// The span of an intercepted request, made only when some subscriber could record it:
/// no subscriber at all, or none at `INFO` or finer for anything, and it is
/// `Span::none()`. A span made for no one is not free: with tracing's `log` feature
/// (axum turns it on), it keeps its metadata and checks the `log` level each time it is
/// entered, left or recorded. Otherwise the span's own callsite decides, so a filter on
/// its name or fields (`[idempotency]=debug`) applies as it always did. The layer's
/// events are emitted either way (to `log` too, with that feature).
fn request_span<B>(req: &Request<B>) -> Span {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    if STATIC_MAX_LEVEL < tracing::Level::INFO || LevelFilter::current() < tracing::Level::INFO {
        return Span::none();
    }
    tracing::info_span!(
        "idempotency",
        method = %req.method(),
        path = req.uri().path(),
        outcome = tracing::field::Empty,
    )
}

/// How a layer that names gRPC methods intercepts `req`, if it does: as a protected gRPC
/// call, as HTTP (`as_http`: it would be intercepted as such), or not at all (an unnamed
/// gRPC call).
#[inline(never)]
fn grpc_protocol<B>(
    config: &super::config::Config,
    req: &Request<B>,
    as_http: bool,
) -> Option<Protocol> {
    if req.method() != Method::POST || !grpc::is_grpc(req.headers()) {
        return as_http.then_some(Protocol::Http);
    }
    let keyed = config.require_key || super::key::present(req.headers(), &config.header_name);
    (keyed && config.grpc_methods.protects(req.uri().path())).then_some(Protocol::Grpc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::{prelude::*, EnvFilter};

    #[test]
    fn a_subscriber_that_enables_the_span_only_by_its_name_gets_it() {
        // A directive on the span's name: no target is enabled at INFO, only this span
        // (and what happens inside it).
        let subscriber =
            tracing_subscriber::registry().with(EnvFilter::new("warn,[idempotency]=debug"));
        tracing::subscriber::with_default(subscriber, || {
            tracing::callsite::rebuild_interest_cache();
            let req = Request::post("/orders").body(()).unwrap();
            let span = request_span(&req);
            assert!(!span.is_disabled());
            assert_eq!(
                span.metadata().map(tracing::Metadata::name),
                Some("idempotency")
            );
        });
    }
}
