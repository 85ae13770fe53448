//! The versioned binary encoding of a [`StoredResponse`], shared by the stores that keep
//! bytes (Redis, PostgreSQL).
//!
//! Format version 1, all integers big-endian:
//!
//! ```text
//! u8  version (= 1)
//! u16 status
//! u32 header count, then per header: u32 name length, name, u32 value length, value
//! u8  body present (0 or 1), then if 1: u32 body length, body
//! ```
//!
//! Decoding is strict: a wrong version, a short read, an invalid status or header, or
//! trailing bytes is a [`StoreErrorKind::Corrupt`](super::StoreErrorKind::Corrupt) error,
//! never a panic and never a partial response.
#![cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]

use bytes::{BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{StoreError, StoredResponse};

/// The format version this release writes and reads.
pub(crate) const FORMAT_VERSION: u8 = 1;

pub(crate) fn encode(response: &StoredResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + response.size() + 8 * response.headers.len());
    out.put_u8(FORMAT_VERSION);
    out.put_u16(response.status.as_u16());
    out.put_u32(len_u32(response.headers.len()));
    for (name, value) in &response.headers {
        put_bytes(&mut out, name.as_str().as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    match &response.body {
        Some(body) => {
            out.put_u8(1);
            put_bytes(&mut out, body);
        }
        None => out.put_u8(0),
    }
    out
}

pub(crate) fn decode(bytes: &[u8]) -> Result<StoredResponse, StoreError> {
    let mut reader = Reader { rest: bytes };
    let version = reader.u8()?;
    if version != FORMAT_VERSION {
        return Err(StoreError::corrupt(format!(
            "unknown record format version {version}"
        )));
    }
    let status = StatusCode::from_u16(reader.u16()?)
        .map_err(|_| StoreError::corrupt("invalid status code"))?;
    let count = reader.u32()? as usize;
    let mut headers = HeaderMap::with_capacity(count.min(64));
    for _ in 0..count {
        let name = HeaderName::from_bytes(reader.bytes()?)
            .map_err(|_| StoreError::corrupt("invalid header name"))?;
        let value = HeaderValue::from_bytes(reader.bytes()?)
            .map_err(|_| StoreError::corrupt("invalid header value"))?;
        headers.append(name, value);
    }
    let body = match reader.u8()? {
        0 => None,
        1 => Some(Bytes::copy_from_slice(reader.bytes()?)),
        _ => return Err(StoreError::corrupt("invalid body flag")),
    };
    if !reader.rest.is_empty() {
        return Err(StoreError::corrupt("trailing bytes after record"));
    }
    Ok(StoredResponse {
        status,
        headers,
        body,
    })
}

fn len_u32(len: usize) -> u32 {
    // Responses are bounded by `max_response_body`, far below 4 GiB.
    u32::try_from(len).expect("record field longer than 4 GiB")
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(len_u32(bytes.len()));
    out.put_slice(bytes);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(StoreError::corrupt("record is truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreErrorKind;

    fn sample() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        StoredResponse {
            status: StatusCode::CREATED,
            headers,
            body: Some(Bytes::from_static(b"{\"id\":1}")),
        }
    }

    /// Bytes written by format version 1. If this test fails, records already in users'
    /// Redis and PostgreSQL would no longer decode: add a new version instead.
    const V1_FIXTURE: &[u8] = b"\x01\x00\xc9\x00\x00\x00\x03\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x10application/json\
\x00\x00\x00\x07x-multi\x00\x00\x00\x01a\
\x00\x00\x00\x07x-multi\x00\x00\x00\x01b\
\x01\x00\x00\x00\x08{\"id\":1}";

    #[test]
    fn version_1_fixture_decodes_and_encodes_identically() {
        assert_eq!(decode(V1_FIXTURE).unwrap(), sample());
        assert_eq!(encode(&sample()), V1_FIXTURE);
    }

    #[test]
    fn body_less_record_round_trips() {
        let response = StoredResponse {
            body: None,
            ..sample()
        };
        assert_eq!(decode(&encode(&response)).unwrap(), response);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert_eq!(err.kind(), StoreErrorKind::Corrupt, "prefix of {len} bytes");
        }
    }

    #[test]
    fn foreign_and_future_values_are_errors() {
        for bad in [&b"hello world"[..], b"\x02\x00\xc8", b"{\"status\":200}"] {
            assert_eq!(decode(bad).unwrap_err().kind(), StoreErrorKind::Corrupt);
        }
        let mut trailing = encode(&sample());
        trailing.push(0);
        assert_eq!(
            decode(&trailing).unwrap_err().kind(),
            StoreErrorKind::Corrupt
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_bodies_round_trip(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let response = StoredResponse { body: Some(Bytes::from(body)), ..sample() };
            proptest::prop_assert_eq!(decode(&encode(&response)).unwrap(), response);
        }
    }
}
