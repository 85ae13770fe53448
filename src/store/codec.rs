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

use std::ops::Range;

use bytes::{BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{record::MAX_HEADERS, StoreError, StoredResponse};

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

/// Decodes a record, copying its header values and body out of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredResponse, StoreError> {
    parse(
        bytes,
        |range| HeaderValue::from_bytes(&bytes[range]).ok(),
        |range| Bytes::copy_from_slice(&bytes[range]),
    )
}

fn parse(
    bytes: &[u8],
    value: impl Fn(Range<usize>) -> Option<HeaderValue>,
    body: impl FnOnce(Range<usize>) -> Bytes,
) -> Result<StoredResponse, StoreError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8()?;
    if version != FORMAT_VERSION {
        return Err(StoreError::corrupt(format!(
            "unknown record format version {version}"
        )));
    }
    let status = StatusCode::from_u16(reader.u16()?)
        .map_err(|_| StoreError::corrupt("invalid status code"))?;
    let count = reader.u32()? as usize;
    if count > MAX_HEADERS {
        return Err(StoreError::corrupt(format!(
            "{count} headers, more than the {MAX_HEADERS} a record may hold"
        )));
    }
    let mut headers = HeaderMap::with_capacity(count.min(64));
    for _ in 0..count {
        let name = HeaderName::from_bytes(&bytes[reader.field()?])
            .map_err(|_| StoreError::corrupt("invalid header name"))?;
        let value =
            value(reader.field()?).ok_or_else(|| StoreError::corrupt("invalid header value"))?;
        headers
            .try_append(name, value)
            .map_err(|_| StoreError::corrupt("too many headers"))?;
    }
    let body = match reader.u8()? {
        0 => None,
        1 => Some(body(reader.field()?)),
        _ => return Err(StoreError::corrupt("invalid body flag")),
    };
    if reader.at != bytes.len() {
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

/// Reads `bytes` front to back, handing out the ranges it read.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<Range<usize>, StoreError> {
        if self.bytes.len() - self.at < n {
            return Err(StoreError::corrupt("record is truncated"));
        }
        let range = self.at..self.at + n;
        self.at += n;
        Ok(range)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let range = self.take(N)?;
        Ok(self.bytes[range].try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A length-prefixed field.
    fn field(&mut self) -> Result<Range<usize>, StoreError> {
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

    #[test]
    fn a_record_claiming_too_many_headers_is_refused_not_a_panic() {
        let mut bytes = vec![FORMAT_VERSION, 0, 200];
        let count = 40_000u32;
        bytes.extend_from_slice(&count.to_be_bytes());
        for _ in 0..count {
            bytes.extend_from_slice(&1u32.to_be_bytes());
            bytes.push(b'x');
            bytes.extend_from_slice(&0u32.to_be_bytes());
        }
        bytes.push(0);
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt);
        assert!(err.to_string().contains("headers"), "{err}");
        // Right at the bound it decodes: many values of one name are fine.
        let mut at_bound = vec![FORMAT_VERSION, 0, 200];
        at_bound.extend_from_slice(&(MAX_HEADERS as u32).to_be_bytes());
        for _ in 0..MAX_HEADERS {
            at_bound.extend_from_slice(&1u32.to_be_bytes());
            at_bound.push(b'x');
            at_bound.extend_from_slice(&0u32.to_be_bytes());
        }
        at_bound.push(0);
        assert_eq!(decode(&at_bound).unwrap().headers.len(), MAX_HEADERS);
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config(10_000))]
        /// Fuzzing the decoder: arbitrary bytes never panic, in either decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&bytes);
        }

        /// Fuzzing near valid input: a real record with bytes overwritten, cut or
        /// appended decodes to a record or a `Corrupt` error, never a panic.
        #[test]
        fn mutated_records_never_panic(
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 0..8),
            cut in proptest::option::of(proptest::num::usize::ANY),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..8),
        ) {
            let mut bytes = encode(&sample());
            for (at, byte) in edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            if let Err(err) = decode(&bytes) {
                proptest::prop_assert_eq!(err.kind(), StoreErrorKind::Corrupt);
            }
        }

        #[test]
        fn arbitrary_bodies_round_trip(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let response = StoredResponse { body: Some(Bytes::from(body)), ..sample() };
            proptest::prop_assert_eq!(decode(&encode(&response)).unwrap(), response);
        }
    }
}
