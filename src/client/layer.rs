//! [`IdempotencyClientLayer`]: the client layer's configuration.

use std::{fmt, num::NonZeroU32, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{request::Parts, HeaderName, Method};
use tower_layer::Layer;

use super::{config::ClientConfig, defaults, service::IdempotencyClient};

/// Attaches one idempotency key per logical call and retries the call with it; see the
/// [module docs](super).
///
/// Defaults: those in [`defaults`](super::defaults), a UUID v4 key per call, and no
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
                header_name: defaults::HEADER_NAME,
                methods: defaults::METHODS.to_vec(),
                key_from: None,
                max_attempts: defaults::MAX_ATTEMPTS,
                max_elapsed: defaults::MAX_ELAPSED,
                base_delay: defaults::BASE_DELAY,
                max_delay: defaults::MAX_DELAY,
                attempt_timeout: None,
            }),
        }
    }

    /// The configuration, shared with what the layer builds.
    #[cfg(feature = "reqwest")]
    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    fn with(mut self, change: impl FnOnce(&mut ClientConfig)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// The header that carries the key (default [`HEADER_NAME`](defaults::HEADER_NAME)).
    #[must_use]
    pub fn header_name(self, name: HeaderName) -> Self {
        self.with(|c| c.header_name = name)
    }

    /// The methods that get a key and retries (default [`METHODS`](defaults::METHODS)). Other requests
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

    /// The most attempts per call, the first included (default
    /// [`MAX_ATTEMPTS`](defaults::MAX_ATTEMPTS)). A type that cannot be zero: a call
    /// always makes its first attempt.
    #[must_use]
    pub fn max_attempts(self, attempts: NonZeroU32) -> Self {
        self.with(|c| c.max_attempts = attempts)
    }

    /// The most time a call may take, waits included (default
    /// [`MAX_ELAPSED`](defaults::MAX_ELAPSED)). No retry is started
    /// whose wait would end past it.
    #[must_use]
    pub fn max_elapsed(self, max: Duration) -> Self {
        self.with(|c| c.max_elapsed = max)
    }

    /// The backoff: the first retry waits up to `base`, each later one up to twice as
    /// long, never more than `max` (defaults [`BASE_DELAY`](defaults::BASE_DELAY) and
    /// [`MAX_DELAY`](defaults::MAX_DELAY)), each a uniform random
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
