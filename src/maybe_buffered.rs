//! [`MaybeBuffered`]: a body that is either a stream passed on as it is, or bytes already
//! read into memory. The server hands it to the inner service ([`RequestBody`]); the
//! client returns it ([`ClientResponseBody`]).
//!
//! [`RequestBody`]: crate::RequestBody
//! [`ClientResponseBody`]: crate::client::ClientResponseBody

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A body that is either the original body, streamed as it comes, or bytes already
    /// read into memory (sent as one frame).
    pub struct MaybeBuffered<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Streaming { #[pin] body: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
        // The bytes read so far, then the rest of the original body as it comes.
        Resumed { head: Option<Bytes>, rest: Pin<Box<B>> },
    }
}

impl<B> MaybeBuffered<B> {
    pub(crate) fn streaming(body: B) -> Self {
        Self {
            kind: Kind::Streaming { body },
        }
    }

    pub(crate) fn buffered(data: Bytes) -> Self {
        Self::buffered_with_trailers(data, None)
    }

    /// The bytes, then the trailers the original body ended with (if any).
    pub(crate) fn buffered_with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// The bytes already read of `rest`, then what is left of it.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn resumed(head: Bytes, rest: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Resumed {
                head: (!head.is_empty()).then_some(head),
                rest,
            },
        }
    }

    /// Whether the bytes were read into memory (rather than streamed).
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }
}

impl<B> Body for MaybeBuffered<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Streaming { body } => body.poll_frame(cx),
            KindProj::Buffered { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Resumed { head, rest } => match head.take() {
                Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
                None => rest.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streaming { body } => body.is_end_stream(),
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Resumed { head, rest } => head.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streaming { body } => body.size_hint(),
            Kind::Buffered { data, trailers } => {
                let len = data.as_ref().map_or(0, |d| d.len() as u64);
                // With trailers to send, no exact length: an HTTP/1.1 peer framing it by
                // `Content-Length` would leave them no room.
                match trailers {
                    None => SizeHint::with_exact(len),
                    Some(_) => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(len);
                        hint
                    }
                }
            }
            Kind::Resumed { head, rest } => {
                let held = head.as_ref().map_or(0, |h| h.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(held.saturating_add(inner.lower()));
                if let Some(upper) = inner.upper().and_then(|upper| upper.checked_add(held)) {
                    hint.set_upper(upper);
                }
                hint
            }
        }
    }
}

impl<B> fmt::Debug for MaybeBuffered<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Streaming { .. } => "streaming",
            Kind::Buffered { .. } => "buffered",
            Kind::Resumed { .. } => "resumed",
        };
        f.debug_struct("MaybeBuffered")
            .field("kind", &kind)
            .finish()
    }
}
