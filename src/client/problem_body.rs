//! Reading a `409`'s body to tell "in progress" (retry) from a conflict (final), at most
//! [`MAX_PROBLEM_BODY`] bytes of it: a server's answer can be any size, and the client
//! must not hold an unbounded one in memory to classify it.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

/// The most of a `409`'s body the client reads to classify it: 64 KiB, far above any
/// problem document (the layer's are under 1 KiB). A longer body is no `in-progress`
/// problem: the answer is final, and its caller gets it whole, streamed.
pub(crate) const MAX_PROBLEM_BODY: usize = 64 * 1024;

/// A body read as far as [`MAX_PROBLEM_BODY`].
pub(crate) enum Peeked<B> {
    /// It ended within the bound: its bytes and trailers.
    Whole(Bytes, Option<HeaderMap>),
    /// It did not: the bytes read, and the rest.
    Longer(Bytes, Pin<Box<B>>),
}

/// Reads `body` until it ends or passes [`MAX_PROBLEM_BODY`] bytes.
pub(crate) async fn peek<B>(body: B) -> Result<Peeked<B>, B::Error>
where
    B: Body<Data = Bytes>,
{
    let mut body = Box::pin(body);
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                read.extend_from_slice(&data);
                if read.len() > MAX_PROBLEM_BODY {
                    return Ok(Peeked::Longer(read.freeze(), body));
                }
            }
            Err(frame) => {
                let trailers = frame.into_trailers().ok();
                return Ok(Peeked::Whole(read.freeze(), trailers));
            }
        }
    }
    Ok(Peeked::Whole(read.freeze(), None))
}
