//! The versioned binary encoding of a [`StoredResponse`], shared by the stores that keep
//! bytes (Redis, PostgreSQL).
//!
//! Format version 2, all integers big-endian:
//!
//! ```text
//! u8  version (= 2)
//! u16 status
//! u32 header count, then per header: u32 name length, name, u32 value length, value
//! u8  body present (0 or 1), then if 1: u32 body length, body
//! u8  trailers present (0 or 1), then if 1: u32 trailer count, then each as a header
//! ```
//!
//! Version 1 is version 2 without its last field. A response without trailers is still
//! written in version 1, so that a release that reads only version 1 (the one before
//! trailers) can be rolled back to; both are read.
//!
//! Decoding is strict: a wrong version, a short read, an invalid status or header, or
//! trailing bytes is a [`StoreErrorKind::Corrupt`](super::StoreErrorKind::Corrupt) error,
//! never a panic and never a partial response.

use std::ops::Range;

use bytes::{BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{record::MAX_HEADERS, StoreError, StoredResponse};

/// The format version this release writes for a response with trailers (it reads this
/// one and version 1).
pub(crate) const FORMAT_VERSION: u8 = 2;

/// The first version, without trailers: what a response without them is written in.
const VERSION_1: u8 = 1;

pub(crate) fn encode(response: &StoredResponse) -> Vec<u8> {
    let fields = response.headers.len() + response.trailers.as_ref().map_or(0, HeaderMap::len);
    let mut out = Vec::with_capacity(24 + response.size() + 8 * fields);
    let version = match response.trailers {
        Some(_) => FORMAT_VERSION,
        None => VERSION_1,
    };
    out.put_u8(version);
    out.put_u16(response.status.as_u16());
    put_fields(&mut out, &response.headers);
    match &response.body {
        Some(body) => {
            out.put_u8(1);
            put_bytes(&mut out, body);
        }
        None => out.put_u8(0),
    }
    if let Some(trailers) = &response.trailers {
        out.put_u8(1);
        put_fields(&mut out, trailers);
    }
    out
}

/// A field count, then each name and value.
fn put_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    out.put_u32(len_u32(fields.len()));
    for (name, value) in fields {
        put_bytes(out, name.as_str().as_bytes());
        put_bytes(out, value.as_bytes());
    }
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
    if version != FORMAT_VERSION && version != VERSION_1 {
        return Err(StoreError::corrupt(format!(
            "unknown record format version {version}"
        )));
    }
    let status = StatusCode::from_u16(reader.u16()?)
        .map_err(|_| StoreError::corrupt("invalid status code"))?;
    let headers = fields(&mut reader, &value, "headers")?;
    let body = match reader.u8()? {
        0 => None,
        1 => Some(body(reader.field()?)),
        _ => return Err(StoreError::corrupt("invalid body flag")),
    };
    let trailers = match version {
        VERSION_1 => None,
        _ => match reader.u8()? {
            0 => None,
            1 => Some(fields(&mut reader, &value, "trailers")?),
            _ => return Err(StoreError::corrupt("invalid trailers flag")),
        },
    };
    if reader.at != bytes.len() {
        return Err(StoreError::corrupt("trailing bytes after record"));
    }
    Ok(StoredResponse {
        status,
        headers,
        body,
        trailers,
    })
}

/// A field count, then each name and value (`what`: headers or trailers, for errors).
fn fields(
    reader: &mut Reader<'_>,
    value: &impl Fn(Range<usize>) -> Option<HeaderValue>,
    what: &str,
) -> Result<HeaderMap, StoreError> {
    let count = reader.u32()? as usize;
    if count > MAX_HEADERS {
        return Err(StoreError::corrupt(format!(
            "{count} {what}, more than the {MAX_HEADERS} a record may hold"
        )));
    }
    let mut map = HeaderMap::with_capacity(count.min(64));
    for _ in 0..count {
        let name = HeaderName::from_bytes(&reader.bytes[reader.field()?])
            .map_err(|_| StoreError::corrupt(format!("invalid name in {what}")))?;
        let value = value(reader.field()?)
            .ok_or_else(|| StoreError::corrupt(format!("invalid value in {what}")))?;
        map.try_append(name, value)
            .map_err(|_| StoreError::corrupt(format!("too many {what}")))?;
    }
    Ok(map)
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
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.append("x-sum", HeaderValue::from_static("1"));
        trailers.append("x-sum", HeaderValue::from_static("2"));
        StoredResponse {
            status: StatusCode::CREATED,
            headers,
            body: Some(Bytes::from_static(b"{\"id\":1}")),
            trailers: Some(trailers),
        }
    }

    /// Bytes written by format version 2, the current one. If this test fails, records
    /// already in users' Redis and PostgreSQL would no longer decode: add a new version
    /// instead.
    const V2_FIXTURE: &[u8] = b"\x02\x00\xc9\x00\x00\x00\x03\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x10application/json\
\x00\x00\x00\x07x-multi\x00\x00\x00\x01a\
\x00\x00\x00\x07x-multi\x00\x00\x00\x01b\
\x01\x00\x00\x00\x08{\"id\":1}\
\x01\x00\x00\x00\x03\
\x00\x00\x00\x0bgrpc-status\x00\x00\x00\x010\
\x00\x00\x00\x05x-sum\x00\x00\x00\x011\
\x00\x00\x00\x05x-sum\x00\x00\x00\x012";

    /// Bytes written by format version 1 (no trailers), which is still read.
    const V1_FIXTURE: &[u8] = b"\x01\x00\xc9\x00\x00\x00\x03\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x10application/json\
\x00\x00\x00\x07x-multi\x00\x00\x00\x01a\
\x00\x00\x00\x07x-multi\x00\x00\x00\x01b\
\x01\x00\x00\x00\x08{\"id\":1}";

    #[test]
    fn version_2_fixture_decodes_and_encodes_identically() {
        assert_eq!(decode(V2_FIXTURE).unwrap(), sample());
        assert_eq!(encode(&sample()), V2_FIXTURE);
    }

    #[test]
    fn version_1_records_still_decode_without_trailers() {
        let without = StoredResponse {
            trailers: None,
            ..sample()
        };
        assert_eq!(decode(V1_FIXTURE).unwrap(), without);
        // A response without trailers is written in version 1, byte for byte, so that the
        // release before trailers still reads it.
        assert_eq!(encode(&without), V1_FIXTURE);
        // Written by hand in version 2 without trailers, it reads back the same.
        let mut v2 = V1_FIXTURE.to_vec();
        v2[0] = 2;
        v2.push(0);
        assert_eq!(decode(&v2).unwrap(), without);
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
    fn no_trailers_and_empty_trailers_stay_apart() {
        for trailers in [None, Some(HeaderMap::new())] {
            let response = StoredResponse {
                trailers,
                ..sample()
            };
            assert_eq!(decode(&encode(&response)).unwrap(), response);
        }
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
        for bad in [&b"hello world"[..], b"\x03\x00\xc8", b"{\"status\":200}"] {
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
        bytes.extend_from_slice(&[0, 0]);
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
        at_bound.extend_from_slice(&[0, 0]);
        assert_eq!(decode(&at_bound).unwrap().headers.len(), MAX_HEADERS);
    }

    #[test]
    fn a_record_claiming_too_many_trailers_is_refused_not_a_panic() {
        let mut bytes = V1_FIXTURE.to_vec();
        bytes[0] = FORMAT_VERSION;
        bytes.push(1);
        bytes.extend_from_slice(&(MAX_HEADERS as u32 + 1).to_be_bytes());
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt);
        assert!(err.to_string().contains("trailers"), "{err}");
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
