//! [`IdempotencyKey`]: the request's key as the handler sees it, and the claim a handler
//! may complete in its own database transaction.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::config::Config;
use crate::store::{LockToken, RecordKey};

/// The validated key of a request the layer intercepted, as the handler sees it.
///
/// The layer puts it in the request's extensions before the inner service runs, so a
/// plain tower service reads it with `req.extensions().get::<IdempotencyKey>()`; with
/// the `axum` feature it is an extractor (`IdempotencyKey`, or `Option<IdempotencyKey>`
/// where the key is optional). It is the key as the layer stores it: a quoted `"k"` and a
/// bare `k` are one key to the layer, and one key here.
///
/// [`derive`](Self::derive) gives the key of one step of the operation, to pass on to a
/// service that honours keys of its own (a payment provider): the same on every retry,
/// different for each step and for each caller.
///
/// ```
/// use http::Request;
/// use tower_idempotency::IdempotencyKey;
///
/// fn charge_key<B>(req: &Request<B>) -> Option<String> {
///     let key = req.extensions().get::<IdempotencyKey>()?;
///     Some(key.derive("charge"))
/// }
/// # assert_eq!(charge_key(&Request::new(())), None);
/// ```
#[derive(Clone)]
pub struct IdempotencyKey {
    inner: Arc<KeyInner>,
    /// The token a nested idempotency layer claims with: the claim's, or the token of a
    /// layer between that claims in a store of its own; none after a fail-open layer
    /// (its claim with that token is being cleaned up).
    guard: Option<LockToken>,
}

struct KeyInner {
    /// Where the record lives; the key and the scope are read from it.
    record: RecordKey,
    /// The claim this request holds, when it holds one (not when a fail-open layer runs it
    /// unprotected).
    claim: Option<HandlerClaim>,
}

/// What a handler needs to complete the record itself, and what it completed (only
/// `PostgresStore` completes in a handler's transaction).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct HandlerClaim {
    pub(crate) token: LockToken,
    pub(crate) config: Arc<Config>,
    completed: OnceLock<Completed>,
}

/// A response the handler recorded and committed in its own transaction: what the layer
/// answers with, whatever the handler returns after it.
#[derive(Debug, Clone)]
pub(crate) struct Completed {
    pub(crate) status: StatusCode,
    /// The headers as the first caller gets them (the record leaves some out).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
}

impl IdempotencyKey {
    pub(crate) fn new(record: RecordKey, claim: Option<(LockToken, Arc<Config>)>) -> Self {
        Self {
            guard: claim.as_ref().map(|&(token, _)| token),
            inner: Arc::new(KeyInner {
                record,
                claim: claim.map(|(token, config)| HandlerClaim {
                    token,
                    config,
                    completed: OnceLock::new(),
                }),
            }),
        }
    }

    /// The same key, with `guard` as the token nested layers claim with (`None`: they
    /// mint their own).
    pub(crate) fn guarded_by(&self, guard: Option<LockToken>) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            guard,
        }
    }

    /// The token a nested idempotency layer claims with, so that on the same store it
    /// recognises the outer layer's claim as its own (and passes the request on), while
    /// on another store it still protects the route.
    pub(crate) fn guard(&self) -> Option<LockToken> {
        self.guard
    }

    /// The key, unquoted.
    pub fn as_str(&self) -> &str {
        self.inner.record.key()
    }

    /// The scope the layer derived for this request (empty without a scope function).
    pub fn scope(&self) -> &str {
        self.inner.record.scope()
    }

    /// Whether a claim guards this request: `false` when a fail-open layer runs it
    /// unprotected during a store outage (and a completion in the handler's transaction
    /// then only commits).
    pub fn is_claimed(&self) -> bool {
        self.inner.claim.is_some()
    }

    /// A stable key for one `step` of this operation, for a downstream call: 64 hex
    /// digits, the same on every retry of this request, different for each step, each
    /// scope and each layer namespace. Callers that share a scope (no scope function)
    /// and send the same key derive the same step keys: give each caller its scope.
    pub fn derive(&self, step: &str) -> String {
        let mut digest = Sha256::new();
        // Each part is length-prefixed, so no two (record key, step) pairs frame alike.
        for part in [self.inner.record.as_str(), step] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        let digest = digest.finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
        }
        hex
    }

    /// Where the record lives.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn record_key(&self) -> &RecordKey {
        &self.inner.record
    }

    /// The claim this request holds, if any.
    pub(crate) fn claim(&self) -> Option<&HandlerClaim> {
        self.inner.claim.as_ref()
    }

    /// What the handler completed and committed itself, if it did.
    pub(crate) fn completed(&self) -> Option<&Completed> {
        self.claim()?.completed.get()
    }
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
impl HandlerClaim {
    /// Notes that the handler committed `completed` as the record.
    pub(crate) fn set_completed(&self, completed: Completed) {
        let _ = self.completed.set(completed);
    }
}

impl fmt::Debug for IdempotencyKey {
    /// Neither the key nor the scope (often a tenant or a user) is shown in clear: debug
    /// output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyKey")
            .field(
                "key_hash",
                &super::fingerprint::key_hash(&self.inner.record),
            )
            .field("scoped", &!self.scope().is_empty())
            .field("claimed", &self.inner.claim.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, scope: &str, key: &str) -> IdempotencyKey {
        IdempotencyKey::new(RecordKey::new(namespace, scope, key), None)
    }

    #[test]
    fn derived_keys_are_stable_and_distinct_per_step_scope_and_namespace() {
        let a = key("idem", "", "order-1");
        assert_eq!(
            a.derive("charge"),
            key("idem", "", "order-1").derive("charge")
        );
        assert_eq!(a.derive("charge").len(), 64);
        assert!(a.derive("charge").bytes().all(|b| b.is_ascii_hexdigit()));
        let others = [
            a.derive("refund"),
            a.derive(""),
            key("idem", "", "order-2").derive("charge"),
            key("idem", "tenant-a", "order-1").derive("charge"),
            key("other", "", "order-1").derive("charge"),
            // Framing: moving bytes between the key and the step changes the result.
            key("idem", "", "order-1c").derive("harge"),
        ];
        for other in &others {
            assert_ne!(&a.derive("charge"), other);
        }
        assert_eq!(a.as_str(), "order-1");
        assert_eq!(key("idem", "t", "k").scope(), "t");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let shown = format!("{:?}", key("idem", "tenant-42", "secret-key-123"));
        assert!(!shown.contains("secret-key-123"), "{shown}");
        assert!(!shown.contains("tenant-42"), "{shown}");
    }
}
