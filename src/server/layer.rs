//! [`IdempotencyLayer`]: the configuration and `impl Layer`.

use std::{fmt, sync::Arc, time::Duration};

use http::{request::Parts, HeaderName, Method, StatusCode};
use tower_layer::Layer;

use super::{
    choices::{ConflictStatus, HandlerFailure},
    config::Config,
    fingerprint,
    in_flight::InFlight,
    limits::{self, ConfigError},
    outcome::Metrics,
    service::Idempotency,
    shared::Shared,
};
use crate::store::IdempotencyStore;

/// Makes POST and PATCH requests that carry an `Idempotency-Key` safe to retry.
///
/// The first request with a key runs the inner service and records its response; a retry
/// with the same key and the same request gets that response replayed (with
/// `Idempotent-Replayed: true`) without running the inner service again. See the
/// [crate docs](crate) for the whole flow and the defaults.
///
/// Layers nest: a route-level layer (say, one that requires a key) inside a router-wide
/// one works as expected. An inner layer on the same store and namespace recognises the
/// outer layer's claim and passes the request on; an inner layer on another store (say,
/// a shared Redis for the payment route, inside a per-instance `MemoryStore`) claims and
/// records in its own store too, so the route stays protected across instances. A
/// request the outer layer passed through (no key, or another method) is still seen by
/// the inner one.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::post, Router};
/// use tower_idempotency::{IdempotencyLayer, MemoryStore};
///
/// let layer = IdempotencyLayer::new(MemoryStore::new())
///     .require_key(true)
///     .ttl(Duration::from_secs(6 * 60 * 60))?
///     .scope(|parts| parts.headers.get("x-tenant")?.to_str().ok().map(str::to_owned));
/// let app: Router = Router::new()
///     .route("/payments", post(|| async { "paid" }))
///     .layer(layer);
/// # Ok::<(), tower_idempotency::ConfigError>(())
/// ```
pub struct IdempotencyLayer<St> {
    store: Arc<St>,
    config: Arc<Config>,
    metrics: Metrics,
    in_flight: InFlight,
}

impl<St: IdempotencyStore> IdempotencyLayer<St> {
    /// A layer over `store` with the [`defaults`](crate::defaults): no scope, no waiting
    /// for an in-flight request, and every other knob as its builder method says.
    pub fn new(store: St) -> Self {
        Self {
            store: Arc::new(store),
            config: Arc::new(Config::default()),
            metrics: Metrics::default(),
            in_flight: InFlight::default(),
        }
    }
}

impl<St> IdempotencyLayer<St> {
    pub(super) fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let config = Arc::make_mut(&mut self.config);
        change(config);
        config.settle();
        self
    }

    /// The counters of this layer's outcomes, shared with every service it builds.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The claims this layer holds right now, for a graceful shutdown to wait for (see
    /// [`InFlight`]).
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }

    /// The store this layer records into.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The header that carries the key (default
    /// [`HEADER_NAME`](crate::defaults::HEADER_NAME)).
    #[must_use]
    pub fn header_name(self, name: HeaderName) -> Self {
        self.with(|c| c.header_name = name)
    }

    /// The methods that are intercepted (default [`METHODS`](crate::defaults::METHODS)).
    /// Others pass through untouched, with no buffering.
    #[must_use]
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.with(|c| c.methods = methods.into_iter().collect())
    }

    /// Whether an intercepted request without a key is refused with `400` (default
    /// [`REQUIRE_KEY`](crate::defaults::REQUIRE_KEY): it passes through unprotected).
    #[must_use]
    pub fn require_key(self, require: bool) -> Self {
        self.with(|c| c.require_key = require)
    }

    /// The status of a conflict (same key, different request): `409 Conflict` or `422
    /// Unprocessable Content`, the IETF draft's choice (default
    /// [`CONFLICT_STATUS`](crate::defaults::CONFLICT_STATUS)).
    #[must_use]
    pub fn conflict_status(self, status: ConflictStatus) -> Self {
        self.with(|c| c.conflict_status = status)
    }

    /// How long a completed response is kept for replay (default
    /// [`TTL`](crate::defaults::TTL)).
    ///
    /// # Errors
    ///
    /// Outside [`MIN_TTL`](limits::MIN_TTL)..=[`MAX_TTL`](limits::MAX_TTL).
    pub fn ttl(self, ttl: Duration) -> Result<Self, ConfigError> {
        let ttl = limits::check("ttl", ttl, limits::MIN_TTL, limits::MAX_TTL)?;
        Ok(self.with(|c| c.ttl = ttl))
    }

    /// How long a claim lives without renewal (default [`LEASE`](crate::defaults::LEASE)).
    /// The layer renews it every third of a lease while the inner service runs, so only a
    /// dead process's claim expires; after that a retry runs afresh.
    ///
    /// # Errors
    ///
    /// Outside [`MIN_LEASE`](limits::MIN_LEASE)..=[`MAX_LEASE`](limits::MAX_LEASE).
    pub fn lease(self, lease: Duration) -> Result<Self, ConfigError> {
        let lease = limits::check("lease", lease, limits::MIN_LEASE, limits::MAX_LEASE)?;
        Ok(self.with(|c| c.lease = lease))
    }

    /// The largest request body buffered for fingerprinting (default
    /// [`MAX_REQUEST_BODY`](crate::defaults::MAX_REQUEST_BODY)). Larger bodies get `413` and the inner service is not called.
    #[must_use]
    pub fn max_request_body(self, bytes: usize) -> Self {
        self.with(|c| c.max_request_body = bytes)
    }

    /// The largest response body recorded (default
    /// [`MAX_RESPONSE_BODY`](crate::defaults::MAX_RESPONSE_BODY)). A larger response is streamed
    /// to the client once and recorded without its body: a retry gets a `409` problem
    /// saying so, never a second execution.
    #[must_use]
    pub fn max_response_body(self, bytes: usize) -> Self {
        self.with(|c| c.max_response_body = bytes)
    }

    /// The headers whose values identify the caller (default
    /// [`FINGERPRINT_HEADERS`](crate::defaults::FINGERPRINT_HEADERS)): they enter the
    /// fingerprint's caller digest, so that another caller reusing a key is refused,
    /// never shown someone else's response. The same request with other values of these
    /// headers (a refreshed token) is told so, and never told to use a new key. With a
    /// [`scope`](Self::scope) that identifies the principal, this may be emptied so that a
    /// refreshed token still replays.
    #[must_use]
    pub fn fingerprint_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.with(|c| c.fingerprint_headers = headers.into_iter().collect())
    }

    /// Fingerprints only these cookies of the `Cookie` header, such as the session
    /// cookie, instead of the whole header (default: the whole header, when `cookie` is
    /// among the [`fingerprint_headers`](Self::fingerprint_headers)). Other cookies
    /// (analytics, preferences) may then change between a request and its retry without
    /// effect. The named cookies count even if `cookie` is not among the headers.
    #[must_use]
    pub fn fingerprint_cookies<N: Into<String>>(self, names: impl IntoIterator<Item = N>) -> Self {
        let names = names.into_iter().map(Into::into).collect();
        self.with(|c| c.fingerprint_cookies = Some(names))
    }

    /// Whether the authority (the URI's, else the `Host` header) is part of the request
    /// digest (default [`FINGERPRINT_AUTHORITY`](crate::defaults::FINGERPRINT_AUTHORITY)).
    /// It is lower-cased, a trailing dot and a default port (`:80`, `:443`) dropped. Turn
    /// it off only when one caller reaches the service under several host names that may
    /// change between a request and its retry (and the scope or credentials tell
    /// callers apart).
    #[must_use]
    pub fn fingerprint_authority(self, fingerprint: bool) -> Self {
        self.with(|c| c.fingerprint_authority = fingerprint)
    }

    /// The prefix of this layer's records (default [`NAMESPACE`](crate::defaults::NAMESPACE)), so that services sharing one
    /// store do not collide.
    #[must_use]
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.with(|c| c.namespace = namespace)
    }

    /// Gives each principal its own key space: the closure reads the request parts (e.g.
    /// the tenant id an authentication layer put in the extensions) and returns the scope;
    /// `None` is the empty scope.
    #[must_use]
    pub fn scope<F>(self, scope: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.with(|c| c.scope = Some(Arc::new(scope)))
    }

    /// Instead of answering `409` to a retry that arrives while the first request runs,
    /// wait up to `max_wait` for it to finish and replay its response (default: off).
    ///
    /// # Errors
    ///
    /// Outside [`MIN_WAIT_FOR_IN_FLIGHT`](limits::MIN_WAIT_FOR_IN_FLIGHT)..=
    /// [`MAX_WAIT_FOR_IN_FLIGHT`](limits::MAX_WAIT_FOR_IN_FLIGHT).
    pub fn wait_for_in_flight(self, max_wait: Duration) -> Result<Self, ConfigError> {
        let wait = limits::check(
            "wait_for_in_flight",
            max_wait,
            limits::MIN_WAIT_FOR_IN_FLIGHT,
            limits::MAX_WAIT_FOR_IN_FLIGHT,
        )?;
        Ok(self.with(|c| c.wait_for_in_flight = Some(wait)))
    }

    /// ⚠️ When the store cannot be reached at claim time, run the request **unprotected**
    /// (and log a warning) instead of answering `503` (default
    /// [`FAIL_OPEN`](crate::defaults::FAIL_OPEN): fail closed). A
    /// retry during an outage can then run twice: enable only for routes where a duplicate
    /// is cheaper than an outage. Only an outage (unreachable, timed out) runs
    /// unprotected: a full store, a record it cannot read, or a configuration error is
    /// answered as without fail-open.
    #[must_use]
    pub fn fail_open(self, fail_open: bool) -> Self {
        self.with(|c| c.fail_open = fail_open)
    }

    /// The statuses that mean "not done, retry later": the claim is released and a retry
    /// runs afresh (default [`TRANSIENT_STATUSES`](crate::defaults::TRANSIENT_STATUSES)).
    /// Every other status, `500` included, is recorded and replayed, since the write may
    /// have happened. Leave `408` out: a timeout layer *inside* this one answers it after
    /// cutting a write in half (put timeouts outside, where this layer finishes the write).
    ///
    /// A protected gRPC call's `grpc-status` is transient only when it is `UNAVAILABLE`
    /// (while `503` is listed) or `RESOURCE_EXHAUSTED` (while `429` is): a status added
    /// here for HTTP routes, `500` or `504` say, never releases a gRPC call.
    #[must_use]
    pub fn transient_statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.with(|c| c.transient_statuses = statuses.into_iter().collect())
    }

    /// Response headers never recorded, on top of the hop-by-hop headers (default
    /// [`UNSTORED_HEADERS`](crate::defaults::UNSTORED_HEADERS): a session token has no
    /// business sitting in a replay cache).
    #[must_use]
    pub fn unstored_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.with(|c| c.unstored_headers = headers.into_iter().collect())
    }

    /// Whether the inner service is driven to completion when the client goes away, so
    /// that the result of a half-done write is still recorded for the retry (default
    /// [`RUN_TO_COMPLETION`](crate::defaults::RUN_TO_COMPLETION)). The handler runs in
    /// place, in the request's own future; only if the client goes away does the rest of
    /// it move to a task of its own. When `false`, a dropped request releases its claim.
    #[must_use]
    pub fn run_to_completion(self, run: bool) -> Self {
        self.with(|c| c.run_to_completion = run)
    }

    /// The bound on every store call (default
    /// [`STORE_TIMEOUT`](crate::defaults::STORE_TIMEOUT)). A claim that times out is a store
    /// failure (`503`, or unprotected in fail-open mode).
    ///
    /// # Errors
    ///
    /// Outside [`MIN_STORE_TIMEOUT`](limits::MIN_STORE_TIMEOUT)..=
    /// [`MAX_STORE_TIMEOUT`](limits::MAX_STORE_TIMEOUT).
    pub fn store_timeout(self, timeout: Duration) -> Result<Self, ConfigError> {
        let timeout = limits::check(
            "store_timeout",
            timeout,
            limits::MIN_STORE_TIMEOUT,
            limits::MAX_STORE_TIMEOUT,
        )?;
        Ok(self.with(|c| c.store_timeout = timeout))
    }

    /// What becomes of the key when the inner service returns an error or panics after it
    /// started (default [`HANDLER_FAILURE`](crate::defaults::HANDLER_FAILURE): recorded as
    /// a `500` problem saying the outcome is unknown). See [`HandlerFailure`].
    #[must_use]
    pub fn handler_failure(self, failure: HandlerFailure) -> Self {
        self.with(|c| c.handler_failure = failure)
    }

    /// How long a completion that failed (a store blip while the response is recorded) is
    /// retried, in the background, while the claim is held and its lease renewed (default
    /// [`COMPLETION_RETRY`](crate::defaults::COMPLETION_RETRY)). The client gets its
    /// response at once; a retry meanwhile gets "in progress", which is true. A store that
    /// stays down longer leaves the key in flight until its lease ends, and counts a
    /// [`record failure`](Metrics::record_failures). Zero tries once.
    ///
    /// # Errors
    ///
    /// Over [`MAX_COMPLETION_RETRY`](limits::MAX_COMPLETION_RETRY).
    pub fn completion_retry(self, period: Duration) -> Result<Self, ConfigError> {
        let period = limits::check(
            "completion_retry",
            period,
            Duration::ZERO,
            limits::MAX_COMPLETION_RETRY,
        )?;
        Ok(self.with(|c| c.completion_retry = period))
    }
}

impl<St> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            config: Arc::clone(&self.config),
            metrics: self.metrics.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

impl<St> fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyLayer")
            .field("header_name", &c.header_name)
            .field("methods", &c.methods)
            .field("require_key", &c.require_key)
            .field("namespace", &c.namespace)
            .field("lease", &c.lease)
            .field("ttl", &c.ttl)
            .field("fail_open", &c.fail_open)
            .finish_non_exhaustive()
    }
}

impl<S, St> Layer<S> for IdempotencyLayer<St> {
    type Service = Idempotency<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(
            inner,
            Shared {
                store: Arc::clone(&self.store),
                config: Arc::clone(&self.config),
                metrics: self.metrics.clone(),
                in_flight: self.in_flight.clone(),
                anonymous_caller: fingerprint::anonymous_caller(
                    &self.config.fingerprint_headers,
                    self.config.fingerprint_cookies.as_deref(),
                ),
            },
        )
    }
}
