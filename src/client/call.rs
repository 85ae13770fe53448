//! One logical call: its key chosen once, then attempts until one is final.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{request::Parts, HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower_service::Service;

use super::{
    body::ClientResponseBody,
    config::ClientConfig,
    outcome::{Attempt, AttemptResult, AttemptTimedOut, ClientOutcome},
    policy::{in_progress, retry_after, retryable_status, Retry, Schedule, Verdict},
    problem_body::{peek, Peeked},
};
use crate::protocol::REPLAY_MARKERS;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How an attempt ended: the response, or the error it gave.
pub(crate) type Ended<B> = Result<Response<ClientResponseBody<B>>, BoxError>;

/// One attempt: how it ended, what to record of it, and whether it may be retried.
struct Sent<B> {
    ended: Ended<B>,
    result: AttemptResult,
    verdict: Verdict,
}

impl<B> Sent<B> {
    fn error(err: BoxError, result: AttemptResult) -> Self {
        Self {
            ended: Err(err),
            result,
            verdict: Verdict::Retry { after: None },
        }
    }
}

/// The key of a call: the caller's own, else derived, else minted; `None` for a method
/// that gets no key.
fn choose_key(
    config: &ClientConfig,
    parts: &Parts,
    body: &Bytes,
) -> Result<Option<String>, BoxError> {
    if !config.methods.contains(&parts.method) {
        return Ok(None);
    }
    Ok(match parts.headers.get(&config.header_name) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "the idempotency key is not visible ASCII")?
                .to_owned(),
        ),
        None => match &config.key_from {
            Some(derive) => derive(parts, body),
            None => Some(uuid::Uuid::new_v4().to_string()),
        },
    })
}

pub(crate) async fn call<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<ClientConfig>,
    req: Request<ReqBody>,
) -> Ended<ResBody>
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
    let key = choose_key(&config, &parts, &body)?;
    if let Some(key) = &key {
        parts
            .headers
            .insert(&config.header_name, HeaderValue::from_str(key)?);
    }
    let mut schedule = Schedule::new(&config, key.is_some());
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

        let sent = attempt(&mut inner, request, config.attempt_timeout).await;
        let retry = matches!(sent.verdict, Verdict::Retry { .. });
        tracing::debug!(
            attempt = outcome.attempts.len() + 1,
            result = ?sent.result,
            retry,
            "idempotent call attempt"
        );
        outcome.attempts.push(Attempt {
            waited,
            result: sent.result,
        });
        match (sent.ended, schedule.after(sent.verdict)) {
            (Ok(mut response), None) => {
                outcome.replayed = replayed(response.headers());
                response.extensions_mut().insert(outcome);
                return Ok(response);
            }
            (Err(err), None) => return Err(err),
            (_, Some(wait)) => {
                waited = wait;
                tokio::time::sleep(wait).await;
            }
        }
        std::future::poll_fn(|cx| inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
    }
}

/// Whether the server marked the response as a replay (any of the markers peers use).
pub(crate) fn replayed(headers: &http::HeaderMap) -> bool {
    REPLAY_MARKERS.iter().any(|marker| {
        headers
            .get(marker)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    })
}

/// Sends one attempt and judges its answer.
async fn attempt<S, ResBody>(
    inner: &mut S,
    request: Request<Full<Bytes>>,
    timeout: Option<Duration>,
) -> Sent<ResBody>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let sent = inner.call(request);
    // The attempt's bound covers the answer and the part of a `409`'s body read with it.
    let deadline = timeout.map(|limit| tokio::time::Instant::now() + limit);
    let answered = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, sent).await {
            Ok(answered) => answered,
            Err(_) => {
                return Sent::error(
                    Box::new(AttemptTimedOut { body: false }),
                    AttemptResult::TimedOut,
                )
            }
        },
        None => sent.await,
    };
    let response = match answered {
        Ok(response) => response,
        Err(err) => return transport_error(err.into()),
    };
    let status = response.status();
    let result = AttemptResult::Status(status);
    let after = retry_after(response.headers(), SystemTime::now());
    let (response, verdict) = match retryable_status(status) {
        Retry::No => (response.map(ClientResponseBody::streaming), Verdict::Final),
        Retry::Yes => (
            response.map(ClientResponseBody::streaming),
            Verdict::Retry { after },
        ),
        Retry::IfInProgress => {
            // The body tells in progress from a conflict: read (at most a bound of) it,
            // and hand the caller a response that still has all of it.
            let (parts, body) = response.into_parts();
            let peeked = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, peek(body)).await {
                    Ok(peeked) => peeked,
                    Err(_) => {
                        return Sent::error(
                            Box::new(AttemptTimedOut { body: true }),
                            AttemptResult::TimedOut,
                        )
                    }
                },
                None => peek(body).await,
            };
            let (read, body) = match peeked {
                Ok(Peeked::Whole(read, trailers)) => {
                    let body = ClientResponseBody::buffered_with_trailers(read.clone(), trailers);
                    (read, body)
                }
                // Too long for a problem document: only a `Retry-After` says in progress.
                Ok(Peeked::Longer(head, rest)) => {
                    (Bytes::new(), ClientResponseBody::resumed(head, rest))
                }
                Err(err) => return transport_error(err.into()),
            };
            let verdict = if in_progress(&parts.headers, &read) {
                Verdict::Retry { after }
            } else {
                Verdict::Final
            };
            (Response::from_parts(parts, body), verdict)
        }
    };
    Sent {
        ended: Ok(response),
        result,
        verdict,
    }
}

fn transport_error<B>(err: BoxError) -> Sent<B> {
    let text = err.to_string();
    Sent::error(err, AttemptResult::TransportError(text))
}
