//! The layer's knobs for reading the body: the key from a JSON field or a function of
//! the request, and a fingerprint of canonical JSON without the fields that change on
//! every retry.

use std::sync::Arc;

use bytes::Bytes;
use http::{request::Parts, HeaderName};

use super::{
    json_body::Pointer,
    key_source::{KeyFn, KeySource},
    layer::IdempotencyLayer,
    limits::ConfigError,
};

impl<St> IdempotencyLayer<St> {
    /// Reads the key from a string field of the JSON body instead of a header: a
    /// top-level name (`"idempotency_key"`, as Square's API carries it) or a JSON pointer
    /// (`"/meta/request_id"`). The key is validated as a header key is (1 to 255 visible
    /// ASCII characters). A body without the field is a request without a key: passed
    /// through, or `400` with [`require_key`](Self::require_key); a body that is not JSON
    /// is a `400` `invalid-json` problem, nothing run. Only this route's bodies are read
    /// before its key is known; a route keyed by header streams the bodies of requests
    /// without one.
    ///
    /// ```
    /// use tower_idempotency::{IdempotencyLayer, MemoryStore};
    ///
    /// let layer = IdempotencyLayer::new(MemoryStore::new())
    ///     .key_from_json("idempotency_key")?
    ///     .require_key(true);
    /// # Ok::<(), tower_idempotency::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// An empty field name, or a pointer with an escape other than `~0` and `~1`.
    pub fn key_from_json(self, field: &str) -> Result<Self, ConfigError> {
        let pointer = Pointer::parse("key_from_json", field)?;
        Ok(self.with(|c| c.key_source = KeySource::Json(pointer)))
    }

    /// Reads the key with `key`, a function of the request head and its body (a
    /// webhook's event id, say); `None` is a request without a key. The body is read
    /// before the function runs; the key is validated as a header key is.
    #[must_use]
    pub fn key_from_request<F>(self, key: F) -> Self
    where
        F: Fn(&Parts, &Bytes) -> Option<String> + Send + Sync + 'static,
    {
        let key: KeyFn = Arc::new(key);
        self.with(|c| c.key_source = KeySource::Request(key))
    }

    /// Fingerprints the body as canonical JSON instead of its exact bytes: the order of
    /// object members and insignificant whitespace no longer matter (the request digest
    /// hashes the body with its members sorted by key and no whitespace; strings,
    /// numbers and array order as sent). A body that is not JSON is a `400`
    /// `invalid-json` problem, nothing run, nothing stored.
    #[must_use]
    pub fn fingerprint_canonical_json(self) -> Self {
        self.with(|c| {
            c.fingerprint_json.get_or_insert_with(Vec::new);
        })
    }

    /// Leaves these JSON fields (names or JSON pointers, as for
    /// [`key_from_json`](Self::key_from_json)) out of the fingerprint, such as a client
    /// timestamp or nonce that changes on every retry: a retry that differs only in them
    /// replays. Implies [`fingerprint_canonical_json`](Self::fingerprint_canonical_json):
    /// the canonical form of the body without these fields is hashed (an array element
    /// named by index counts as `null`, so the elements after it keep their places).
    ///
    /// # Errors
    ///
    /// A field name that [`key_from_json`](Self::key_from_json) would refuse.
    pub fn fingerprint_ignore_json<F: AsRef<str>>(
        self,
        fields: impl IntoIterator<Item = F>,
    ) -> Result<Self, ConfigError> {
        let pointers = fields
            .into_iter()
            .map(|field| Pointer::parse("fingerprint_ignore_json", field.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.with(|c| {
            c.fingerprint_json
                .get_or_insert_with(Vec::new)
                .extend(pointers)
        }))
    }

    /// Leaves these headers out of the fingerprint's caller digest (a subtraction from
    /// [`fingerprint_headers`](Self::fingerprint_headers), so call it after that): a
    /// header that changes between a request and its retry without changing who calls.
    /// Without a [`scope`](Self::scope) that tells callers apart, a key's response then
    /// replays to another caller who sends the same key and request.
    #[must_use]
    pub fn fingerprint_ignore_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let ignored: Vec<HeaderName> = headers.into_iter().collect();
        self.with(|c| c.fingerprint_headers.retain(|name| !ignored.contains(name)))
    }
}
