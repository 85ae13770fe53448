//! The record model every store keeps: where a record lives ([`RecordKey`]), what
//! identifies its request ([`Fingerprint`]), the fence of its claim ([`LockToken`]), the
//! response it holds ([`StoredResponse`]), and what a store answers ([`Begin`], [`Record`]).

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// Where a record lives: the layer's namespace, the caller's scope and the client's key,
/// encoded into one unambiguous string.
///
/// The encoding is `{namespace}:{scope length}:{scope}:{key}`. The scope is
/// length-prefixed, so no choice of scope and key can collide with another; the namespace
/// comes first so that a Redis `SCAN idem:*` finds one layer's records.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// Shared: the layer, the handler's key and the memory store's indexes hold one copy.
    encoded: Arc<str>,
    /// The length of `{namespace}:{scope length}:{scope}` at the front.
    partition: usize,
    /// The length of the scope, which ends the partition.
    scope_len: usize,
}

impl RecordKey {
    /// The key of `key` within `scope` under `namespace`.
    pub fn new(namespace: &str, scope: &str, key: &str) -> Self {
        let mut digits = [0u8; 20];
        let digits = decimal(scope.len(), &mut digits);
        let pieces = [
            namespace.as_bytes(),
            b":",
            digits,
            b":",
            scope.as_bytes(),
            b":",
            key.as_bytes(),
        ];
        let partition = pieces[..5].iter().map(|piece| piece.len()).sum();
        Self {
            encoded: joined(&pieces),
            partition,
            scope_len: scope.len(),
        }
    }

    /// The scope, as given.
    pub(crate) fn scope(&self) -> &str {
        &self.encoded[self.partition - self.scope_len..self.partition]
    }

    /// The client's key, as given.
    pub(crate) fn key(&self) -> &str {
        &self.encoded[self.partition + 1..]
    }

    /// The encoded key, for use as a storage key.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// The encoded key, shared rather than copied.
    pub(crate) fn shared(&self) -> Arc<str> {
        Arc::clone(&self.encoded)
    }

    /// The namespace and scope part of the encoded key (`{namespace}:{scope
    /// length}:{scope}`), when the scope is not empty: the caller the record belongs to,
    /// for stores that share their room fairly between callers.
    pub fn scope_partition(&self) -> Option<&str> {
        (self.scope_len > 0).then(|| &self.encoded[..self.partition])
    }
}

/// `n` in decimal, written at the end of `digits`, without the formatting machinery
/// (this runs on every request).
fn decimal(n: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return &digits[at..];
        }
    }
}

/// `pieces` (whole strings and ASCII) joined into one shared string, in one allocation
/// when they fit the stack buffer (as any key within the length bound does, unless the
/// namespace and scope are long): a `String` copied into an `Arc` would be two.
fn joined(pieces: &[&[u8]]) -> Arc<str> {
    const ON_STACK: usize = 384;
    let len: usize = pieces.iter().map(|piece| piece.len()).sum();
    let mut buffer = [0u8; ON_STACK];
    let mut heap;
    let bytes: &mut [u8] = if len <= ON_STACK {
        &mut buffer[..len]
    } else {
        heap = vec![0u8; len];
        &mut heap
    };
    let mut at = 0;
    for piece in pieces {
        bytes[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    }
    // Strings and ASCII joined are a string: the check cannot fail (and costs a pass over
    // a few dozen bytes); were it to, the lossy form keeps every valid character.
    match std::str::from_utf8(bytes) {
        Ok(text) => Arc::from(text),
        Err(_) => Arc::from(String::from_utf8_lossy(bytes).as_ref()),
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecordKey").field(&self.encoded).finish()
    }
}

/// What identifies a request: two SHA-256 digests, one of the request itself (method,
/// authority, path and query, body) and one of the caller (the fingerprint headers and
/// cookies: credentials). Only these digests are stored, never the credentials.
///
/// Two digests, so that a retry sent with refreshed credentials ("same request, other
/// caller") can be told apart from a different request under the same key: the first
/// must not be told to use a new key, which would write twice.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    request: [u8; 32],
    caller: [u8; 32],
}

impl Fingerprint {
    /// A fingerprint from its two digests.
    pub const fn new(request: [u8; 32], caller: [u8; 32]) -> Self {
        Self { request, caller }
    }

    /// A fingerprint from its 64 bytes (request digest, then caller digest), as a store
    /// reads them back.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        let mut request = [0; 32];
        let mut caller = [0; 32];
        let mut i = 0;
        while i < 32 {
            request[i] = bytes[i];
            caller[i] = bytes[32 + i];
            i += 1;
        }
        Self { request, caller }
    }

    /// The 64 bytes a store writes: the request digest, then the caller digest.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut bytes = [0; 64];
        bytes[..32].copy_from_slice(&self.request);
        bytes[32..].copy_from_slice(&self.caller);
        bytes
    }

    /// The digest of the request itself.
    pub const fn request(&self) -> &[u8; 32] {
        &self.request
    }

    /// The digest of the caller's credentials.
    pub const fn caller(&self) -> &[u8; 32] {
        &self.caller
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for b in &self.request[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…/")?;
        for b in &self.caller[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The fence of one claim: a random 128-bit token that every later write on the record
/// must present.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockToken([u64; 2]);

impl LockToken {
    /// A fresh token, unique across processes: 64 random bits drawn once per process
    /// (UUID v4 randomness) and a 64-bit counter. Tokens are never shown to clients, so
    /// they need to be unique, not unguessable; this keeps a syscall off every claim.
    pub fn generate() -> Self {
        static PROCESS: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let process = *PROCESS.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Two halves rather than a `u128`: 8-byte aligned, so the records that hold a
        // token pack tighter.
        Self([process, count])
    }

    /// A token from its 16 bytes (big-endian), as a store read it back.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        let both = u128::from_be_bytes(bytes);
        Self([(both >> 64) as u64, both as u64])
    }

    /// The token's 16 bytes (big-endian), as a store writes them.
    pub const fn to_bytes(self) -> [u8; 16] {
        (((self.0[0] as u128) << 64) | self.0[1] as u128).to_be_bytes()
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The per-process counter's low bits: enough to tell a process's tokens apart in
        // a log, without the process's random half.
        write!(f, "LockToken(…{:08x})", self.0[1] as u32)
    }
}

/// The most headers a record may hold: far more than any response has, and far below
/// what a `HeaderMap` can take, so a foreign record cannot make decoding panic.
pub(crate) const MAX_HEADERS: usize = 4096;

/// A recorded response, as it is replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The original status.
    pub status: StatusCode,
    /// The original end-to-end headers (hop-by-hop headers and `set-cookie` already
    /// removed by the layer).
    pub headers: HeaderMap,
    /// The original body, byte for byte; `None` when it was larger than the layer's
    /// `max_response_body` and so was delivered once and not kept.
    pub body: Option<Bytes>,
    /// The trailers that followed the body (a gRPC answer's `grpc-status` travels here),
    /// byte for byte; `None` when the body ended without any.
    pub trailers: Option<HeaderMap>,
}

impl StoredResponse {
    /// How many bytes the response holds (headers, body and trailers), for size
    /// accounting.
    pub fn size(&self) -> usize {
        let fields = |map: &HeaderMap| -> usize {
            map.iter()
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum()
        };
        fields(&self.headers)
            + self.body.as_ref().map_or(0, Bytes::len)
            + self.trailers.as_ref().map_or(0, fields)
    }
}

/// The answer of [`IdempotencyStore::begin`](super::IdempotencyStore::begin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key was free and is now claimed with the caller's token: run the request.
    Claimed,
    /// The key is already in flight under the caller's own token: an earlier `begin` of
    /// the same request landed (its reply may have been lost), or an outer layer on the
    /// same store holds the claim for this request. The record is unchanged (a store may
    /// write the same token again, as `RedisStore` does so that a `WAIT` covers the claim).
    OwnClaim,
    /// The key is claimed by a request with the same fingerprint that has not finished.
    InProgress,
    /// The key is held by a request with a different fingerprint, this one. Its
    /// [`request`](Fingerprint::request) digest tells "another request" from "the same
    /// request with other credentials".
    Conflict(Fingerprint),
    /// The key completed with the same fingerprint: replay this response.
    Completed(StoredResponse),
}

/// A live record, as [`IdempotencyStore::get`](super::IdempotencyStore::get) returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The fingerprint of the request that claimed the key.
    pub fingerprint: Fingerprint,
    /// Whether that request is still running or has completed.
    pub state: RecordState,
}

/// The state of a live record.
#[derive(Debug, Clone, PartialEq, Eq)]
// Held inline, as `Begin::Completed` holds it: `get` is an inspection call, off the
// request path, and a box would only make matching on it clumsier.
#[allow(clippy::large_enum_variant)]
pub enum RecordState {
    /// Claimed, and the claim's lease has not expired.
    InFlight,
    /// Completed with this response.
    Completed(StoredResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_encode_namespace_scope_and_key() {
        let unscoped = RecordKey::new("idem", "", "order-1");
        assert_eq!(unscoped.as_str(), "idem:0::order-1");
        assert_eq!(unscoped.scope_partition(), None);
        let scoped = RecordKey::new("idem", "t:1", "order-1");
        assert_eq!(scoped.as_str(), "idem:3:t:1:order-1");
        assert_eq!(scoped.scope_partition(), Some("idem:3:t:1"));
        assert_eq!((scoped.scope(), scoped.key()), ("t:1", "order-1"));
        assert_eq!((unscoped.scope(), unscoped.key()), ("", "order-1"));
        assert_ne!(
            RecordKey::new("idem", "a:", "b"),
            RecordKey::new("idem", "a", ":b")
        );
        for len in [9, 10, 99, 100, 1234] {
            let scope = "s".repeat(len);
            let key = RecordKey::new("idem", &scope, "k");
            assert_eq!(key.as_str(), format!("idem:{len}:{scope}:k"));
            assert_eq!((key.scope(), key.key()), (scope.as_str(), "k"));
        }
        // Text that is not ASCII, on the stack and (long) on the heap.
        for scope in ["tenant-é".to_owned(), "é".repeat(300)] {
            let key = RecordKey::new("ns-ü", &scope, "k");
            assert_eq!(key.as_str(), format!("ns-ü:{}:{scope}:k", scope.len()));
            assert_eq!((key.scope(), key.key()), (scope.as_str(), "k"));
        }
    }
}
