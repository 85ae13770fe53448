//! [`IdempotencyClient`]: the retry loop.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower_service::Service;

use super::{
    backoff::{in_progress, jittered, retry_after, retryable_status, Retry},
    layer::ClientConfig,
    outcome::{Attempt, AttemptResult, ClientOutcome},
};
use crate::{body::ResponseBody, replay::IDEMPOTENT_REPLAYED};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client service built by [`IdempotencyClientLayer`](super::IdempotencyClientLayer):
/// wraps a service that sends `Request<Full<Bytes>>`.
#[derive(Clone)]
pub struct IdempotencyClient<S> {
    inner: S,
    config: Arc<ClientConfig>,
}

impl<S> IdempotencyClient<S> {
    pub(crate) fn new(inner: S, config: Arc<ClientConfig>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the client, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for IdempotencyClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyClient")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The response future of [`IdempotencyClient`].
pub struct ResponseFuture<B: Body> {
    inner: BoxedCall<B>,
}

impl<B: Body> Future for ResponseFuture<B> {
    type Output = Result<Response<ResponseBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B: Body> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotencyClient<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError> + Send,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // `poll_ready` readied `self.inner`; take that one for the first attempt.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            inner: Box::pin(call(inner, Arc::clone(&self.config), req)),
        }
    }
}

/// How an attempt ended, before deciding whether to retry it.
type Ended<B> = Result<Response<ResponseBody<B>>, BoxError>;

type BoxedCall<B> = Pin<Box<dyn Future<Output = Ended<B>> + Send>>;

async fn call<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<ClientConfig>,
    req: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ReqBody: Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    // Buffered once: every attempt sends these bytes.
    let body = body.collect().await.map_err(Into::into)?.to_bytes();
    let key = if config.methods.contains(&parts.method) {
        match parts.headers.get(&config.header_name) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| "the idempotency key is not visible ASCII")?
                    .to_owned(),
            ),
            None => match &config.key_from {
                Some(derive) => derive(&parts, &body),
                None => Some(uuid::Uuid::new_v4().to_string()),
            },
        }
    } else {
        None
    };
    if let Some(key) = &key {
        parts
            .headers
            .insert(&config.header_name, HeaderValue::from_str(key)?);
    }
    let max_attempts = if key.is_some() {
        config.max_attempts
    } else {
        1
    };
    let deadline = Instant::now() + config.max_elapsed;
    let mut outcome = ClientOutcome {
        key,
        attempts: Vec::new(),
        replayed: false,
    };
    let mut waited = Duration::ZERO;
    loop {
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();

        let (ended, result, retry) = attempt(&mut inner, request, config.attempt_timeout).await;
        tracing::debug!(
            attempt = outcome.attempts.len() + 1,
            ?result,
            retry = retry.is_some(),
            "idempotent call attempt"
        );
        outcome.attempts.push(Attempt { waited, result });
        let last = outcome.attempts.len() as u32 >= max_attempts;
        let wait = retry.map(|retry_after| {
            jittered(
                config.base_delay,
                config.max_delay,
                outcome.attempts.len() as u32,
            )
            .max(retry_after.unwrap_or_default())
        });
        match (ended, wait) {
            (Ok(mut response), wait)
                if last || wait.is_none_or(|w| Instant::now() + w > deadline) =>
            {
                outcome.replayed = response
                    .headers()
                    .get(IDEMPOTENT_REPLAYED)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
                response.extensions_mut().insert(outcome);
                return Ok(response);
            }
            (Err(err), wait) if last || wait.is_none_or(|w| Instant::now() + w > deadline) => {
                return Err(err)
            }
            (_, wait) => {
                waited = wait.expect("retryable");
                tokio::time::sleep(waited).await;
            }
        }
        std::future::poll_fn(|cx| inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
    }
}

/// Sends one attempt. Returns how it ended, what to record of it, and `Some(retry_after)`
/// if it may be retried.
async fn attempt<S, ResBody>(
    inner: &mut S,
    request: Request<Full<Bytes>>,
    timeout: Option<Duration>,
) -> (Ended<ResBody>, AttemptResult, Option<Option<Duration>>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let sent = inner.call(request);
    let answered = match timeout {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(answered) => answered,
            Err(_) => {
                return (
                    Err("no response within the attempt timeout".into()),
                    AttemptResult::TimedOut,
                    Some(None),
                )
            }
        },
        None => sent.await,
    };
    let response = match answered {
        Ok(response) => response,
        Err(err) => {
            let err: BoxError = err.into();
            let text = err.to_string();
            return (Err(err), AttemptResult::TransportError(text), Some(None));
        }
    };
    let status = response.status();
    let result = AttemptResult::Status(status);
    let after = retry_after(response.headers(), SystemTime::now());
    match retryable_status(status) {
        Retry::No => (Ok(response.map(ResponseBody::streaming)), result, None),
        Retry::Yes => (
            Ok(response.map(ResponseBody::streaming)),
            result,
            Some(after),
        ),
        Retry::IfInProgress => {
            let (parts, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => {
                    let err: BoxError = err.into();
                    let text = err.to_string();
                    return (Err(err), AttemptResult::TransportError(text), Some(None));
                }
            };
            let retry = in_progress(&parts.headers, &body).then_some(after);
            (
                Ok(Response::from_parts(parts, ResponseBody::full(body))),
                result,
                retry,
            )
        }
    }
}
