//! [`IdempotencyMiddleware`]: the client half for `reqwest`, as a `reqwest-middleware`
//! middleware (feature `reqwest`).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Extensions, HeaderValue};
use reqwest::{Request, Response, ResponseBuilderExt};
use reqwest_middleware::{Middleware, Next};

use super::{
    call::replayed,
    config::ClientConfig,
    outcome::{Attempt, AttemptResult, AttemptTimedOut, ClientOutcome},
    policy::{in_progress, retry_after, retryable_status, Retry, Schedule, Verdict},
    problem_body::{peek, Peeked},
    IdempotencyClientLayer,
};
use crate::maybe_buffered::MaybeBuffered;

/// One idempotency key per logical call for a `reqwest_middleware::ClientWithMiddleware`,
/// reused on every attempt, with the same retry policy as
/// [`IdempotencyClientLayer`] (whose builder configures it: see
/// [`IdempotencyClientLayer::reqwest_middleware`]).
///
/// For each POST or PATCH call it keeps the key the caller set, or derives one with
/// `key_from`, or mints a UUID v4, once; and it retries transport errors, `409` in
/// progress, `429`, `502`, `503` and `504` with exponential backoff and full jitter,
/// waiting at least `Retry-After`, within the caps on attempts and time. A conflict, a
/// `422`, any other `4xx` and a `500` are final. The response carries a
/// [`ClientOutcome`] in its extensions.
///
/// **With `reqwest-retry`.** Let one of the two retry, not both:
///
/// - this middleware alone (recommended): it knows `409` in progress from a conflict,
///   obeys `Retry-After`, and never retries a `4xx`;
/// - or `reqwest-retry`'s `RetryTransientMiddleware` with this one made
///   [`keys_only`](Self::keys_only), in either order: every attempt `reqwest-retry` makes
///   carries the call's one key (the key is kept in the call's extensions, which
///   `reqwest-retry` hands to each attempt).
///
/// Should both retry by mistake, the key still never changes within a call. With
/// `reqwest-retry` outside, the attempts add up rather than multiply: when it finds its
/// key already chosen for the call (an outer retrier calling it again), this middleware
/// sends once. With this middleware outside and a retrying `reqwest-retry` inside, they
/// multiply (each of ours is a whole `reqwest-retry` loop): do not set it up so.
///
/// A key derived with `key_from` sees the body's bytes only when the body is in memory
/// (`.body(bytes or a string)`); a streaming body is sent once, and the function sees no
/// bytes of it.
/// `reqwest-retry`'s default policy also retries a `500`: against this crate's server, a
/// recorded `500` is replayed (`idempotent-replayed: true`), the handler is not run again.
///
/// ```no_run
/// use reqwest_middleware::ClientBuilder;
/// use tower_idempotency::client::IdempotencyClientLayer;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = ClientBuilder::new(reqwest::Client::new())
///     .with(IdempotencyClientLayer::new().reqwest_middleware())
///     .build();
/// let response = client
///     .post("http://127.0.0.1:3000/orders")
///     .body(r#"{"item":"book","quantity":1}"#)
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct IdempotencyMiddleware {
    config: Arc<ClientConfig>,
    retries: bool,
}

impl IdempotencyClientLayer {
    /// The same configuration as a `reqwest-middleware` middleware (feature `reqwest`).
    pub fn reqwest_middleware(&self) -> IdempotencyMiddleware {
        IdempotencyMiddleware {
            config: self.config(),
            retries: true,
        }
    }
}

impl IdempotencyMiddleware {
    /// The middleware with the defaults of [`IdempotencyClientLayer::new`].
    pub fn new() -> Self {
        IdempotencyClientLayer::new().reqwest_middleware()
    }

    /// Attaches the call's key to every attempt but sends each once, leaving the
    /// retries to another middleware (`reqwest-retry`).
    ///
    /// An [`attempt_timeout`](IdempotencyClientLayer::attempt_timeout) still bounds each
    /// attempt, but its error is this middleware's (`reqwest_middleware::Error::Middleware`
    /// holding an [`AttemptTimedOut`]), which `reqwest-retry`'s default policy takes as
    /// final: with `reqwest-retry`, bound the attempts with reqwest's own timeout
    /// (`reqwest::ClientBuilder::timeout`), whose errors it retries, or have its policy
    /// retry an [`AttemptTimedOut`].
    #[must_use]
    pub fn keys_only(mut self) -> Self {
        self.retries = false;
        self
    }
}

impl Default for IdempotencyMiddleware {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IdempotencyMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyMiddleware")
            .field("header_name", &self.config.header_name)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// The key chosen for a call, kept in its extensions: an outer retrier hands the same
/// extensions to each attempt, so the key outlives the attempt that chose it.
#[derive(Clone)]
struct CallKey(String);

/// A middleware failure of our own.
fn refuse(why: &str) -> reqwest_middleware::Error {
    reqwest_middleware::Error::Middleware(anyhow::anyhow!("idempotency: {why}"))
}

/// An attempt with no answer (or no `409` body: `body`) in time.
fn timed_out(body: bool) -> reqwest_middleware::Error {
    reqwest_middleware::Error::Middleware(anyhow::Error::new(AttemptTimedOut { body }))
}

impl IdempotencyMiddleware {
    /// The call's key: the caller's, else the one chosen earlier in this call, else
    /// derived, else new.
    fn key(
        &self,
        req: &Request,
        extensions: &Extensions,
    ) -> Result<Option<String>, reqwest_middleware::Error> {
        let config = &self.config;
        if let Some(value) = req.headers().get(&config.header_name) {
            let key = value
                .to_str()
                .map_err(|_| refuse("the idempotency key is not visible ASCII"))?;
            return Ok(Some(key.to_owned()));
        }
        if let Some(CallKey(key)) = extensions.get::<CallKey>() {
            return Ok(Some(key.clone()));
        }
        let Some(derive) = &config.key_from else {
            return Ok(Some(uuid::Uuid::new_v4().to_string()));
        };
        let mut head = http::Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req
            .url()
            .as_str()
            .parse()
            .map_err(|_| refuse("the request's URL is not a valid URI"))?;
        *head.headers_mut() = req.headers().clone();
        let (parts, ()) = head.into_parts();
        let body = req
            .body()
            .and_then(reqwest::Body::as_bytes)
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        Ok(derive(&parts, &body))
    }

    /// Sends one attempt and judges its answer.
    async fn attempt(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> (reqwest_middleware::Result<Response>, AttemptResult, Verdict) {
        let sent = next.run(req, extensions);
        // The attempt's bound covers the answer and the part of a `409`'s body read with it.
        let deadline = self
            .config
            .attempt_timeout
            .map(|limit| tokio::time::Instant::now() + limit);
        let answered = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, sent).await {
                Ok(answered) => answered,
                Err(_) => {
                    let err = timed_out(false);
                    return (
                        Err(err),
                        AttemptResult::TimedOut,
                        Verdict::Retry { after: None },
                    );
                }
            },
            None => sent.await,
        };
        let response = match answered {
            Ok(response) => response,
            Err(err) => {
                let result = AttemptResult::TransportError(err.to_string());
                return (Err(err), result, Verdict::Retry { after: None });
            }
        };
        let status = response.status();
        let after = retry_after(response.headers(), std::time::SystemTime::now());
        let verdict = match retryable_status(status) {
            Retry::No => Verdict::Final,
            Retry::Yes => Verdict::Retry { after },
            Retry::IfInProgress => {
                // The body tells in progress from a conflict: read it, and hand the
                // caller a response that still has it (and its URL and extensions).
                let url = response.url().clone();
                let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
                let peeked = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, peek(body)).await,
                    None => Ok(peek(body).await),
                };
                let Ok(peeked) = peeked else {
                    let err = timed_out(true);
                    return (
                        Err(err),
                        AttemptResult::TimedOut,
                        Verdict::Retry { after: None },
                    );
                };
                let (read, body) = match peeked {
                    Ok(Peeked::Whole(read, trailers)) => {
                        let body = MaybeBuffered::<reqwest::Body>::buffered_with_trailers(
                            read.clone(),
                            trailers,
                        );
                        (read, reqwest::Body::wrap(body))
                    }
                    // Too long for a problem document: only a `Retry-After` says in
                    // progress.
                    Ok(Peeked::Longer(head, rest)) => {
                        let body = MaybeBuffered::resumed(head, rest);
                        (Bytes::new(), reqwest::Body::wrap(body))
                    }
                    Err(err) => {
                        let result = AttemptResult::TransportError(err.to_string());
                        return (Err(err.into()), result, Verdict::Retry { after: None });
                    }
                };
                let verdict = if in_progress(&parts.headers, &read) {
                    Verdict::Retry { after }
                } else {
                    Verdict::Final
                };
                let mut head = http::Response::builder()
                    .status(parts.status)
                    .version(parts.version);
                if let Some(extensions) = head.extensions_mut() {
                    *extensions = parts.extensions;
                }
                if let Some(headers) = head.headers_mut() {
                    *headers = parts.headers;
                }
                let rebuilt = match head.url(url).body(body) {
                    Ok(rebuilt) => Response::from(rebuilt),
                    Err(err) => {
                        let err = refuse(&format!("the 409 answer could not be rebuilt: {err}"));
                        return (Err(err), AttemptResult::Status(status), Verdict::Final);
                    }
                };
                return (Ok(rebuilt), AttemptResult::Status(status), verdict);
            }
        };
        (Ok(response), AttemptResult::Status(status), verdict)
    }
}

#[async_trait::async_trait]
impl Middleware for IdempotencyMiddleware {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if !self.config.methods.contains(req.method()) {
            return next.run(req, extensions).await;
        }
        // Called again within one call: an outer retrier is in charge of the attempts.
        let again = extensions.get::<CallKey>().is_some();
        let key = self.key(&req, extensions)?;
        if let Some(key) = &key {
            let value = HeaderValue::from_str(key)
                .map_err(|_| refuse("the idempotency key is not a valid header value"))?;
            req.headers_mut().insert(&self.config.header_name, value);
            extensions.insert(CallKey(key.clone()));
        }
        // A streaming body cannot be sent twice: such a call gets one attempt.
        let retrying = self.retries && !again && req.try_clone().is_some();
        let mut schedule = Schedule::new(&self.config, key.is_some() && retrying);
        let mut outcome = ClientOutcome {
            key,
            attempts: Vec::new(),
            replayed: false,
        };
        let mut waited = Duration::ZERO;
        let mut unsent = Some(req);
        loop {
            // Each attempt sends a copy while the call may retry; the last sends the
            // request itself.
            let Some(this) = (if retrying {
                unsent.as_ref().and_then(Request::try_clone)
            } else {
                unsent.take()
            }) else {
                return Err(refuse(
                    "the request could not be copied for another attempt",
                ));
            };
            let (ended, result, verdict) = self.attempt(this, extensions, next.clone()).await;
            tracing::debug!(attempt = outcome.attempts.len() + 1, result = ?result, "idempotent call attempt");
            outcome.attempts.push(Attempt { waited, result });
            match (ended, schedule.after(verdict)) {
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
        }
    }
}
