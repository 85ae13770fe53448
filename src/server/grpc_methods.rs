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
    /// are protected: every other gRPC call (`content-type: application/grpc…`) passes
    /// through untouched, keyed or not, streaming calls among them. A gRPC call's key is
    /// always read from its metadata (never from its body, whatever
    /// [`key_from_json`](Self::key_from_json) says), its body is fingerprinted as bytes,
    /// and its answer is classified by the `grpc-status` it ends with, as HTTP statuses
    /// are ([`transient_statuses`](Self::transient_statuses) by the HTTP status each code
    /// stands for: `UNAVAILABLE` is `503` and `RESOURCE_EXHAUSTED` `429`, so by default
    /// those two release the key, and every other status is recorded). The layer's own
    /// refusals are gRPC statuses (see
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
    /// only unary methods: a streaming call the layer buffers is answered only once the
    /// whole stream has ended.
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
