//! What one client layer is configured with.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{request::Parts, HeaderName, Method};

/// Derives a call's key from the request.
pub(crate) type KeyFn = Arc<dyn Fn(&Parts, &Bytes) -> Option<String> + Send + Sync>;

/// The client layer's configuration, shared by its services.
#[derive(Clone)]
pub(crate) struct ClientConfig {
    pub(crate) header_name: HeaderName,
    pub(crate) methods: Vec<Method>,
    pub(crate) key_from: Option<KeyFn>,
    pub(crate) max_attempts: NonZeroU32,
    pub(crate) max_elapsed: Duration,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
}
