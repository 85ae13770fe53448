//! Which gRPC methods the layer protects: [`IdempotencyLayer::grpc_methods`] and
//! [`IdempotencyLayer::grpc_methods_matching`].

use std::sync::Arc;

use super::{
    grpc::{invalid_method_path, GrpcMethods},
    layer::IdempotencyLayer,
    limits::ConfigError,
};

impl<St> IdempotencyLayer<St> {
    /// Protects the gRPC unary methods at these paths (`/package.Service/Method`, as
    /// tonic's generated `SERVICE_NAME` and the method's name make it), as it protects
    /// HTTP writes: a call with an `idempotency-key` metadata entry (the
    /// [`header_name`](Self::header_name)) is claimed, run once, and its answer replayed
    /// with its trailers (`grpc-status`, `grpc-message`) to every retry with that key.
    ///
    /// Unary and streaming calls look alike on the wire, so only the methods named here
    /// are protected: on a layer that names gRPC methods, every other gRPC call (a `POST`
    /// with `content-type: application/grpc…`) passes through untouched, keyed or not,
    /// streaming calls among them, and so would an HTTP request sent with that content
    /// type: give this layer to the gRPC server, not to a router that also serves HTTP
    /// writes. (A layer that names none sees no gRPC calls: such a request is plain HTTP
    /// to it.)
    ///
    /// A gRPC call's key is always read from its metadata (never from its body, whatever
    /// [`key_from_json`](Self::key_from_json) says), its body is fingerprinted as bytes,
    /// [`methods`](Self::methods) does not apply to it, and its answer is classified by
    /// the `grpc-status` it ends with (in the trailers, or in the headers of a
    /// trailers-only answer), as HTTP statuses are: `UNAVAILABLE` and
    /// `RESOURCE_EXHAUSTED` release the key (while their `503` and `429` are
    /// [`transient_statuses`](Self::transient_statuses)), and every other status is
    /// recorded and replayed. An answer whose message is over
    /// [`max_response_body`](Self::max_response_body) is recorded without it whatever its
    /// status (its end is not read before the record is written): a retry gets
    /// `ALREADY_EXISTS`. The layer's own refusals are gRPC statuses (see
    /// [`ProblemType::grpc_code`](crate::protocol::ProblemType::grpc_code)), never
    /// rendered by [`problem_response`](Self::problem_response).
    ///
    /// ```
    /// use tower_idempotency::{IdempotencyLayer, MemoryStore};
    ///
    /// let layer = IdempotencyLayer::new(MemoryStore::new())
    ///     .grpc_methods(["/orders.v1.Orders/CreateOrder", "/orders.v1.Orders/CancelOrder"])?;
    /// # Ok::<(), tower_idempotency::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A path that is not `/package.Service/Method`.
    pub fn grpc_methods<P: AsRef<str>>(
        self,
        paths: impl IntoIterator<Item = P>,
    ) -> Result<Self, ConfigError> {
        let mut named: Vec<Box<str>> = Vec::new();
        for path in paths {
            let path = path.as_ref();
            if let Some(why) = invalid_method_path(path) {
                return Err(ConfigError::invalid_value("grpc_methods", path, why));
            }
            if !named.iter().any(|known| &**known == path) {
                named.push(path.into());
            }
        }
        Ok(self.with(|c| c.grpc_methods = GrpcMethods::Named(named.into())))
    }

    /// Protects the gRPC methods whose path (`/package.Service/Method`) `is_unary`
    /// accepts, as [`grpc_methods`](Self::grpc_methods) protects those it names. Accept
    /// only unary methods: the layer buffers a protected call's request before it runs
    /// the handler, so a client-streaming call would be answered only once its whole
    /// stream has ended, and a bidirectional one that waits for the server never would
    /// (until its deadline).
    ///
    /// ```
    /// use tower_idempotency::{IdempotencyLayer, MemoryStore};
    ///
    /// // Every method of the service, but its `Watch…` streams.
    /// let layer = IdempotencyLayer::new(MemoryStore::new()).grpc_methods_matching(|path| {
    ///     path.strip_prefix("/orders.v1.Orders/")
    ///         .is_some_and(|method| !method.starts_with("Watch"))
    /// });
    /// ```
    #[must_use]
    pub fn grpc_methods_matching<F>(self, is_unary: F) -> Self
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        self.with(|c| c.grpc_methods = GrpcMethods::Matching(Arc::new(is_unary)))
    }
}
