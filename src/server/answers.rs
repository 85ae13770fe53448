//! How the layer's own answers look: the replay markers, the documentation its problem
//! answers link to, and the app's own rendering of them.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, Response};

use super::{
    layer::IdempotencyLayer, limits::ConfigError, problem_details::describedby,
    problem_details::ProblemDetails,
};
use crate::protocol::ProblemType;

impl<St> IdempotencyLayer<St> {
    /// The headers a replayed response carries, each with the value `true` (default
    /// [`REPLAY_HEADERS`](crate::defaults::REPLAY_HEADERS): `Idempotent-Replayed`). Name
    /// others to rename the marker or to add one for clients written for other servers:
    /// [`IDEMPOTENCY_REPLAYED`](crate::protocol::IDEMPOTENCY_REPLAYED) or
    /// [`X_IDEMPOTENT_REPLAYED`](crate::protocol::X_IDEMPOTENT_REPLAYED). No record keeps
    /// them, whatever the handler sets.
    ///
    /// ```
    /// use tower_idempotency::{protocol, IdempotencyLayer, MemoryStore};
    ///
    /// let layer = IdempotencyLayer::new(MemoryStore::new())
    ///     .replay_headers([protocol::IDEMPOTENT_REPLAYED, protocol::X_IDEMPOTENT_REPLAYED])?;
    /// # Ok::<(), tower_idempotency::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// With no header: a replay must say it is one.
    pub fn replay_headers(
        self,
        headers: impl IntoIterator<Item = HeaderName>,
    ) -> Result<Self, ConfigError> {
        let mut names: Vec<HeaderName> = Vec::new();
        for name in headers {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Err(ConfigError::invalid(
                "replay_headers",
                "at least one header must mark a replay",
            ));
        }
        Ok(self.with(|c| c.replay_headers = names))
    }

    /// Whether fresh and replayed answers carry `Idempotency-Expires`, the HTTP-date until
    /// which the key's record is kept (default
    /// [`ADVERTISE_EXPIRY`](crate::defaults::ADVERTISE_EXPIRY): no). The date is written
    /// into the record with the response, so a replay carries the one the first answer
    /// had: the completion time plus the [`ttl`](Self::ttl), rounded down to the second,
    /// so the record is kept at least until then (unless a
    /// [`MemoryStore`](crate::MemoryStore) built with
    /// [`Eviction::LeastRecentlyUsed`](crate::store::Eviction::LeastRecentlyUsed) evicts
    /// it sooner).
    #[must_use]
    pub fn advertise_expiry(self, advertise: bool) -> Self {
        self.with(|c| c.advertise_expiry = advertise)
    }

    /// Where the problem types are documented: the base each problem answer's
    /// `Link: <base + slug>; rel="describedby"` starts with (default
    /// [`PROBLEM_DOCS`](crate::protocol::PROBLEM_DOCS), the crate's page on docs.rs; the
    /// [`slug`](ProblemType::slug) is appended to it, so it ends with `#`, `/` or `=`).
    /// The problem `type` stays the stable `urn:` a client matches on.
    ///
    /// ```
    /// use tower_idempotency::{IdempotencyLayer, MemoryStore};
    ///
    /// let layer = IdempotencyLayer::new(MemoryStore::new())
    ///     .problem_docs("https://api.example.com/docs/errors#")?;
    /// # Ok::<(), tower_idempotency::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// When the base is not an absolute URL ending in `#`, `/` or `=` that fits in a
    /// header (`scheme:` first, no spaces, quotes or angle brackets).
    pub fn problem_docs(self, base: &str) -> Result<Self, ConfigError> {
        if !absolute(base)
            || !base.ends_with(['#', '/', '='])
            || ProblemType::ALL
                .iter()
                .any(|kind| describedby(&format!("{base}{}", kind.slug())).is_none())
        {
            return Err(ConfigError::invalid(
                "problem_docs",
                "the documentation base must be an absolute URL (https://…) ending in `#`, \
                 `/` or `=`, with no spaces, quotes or angle brackets",
            ));
        }
        let base: Arc<str> = base.into();
        Ok(self.with(|c| c.problem_docs = Some(base)))
    }

    /// Problem answers link to no documentation (no `Link` header).
    #[must_use]
    pub fn without_problem_docs(self) -> Self {
        self.with(|c| c.problem_docs = None)
    }

    /// Renders every HTTP answer the layer writes itself (its refusals, and the `500` it
    /// records for a handler that failed) with the app's own function, for an app with an
    /// error envelope of its own (a protected gRPC call's are gRPC statuses, never passed
    /// to it: see [`grpc_methods`](Self::grpc_methods)); the default is RFC 9457 problem+json
    /// ([`ProblemDetails::to_response`]). The function chooses the body and headers; the
    /// layer keeps what clients act on: the [`status`](ProblemDetails::status), and
    /// `Retry-After` exactly where the contract gives one. It adds the `Link` to the
    /// documentation when the function set none. A function that panics gets the default
    /// rendering (the answer may be the record of a write that happened).
    ///
    /// Answers written by the handler's own code are the handler's:
    /// [`CommitError::into_http`](crate::CommitError::into_http) and the
    /// rejections of the `axum` module's extractors (feature `axum`) render the default way.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{header, Response};
    /// use tower_idempotency::{IdempotencyLayer, MemoryStore, ProblemDetails};
    ///
    /// let layer = IdempotencyLayer::new(MemoryStore::new()).problem_response(
    ///     |problem: &ProblemDetails| {
    ///         let body = serde_json::json!({
    ///             "error": { "code": problem.problem_type().slug(), "message": problem.detail() }
    ///         });
    ///         Response::builder()
    ///             .status(problem.status())
    ///             .header(header::CONTENT_TYPE, "application/json")
    ///             .body(Bytes::from(body.to_string()))
    ///             .unwrap()
    ///     },
    /// );
    /// ```
    #[must_use]
    pub fn problem_response<F>(self, render: F) -> Self
    where
        F: Fn(&ProblemDetails) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.with(|c| c.problem_response = Some(Arc::new(render)))
    }
}

/// Whether `url` starts with a scheme (`https:`, `urn:`): letters, then letters, digits,
/// `+`, `-` or `.`, then a colon.
fn absolute(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !url.contains(|c: char| c.is_whitespace() || "<>\"".contains(c))
}
