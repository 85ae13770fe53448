//! [`Kept`]: a completed response as the memory store keeps it, in as few bytes as it can
//! replay from: the body copied into an allocation of exactly its length (a handler's
//! response buffer is often twice its length), the headers and trailers in one boxed slice
//! rather than `HeaderMap`s (whose index and entries take several times their content).

use std::mem::size_of;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::store::{StoredResponse, MAX_HEADERS};

/// A completed response, kept.
#[derive(Debug)]
pub(super) struct Kept {
    status: StatusCode,
    /// Whether the body was followed by trailers (which may be none).
    has_trailers: bool,
    /// Where the trailers start in `fields`.
    trailers_at: u32,
    /// The headers, then the trailers.
    fields: Box<[(HeaderName, HeaderValue)]>,
    body: Option<Bytes>,
}

impl Kept {
    pub(super) fn new(response: &StoredResponse) -> Self {
        let trailers = response.trailers.as_ref();
        // Sized exactly (`len` counts every value): no growth, no shrink to fit.
        let mut fields =
            Vec::with_capacity(response.headers.len() + trailers.map_or(0, HeaderMap::len));
        let copy = |(name, value): (&HeaderName, &HeaderValue)| (name.clone(), value.clone());
        fields.extend(response.headers.iter().map(copy));
        // Records hold at most `MAX_HEADERS` headers, far below `u32::MAX`.
        let trailers_at = u32::try_from(fields.len()).unwrap_or(u32::MAX);
        if let Some(trailers) = trailers {
            fields.extend(trailers.iter().map(copy));
        }
        Self {
            status: response.status,
            has_trailers: trailers.is_some(),
            trailers_at,
            fields: fields.into_boxed_slice(),
            body: response.body.as_deref().map(Bytes::copy_from_slice),
        }
    }

    /// The outcome only: what is kept when the response does not fit.
    pub(super) fn without_body(status: StatusCode) -> Self {
        Self {
            status,
            has_trailers: false,
            trailers_at: 0,
            fields: Box::new([]),
            body: None,
        }
    }

    /// The response to replay.
    pub(super) fn to_response(&self) -> StoredResponse {
        let at = (self.trailers_at as usize).min(self.fields.len());
        let (headers, trailers) = self.fields.split_at(at);
        StoredResponse {
            status: self.status,
            headers: to_map(headers),
            body: self.body.clone(),
            trailers: self.has_trailers.then(|| to_map(trailers)),
        }
    }

    pub(super) fn body_len(&self) -> Option<usize> {
        self.body.as_ref().map(Bytes::len)
    }

    /// The bytes it holds: the body, each header's and trailer's slot, and their bytes.
    pub(super) fn size(&self) -> usize {
        let headers: usize = self
            .fields
            .iter()
            .map(|(name, value)| {
                size_of::<(HeaderName, HeaderValue)>() + name.as_str().len() + value.len()
            })
            .sum();
        headers + self.body_len().unwrap_or(0)
    }
}

/// The fields as a map.
fn to_map(fields: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    // Bounded: a map's capacity may not pass 32,768, though its values may.
    let mut map = HeaderMap::with_capacity(fields.len().min(MAX_HEADERS));
    for (name, value) in fields {
        map.append(name.clone(), value.clone());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_response_replays_as_it_was_recorded() {
        let mut headers = HeaderMap::new();
        headers.append("set-thing", HeaderValue::from_static("a"));
        headers.append("set-thing", HeaderValue::from_static("b"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let mut buffer = bytes::BytesMut::with_capacity(4096);
        buffer.extend_from_slice(b"{}");
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let response = StoredResponse {
            status: StatusCode::CREATED,
            headers,
            body: Some(buffer.freeze()),
            trailers: Some(trailers),
        };
        let kept = Kept::new(&response);
        assert_eq!(kept.to_response(), response);
        assert_eq!(kept.body_len(), Some(2));
        let one = size_of::<(HeaderName, HeaderValue)>();
        assert_eq!(
            kept.size(),
            2 + 4 * one + 2 * "set-thing".len() + 2 + "content-type".len() + 16 + 12
        );
        for trailers in [None, Some(HeaderMap::new())] {
            let response = StoredResponse {
                trailers,
                ..response.clone()
            };
            assert_eq!(Kept::new(&response).to_response(), response);
        }
        let bare = Kept::without_body(StatusCode::CREATED);
        assert_eq!(bare.to_response().body, None);
        assert_eq!(bare.size(), 0);
    }

    #[test]
    fn a_response_with_more_values_than_a_map_can_be_sized_for_replays() {
        let mut headers = HeaderMap::new();
        for i in 0..30_000 {
            headers.append("x-many", HeaderValue::from(i));
        }
        let response = StoredResponse {
            status: StatusCode::OK,
            headers,
            body: None,
            trailers: None,
        };
        let replayed = Kept::new(&response).to_response();
        assert_eq!(replayed.headers.get_all("x-many").iter().count(), 30_000);
        assert_eq!(replayed, response);
    }
}
