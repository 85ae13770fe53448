//! The request and response body types of the middleware.

use std::{
    fmt,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::maybe_buffered::MaybeBuffered;

/// The request body the inner service receives: the original body of a request the layer
/// passed through untouched (streaming), or the bytes it buffered to fingerprint.
pub type RequestBody<B> = MaybeBuffered<B>;

pin_project! {
    /// The response body of [`Idempotency`](crate::Idempotency): the inner service's own
    /// body (passed through, or streamed on past the recording limit) or bytes the layer
    /// holds (a replay, a recorded response, a problem).
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: ResponseKind<B>,
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B: Body> {
        // The inner body as it streams, or bytes the layer holds whole.
        Plain { #[pin] body: MaybeBuffered<B> },
        Held {
            // What was read before the layer decided (`None` once sent, or if empty).
            head: Option<Bytes>,
            // The rest of the inner body, when only its head was buffered.
            rest: Option<Pin<Box<B>>>,
            // An error the inner body gave while its head was buffered.
            error: Option<B::Error>,
            trailers: Option<HeaderMap>,
        },
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn streaming(body: B) -> Self {
        Self {
            kind: ResponseKind::Plain {
                body: MaybeBuffered::streaming(body),
            },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: ResponseKind::Plain {
                body: MaybeBuffered::buffered(data),
            },
        }
    }

    /// The bytes already read, then what is left of the inner body (if anything), then
    /// the error it gave (if any), then its trailers (if any).
    pub(crate) fn held(
        head: Bytes,
        rest: Option<Pin<Box<B>>>,
        error: Option<B::Error>,
        trailers: Option<HeaderMap>,
    ) -> Self {
        Self {
            kind: ResponseKind::Held {
                head: (!head.is_empty()).then_some(head),
                rest,
                error,
                trailers,
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
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
            ResponseKindProj::Plain { body } => body.poll_frame(cx),
            ResponseKindProj::Held {
                head,
                rest,
                error,
                trailers,
            } => {
                if let Some(head) = head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                if let Some(body) = rest {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(frame) => return Poll::Ready(Some(frame)),
                        None => *rest = None,
                    }
                }
                if let Some(err) = error.take() {
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Plain { body } => body.is_end_stream(),
            ResponseKind::Held {
                head,
                rest,
                error,
                trailers,
            } => {
                head.is_none()
                    && rest.as_ref().is_none_or(Body::is_end_stream)
                    && error.is_none()
                    && trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Plain { body } => body.size_hint(),
            ResponseKind::Held {
                head,
                rest,
                trailers,
                ..
            } => {
                let held = head.as_ref().map_or(0, |h| h.len() as u64);
                match rest {
                    // Trailers to send: no exact length, which would frame an HTTP/1.1
                    // answer by `Content-Length`, with no room for them.
                    None if trailers.is_some() => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(held);
                        hint
                    }
                    None => SizeHint::with_exact(held),
                    Some(body) => {
                        let inner = body.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(held.saturating_add(inner.lower()));
                        if let Some(upper) = inner.upper().and_then(|upper| upper.checked_add(held))
                        {
                            hint.set_upper(upper);
                        }
                        hint
                    }
                }
            }
        }
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ResponseKind::Plain { body } if body.is_buffered() => "full",
            ResponseKind::Plain { .. } => "streaming",
            ResponseKind::Held { .. } => "held",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
