//! What one layer is configured with, read-only once the layer is built.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{request::Parts, HeaderName, Method, Response, StatusCode};

use super::{
    choices::{ConflictStatus, HandlerFailure},
    defaults,
    grpc::GrpcMethods,
    json_body::Pointer,
    key_source::KeySource,
    problem_details::ProblemDetails,
};
use crate::protocol::{PROBLEM_DOCS, REPLAY_MARKERS};

/// Derives the scope of a request (e.g. the tenant an auth layer put in the extensions).
pub(crate) type ScopeFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// Renders a problem the layer answers itself as the app's own error response.
pub(crate) type ProblemHook = Arc<dyn Fn(&ProblemDetails) -> Response<Bytes> + Send + Sync>;

/// Everything the layer's services share, read-only once the layer is built.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) header_name: HeaderName,
    pub(crate) key_source: KeySource,
    /// Where keys are read, as the invalid-key problem says it (derived).
    pub(crate) key_place: Arc<str>,
    /// `Some`: the body is fingerprinted as canonical JSON, without these fields.
    pub(crate) fingerprint_json: Option<Vec<Pointer>>,
    /// Whether a request without the key header is intercepted all the same (the key is
    /// required, or read from the body): derived.
    pub(crate) intercepts_without_header: bool,
    /// Whether the body is parsed as JSON (for the key or the fingerprint): derived.
    pub(crate) reads_json: bool,
    pub(crate) methods: Vec<Method>,
    /// The gRPC methods protected (unary calls); every other gRPC call passes through.
    pub(crate) grpc_methods: GrpcMethods,
    pub(crate) require_key: bool,
    pub(crate) conflict_status: ConflictStatus,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) max_request_body: usize,
    pub(crate) max_response_body: usize,
    pub(crate) fingerprint_headers: Vec<HeaderName>,
    /// `Some`: only these cookies of the `Cookie` header identify the caller.
    pub(crate) fingerprint_cookies: Option<Vec<String>>,
    pub(crate) fingerprint_authority: bool,
    pub(crate) namespace: String,
    pub(crate) scope: Option<ScopeFn>,
    pub(crate) wait_for_in_flight: Option<Duration>,
    pub(crate) fail_open: bool,
    pub(crate) transient_statuses: Vec<StatusCode>,
    pub(crate) unstored_headers: Vec<HeaderName>,
    /// The headers a replay carries, each with the value `true`.
    pub(crate) replay_headers: Vec<HeaderName>,
    pub(crate) advertise_expiry: bool,
    /// What no record keeps: the unstored headers, the configured replay markers and
    /// every marker a client may read as one.
    pub(crate) not_recorded: Vec<HeaderName>,
    pub(crate) run_to_completion: bool,
    pub(crate) store_timeout: Duration,
    pub(crate) handler_failure: HandlerFailure,
    pub(crate) completion_retry: Duration,
    /// The base the problem types' documentation links start with (`None`: no link).
    pub(crate) problem_docs: Option<Arc<str>>,
    pub(crate) problem_response: Option<ProblemHook>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header_name: defaults::HEADER_NAME,
            key_source: KeySource::Header,
            key_place: Arc::from(""),
            fingerprint_json: None,
            intercepts_without_header: false,
            reads_json: false,
            methods: defaults::METHODS.to_vec(),
            grpc_methods: GrpcMethods::None,
            require_key: defaults::REQUIRE_KEY,
            conflict_status: defaults::CONFLICT_STATUS,
            ttl: defaults::TTL,
            lease: defaults::LEASE,
            max_request_body: defaults::MAX_REQUEST_BODY,
            max_response_body: defaults::MAX_RESPONSE_BODY,
            fingerprint_headers: defaults::FINGERPRINT_HEADERS.to_vec(),
            fingerprint_cookies: None,
            fingerprint_authority: defaults::FINGERPRINT_AUTHORITY,
            namespace: defaults::NAMESPACE.to_owned(),
            scope: None,
            wait_for_in_flight: None,
            fail_open: defaults::FAIL_OPEN,
            transient_statuses: defaults::TRANSIENT_STATUSES.to_vec(),
            unstored_headers: defaults::UNSTORED_HEADERS.to_vec(),
            replay_headers: defaults::REPLAY_HEADERS.to_vec(),
            not_recorded: Vec::new(),
            advertise_expiry: defaults::ADVERTISE_EXPIRY,
            run_to_completion: defaults::RUN_TO_COMPLETION,
            store_timeout: defaults::STORE_TIMEOUT,
            handler_failure: defaults::HANDLER_FAILURE,
            completion_retry: defaults::COMPLETION_RETRY,
            problem_docs: Some(PROBLEM_DOCS.into()),
            problem_response: None,
        }
        .settled()
    }
}

impl Config {
    /// Derives what follows from the settings: called after every change.
    pub(crate) fn settled(mut self) -> Self {
        self.settle();
        self
    }

    /// Derives what follows from the settings, in place.
    pub(crate) fn settle(&mut self) {
        let mut not_recorded = self.unstored_headers.clone();
        for name in self.replay_headers.iter().chain(&REPLAY_MARKERS) {
            if !not_recorded.contains(name) {
                not_recorded.push(name.clone());
            }
        }
        self.not_recorded = not_recorded;
        self.key_place = self.key_source.place(&self.header_name).into();
        self.intercepts_without_header = self.require_key || self.key_source.reads_body();
        self.reads_json =
            matches!(self.key_source, KeySource::Json(_)) || self.fingerprint_json.is_some();
    }
}
