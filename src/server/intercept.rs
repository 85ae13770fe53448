//! The flow of an intercepted request: key, body, fingerprint, claim, then replay, refuse
//! or execute.

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use tracing::Span;

use super::{
    body::{RequestBody, ResponseBody},
    bounds::{InBody, Inner, OutBody},
    buffer::buffer_request,
    execute::execute,
    fingerprint,
    key::{self, KeyError},
    outcome::Outcome,
    problem::Problem,
    record::replay,
    shared::Shared,
};
use crate::store::{Begin, Fingerprint, IdempotencyStore, RecordKey, StoreError};

/// Takes an intercepted request from its key to its answer: a refusal, a replay, or the
/// inner service run under a claim.
pub(crate) async fn intercept<S, St, ReqBody, ResBody>(
    mut inner: S,
    shared: Arc<Shared<St>>,
    req: Request<ReqBody>,
    span: Span,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Inner<ReqBody, ResBody>,
    St: IdempotencyStore,
    ReqBody: InBody,
    ResBody: OutBody,
{
    let config = &*shared.config;
    let (parts, body) = req.into_parts();
    let key = match key::extract(&parts.headers, &config.header_name) {
        Ok(Some(key)) => key.to_owned(),
        Ok(None) => return Ok(shared.refuse(&span, Problem::InvalidKey(KeyError::Missing))),
        Err(err) => return Ok(shared.refuse(&span, Problem::InvalidKey(err))),
    };

    let body = match buffer_request(body, &parts.headers, config.max_request_body).await {
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
                status: config.conflict_status.status(),
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

/// Claims the key; in wait mode, polls an in-flight key until it completes, its lease
/// frees it, or the wait bound passes.
async fn claim<St: IdempotencyStore>(
    shared: &Shared<St>,
    key: &RecordKey,
    fingerprint: &Fingerprint,
) -> Result<Begin, StoreError> {
    let config = &*shared.config;
    let deadline = config
        .wait_for_in_flight
        .map(|wait| tokio::time::Instant::now() + wait);
    let mut pause = Duration::from_millis(5);
    loop {
        let begun = shared
            .timed(shared.store.begin(key, fingerprint, config.lease))
            .await?;
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
