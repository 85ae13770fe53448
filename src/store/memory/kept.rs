//! [`Kept`]: a completed response as the memory store keeps it, in as few bytes as it can
//! replay from: the body copied into an allocation of exactly its length (a handler's
//! response buffer is often twice its length), the headers in a boxed slice rather than a
//! `HeaderMap` (whose index and entries take several times their content).

use std::mem::size_of;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::store::{StoredResponse, MAX_HEADERS};

/// A completed response, kept.
#[derive(Debug)]
pub(super) struct Kept {
    status: StatusCode,
    headers: Box<[(HeaderName, HeaderValue)]>,
    body: Option<Bytes>,
}

impl Kept {
    pub(super) fn new(response: &StoredResponse) -> Self {
        // Sized exactly (`len` counts every value): no growth, no shrink to fit.
        let mut headers = Vec::with_capacity(response.headers.len());
        headers.extend(
            response
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        Self {
            status: response.status,
            headers: headers.into_boxed_slice(),
            body: response.body.as_deref().map(Bytes::copy_from_slice),
        }
    }

    /// The outcome only: what is kept when the response does not fit.
    pub(super) fn without_body(status: StatusCode) -> Self {
        Self {
            status,
            headers: Box::new([]),
            body: None,
        }
    }

    /// The response to replay.
    pub(super) fn to_response(&self) -> StoredResponse {
        // Bounded: a map's capacity may not pass 32,768, though its values may.
        let mut headers = HeaderMap::with_capacity(self.headers.len().min(MAX_HEADERS));
        for (name, value) in &*self.headers {
            headers.append(name.clone(), value.clone());
        }
        StoredResponse {
            status: self.status,
            headers,
            body: self.body.clone(),
        }
    }

    pub(super) fn body_len(&self) -> Option<usize> {
        self.body.as_ref().map(Bytes::len)
    }

    /// The bytes it holds: the body, each header's slot, and the header bytes.
    pub(super) fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| {
                size_of::<(HeaderName, HeaderValue)>() + name.as_str().len() + value.len()
            })
            .sum();
        headers + self.body_len().unwrap_or(0)
    }
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
        let response = StoredResponse {
            status: StatusCode::CREATED,
            headers,
            body: Some(buffer.freeze()),
        };
        let kept = Kept::new(&response);
        assert_eq!(kept.to_response(), response);
        assert_eq!(kept.body_len(), Some(2));
        let one = size_of::<(HeaderName, HeaderValue)>();
        assert_eq!(
            kept.size(),
            2 + 3 * one + 2 * "set-thing".len() + 2 + "content-type".len() + 16
        );
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
        };
        let replayed = Kept::new(&response).to_response();
        assert_eq!(replayed.headers.get_all("x-many").iter().count(), 30_000);
        assert_eq!(replayed, response);
    }
}
