//! Buffering bodies: the request body before the fingerprint, the response body before
//! the record. Both keep a body of one chunk (the common case) as it is, without a copy.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

use super::problem::Problem;

/// Collects data chunks: the first is kept as it is, and only a second one makes a copy.
#[derive(Default)]
struct Chunks {
    first: Bytes,
    more: Option<BytesMut>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        match &mut self.more {
            Some(buf) => buf.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None if data.is_empty() => {}
            None => {
                let mut buf = BytesMut::with_capacity(self.len.max(2 * self.first.len()));
                buf.extend_from_slice(&self.first);
                buf.extend_from_slice(&data);
                self.more = Some(buf);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, BytesMut::freeze)
    }
}

/// Buffers the request body up to `limit` bytes, for the fingerprint and the inner
/// service, with its trailers (if any), which the inner service gets after the bytes. A
/// declared `Content-Length` over the limit is refused before reading. Trailers are not
/// part of the fingerprint.
pub(crate) async fn buffer_request<B>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
) -> Result<(Bytes, Option<HeaderMap>), Problem>
where
    B: Body<Data = Bytes>,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Problem::BodyTooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    let mut chunks = Chunks::default();
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        match frame.map_err(|_| Problem::BodyUnreadable)?.into_data() {
            Ok(data) => {
                chunks.push(data);
                if chunks.len > limit {
                    return Err(Problem::BodyTooLarge { limit });
                }
            }
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(more);
                }
            }
        }
    }
    Ok((chunks.into_bytes(), trailers))
}

/// A response body read up to the recording limit.
pub(crate) enum ReadResponse<B: Body> {
    /// The whole body, and its trailers if it had any.
    Complete {
        body: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Over the limit: what was read, and the rest still to stream.
    Overflow { head: Bytes, rest: Pin<Box<B>> },
    /// The body failed: what was read before, and the error.
    Failed { head: Bytes, error: B::Error },
}

/// Reads the inner service's response body, up to `limit` bytes, to record it.
pub(crate) async fn read_response<B: Body<Data = Bytes>>(body: B, limit: usize) -> ReadResponse<B> {
    let mut body = Box::pin(body);
    let mut chunks = Chunks::default();
    loop {
        match body.frame().await {
            None => {
                return ReadResponse::Complete {
                    body: chunks.into_bytes(),
                    trailers: None,
                }
            }
            Some(Err(error)) => {
                return ReadResponse::Failed {
                    head: chunks.into_bytes(),
                    error,
                }
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    chunks.push(data);
                    if chunks.len > limit {
                        return ReadResponse::Overflow {
                            head: chunks.into_bytes(),
                            rest: body,
                        };
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return ReadResponse::Complete {
                            body: chunks.into_bytes(),
                            trailers: Some(trailers),
                        };
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_is_kept_without_a_copy() {
        let data = Bytes::from_static(b"hello");
        let mut chunks = Chunks::default();
        chunks.push(Bytes::new());
        chunks.push(data.clone());
        chunks.push(Bytes::new());
        let kept = chunks.into_bytes();
        assert_eq!(kept.as_ptr(), data.as_ptr());
    }

    #[test]
    fn several_chunks_are_joined_in_order() {
        let mut chunks = Chunks::default();
        for part in ["ab", "", "cd", "e"] {
            chunks.push(Bytes::from(part));
        }
        assert_eq!(chunks.len, 5);
        assert_eq!(chunks.into_bytes(), "abcde");
    }
}
