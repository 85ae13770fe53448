//! [`IdempotencyClientLayer`]: the client layer's configuration.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{request::Parts, HeaderName, Method};
use tower_layer::Layer;

use super::service::IdempotencyClient;

/// Derives a call's key from the request.
pub(crate) type KeyFn = Arc<dyn Fn(&Parts, &Bytes) -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct ClientConfig {
    pub(crate) header_name: HeaderName,
    pub(crate) methods: Vec<Method>,
    pub(crate) key_from: Option<KeyFn>,
    pub(crate) max_attempts: u32,
    pub(crate) max_elapsed: Duration,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
}

/// Attaches one idempotency key per logical call and retries the call with it; see the
/// [module docs](super).
///
/// Defaults: POST and PATCH, header `Idempotency-Key`, a UUID v4 key per call, up to 5
/// attempts within 30 s, backoff from 100 ms doubling up to 5 s with full jitter, no
/// per-attempt timeout.
#[derive(Clone)]
pub struct IdempotencyClientLayer {
    config: Arc<ClientConfig>,
}

impl IdempotencyClientLayer {
    /// A layer with the defaults.
    pub fn new() -> Self {
        Self {
            config: Arc::new(ClientConfig {
                header_name: HeaderName::from_static("idempotency-key"),
                methods: vec![Method::POST, Method::PATCH],
                key_from: None,
                max_attempts: 5,
                max_elapsed: Duration::from_secs(30),
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                attempt_timeout: None,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut ClientConfig)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// The header that carries the key (default `Idempotency-Key`).
    #[must_use]
    pub fn header_name(self, name: HeaderName) -> Self {
        self.with(|c| c.header_name = name)
    }

    /// The methods that get a key and retries (default POST and PATCH). Other requests
    /// are sent once, as they are.
    #[must_use]
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.with(|c| c.methods = methods.into_iter().collect())
    }

    /// Derives the key from the request instead of minting a random one, so that two
    /// submissions of the same logical write (the same order reference, say) collapse
    /// into one on the server. `None` sends the call without a key, once.
    #[must_use]
    pub fn key_from<F>(self, key: F) -> Self
    where
        F: Fn(&Parts, &Bytes) -> Option<String> + Send + Sync + 'static,
    {
        self.with(|c| c.key_from = Some(Arc::new(key)))
    }

    /// The most attempts per call, the first included (default 5).
    ///
    /// # Panics
    ///
    /// When `attempts` is zero.
    #[must_use]
    pub fn max_attempts(self, attempts: u32) -> Self {
        assert!(attempts > 0, "a call needs at least one attempt");
        self.with(|c| c.max_attempts = attempts)
    }

    /// The most time a call may take, waits included (default 30 s). No retry is started
    /// whose wait would end past it.
    #[must_use]
    pub fn max_elapsed(self, max: Duration) -> Self {
        self.with(|c| c.max_elapsed = max)
    }

    /// The backoff: the first retry waits up to `base`, each later one up to twice as
    /// long, never more than `max` (defaults 100 ms and 5 s), each a uniform random
    /// fraction of that (full jitter). `Retry-After` overrides a shorter wait.
    #[must_use]
    pub fn backoff(self, base: Duration, max: Duration) -> Self {
        self.with(|c| {
            c.base_delay = base;
            c.max_delay = max;
        })
    }

    /// Gives up on an attempt with no response after `timeout` and retries it, with the
    /// same key (default: none). The server may well have committed it: the retry then
    /// gets the in-progress answer or the replay.
    #[must_use]
    pub fn attempt_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.attempt_timeout = Some(timeout))
    }
}

impl Default for IdempotencyClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for IdempotencyClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyClientLayer")
            .field("header_name", &c.header_name)
            .field("methods", &c.methods)
            .field("max_attempts", &c.max_attempts)
            .field("max_elapsed", &c.max_elapsed)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for IdempotencyClientLayer {
    type Service = IdempotencyClient<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyClient::new(inner, Arc::clone(&self.config))
    }
}
