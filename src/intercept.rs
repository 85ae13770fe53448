//! The flow of an intercepted request: key, body, fingerprint, claim, then replay, refuse
//! or execute.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;
use tracing::Span;

use crate::{
    body::{RequestBody, ResponseBody},
    execute::execute,
    fingerprint,
    key::{self, KeyError},
    layer::Config,
    outcome::{Metrics, Outcome},
    problem::Problem,
    replay::replay,
    store::{Begin, IdempotencyStore, RecordKey, StoreError, StoreErrorKind},
};

/// What every service of one layer shares.
pub(crate) struct Shared<St> {
    pub(crate) store: Arc<St>,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Metrics,
}

impl<St> Shared<St> {
    /// Counts `outcome` and records it on the request's span.
    pub(crate) fn record(&self, span: &Span, outcome: Outcome) {
        span.record("outcome", outcome.as_str());
        self.metrics.add(outcome);
    }

    /// Marks `response` with `outcome`: extensions, span, counters.
    pub(crate) fn finish<B>(
        &self,
        span: &Span,
        outcome: Outcome,
        mut response: Response<B>,
    ) -> Response<B> {
        self.record(span, outcome);
        response.extensions_mut().insert(outcome);
        response
    }

    fn refuse<B: Body>(&self, span: &Span, problem: Problem) -> Response<ResponseBody<B>> {
        tracing::debug!(parent: span, ?problem, "refused");
        let outcome = problem.outcome();
        self.finish(
            span,
            outcome,
            problem.into_response().map(ResponseBody::full),
        )
    }
}

/// Bounds a store call by the configured timeout.
pub(crate) async fn timed<T>(
    config: &Config,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(config.store_timeout, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::from_kind(StoreErrorKind::Timeout)))
}

pub(crate) async fn intercept<S, St, ReqBody, ResBody>(
    mut inner: S,
    shared: Arc<Shared<St>>,
    req: Request<ReqBody>,
    span: Span,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let config = &*shared.config;
    let (parts, body) = req.into_parts();
    let key = match key::extract(&parts.headers, &config.header_name) {
        Ok(Some(key)) => key.to_owned(),
        Ok(None) => return Ok(shared.refuse(&span, Problem::InvalidKey(KeyError::Missing))),
        Err(err) => return Ok(shared.refuse(&span, Problem::InvalidKey(err))),
    };

    let body = match read_body(body, &parts.headers, config.max_request_body).await {
        Ok(body) => body,
        Err(problem) => return Ok(shared.refuse(&span, problem)),
    };
    let fingerprint = fingerprint::compute(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &config.fingerprint_headers,
        &body,
    );
    let scope = config
        .scope
        .as_ref()
        .and_then(|scope| scope(&parts))
        .unwrap_or_default();
    let record_key = RecordKey::new(&config.namespace, &scope, &key);

    match claim(&shared, &record_key, &fingerprint).await {
        Ok(Begin::Claimed(token)) => {
            let req = Request::from_parts(parts, RequestBody::buffered(body));
            execute(inner, shared, req, record_key, token, span).await
        }
        Ok(Begin::Completed(mut stored)) => Ok(match stored.body.take() {
            Some(body) => shared.finish(&span, Outcome::Replayed, replay(stored, body)),
            None => shared.refuse(
                &span,
                Problem::ResponseNotStored {
                    original: stored.status,
                },
            ),
        }),
        Ok(Begin::InProgress) => Ok(shared.refuse(&span, Problem::InProgress)),
        Ok(Begin::Conflict) => Ok(shared.refuse(
            &span,
            Problem::Conflict {
                status: config.conflict_status,
            },
        )),
        Err(err) if config.fail_open => {
            tracing::warn!(parent: &span, error = %err, "idempotency store failed; running the request unprotected (fail open)");
            let req = Request::from_parts(parts, RequestBody::buffered(body));
            let response = inner.call(req).await?;
            Ok(shared.finish(
                &span,
                Outcome::StoreError,
                response.map(ResponseBody::streaming),
            ))
        }
        Err(err) => {
            tracing::error!(parent: &span, error = %err, "idempotency store failed; answering 503");
            Ok(shared.refuse(&span, Problem::StoreUnavailable))
        }
    }
}

/// Buffers the request body up to `limit` bytes. A body of one chunk (the common case)
/// is kept as it is, without a copy.
async fn read_body<B>(body: B, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, Problem>
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
    let mut first = Bytes::new();
    let mut more: Option<BytesMut> = None;
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| Problem::BodyUnreadable)?.into_data() else {
            continue; // trailers are not part of the fingerprint
        };
        len += data.len();
        if len > limit {
            return Err(Problem::BodyTooLarge { limit });
        }
        match &mut more {
            None if first.is_empty() => first = data,
            Some(buf) => buf.extend_from_slice(&data),
            None => {
                let mut buf = BytesMut::with_capacity(len.max(2 * first.len()));
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                more = Some(buf);
            }
        }
    }
    Ok(more.map_or(first, BytesMut::freeze))
}

/// Claims the key; in wait mode, polls an in-flight key until it completes, its lease
/// frees it, or the wait bound passes.
async fn claim<St: IdempotencyStore>(
    shared: &Shared<St>,
    key: &RecordKey,
    fingerprint: &crate::store::Fingerprint,
) -> Result<Begin, StoreError> {
    let config = &*shared.config;
    let deadline = config
        .wait_for_in_flight
        .map(|wait| tokio::time::Instant::now() + wait);
    let mut pause = Duration::from_millis(5);
    loop {
        let begun = timed(config, shared.store.begin(key, fingerprint, config.lease)).await?;
        match (begun, deadline) {
            (Begin::InProgress, Some(deadline))
                if tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            (begun, _) => return Ok(begun),
        }
    }
}
