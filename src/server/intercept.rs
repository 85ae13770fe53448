//! The flow of an intercepted request: key, body, fingerprint, claim, then replay, refuse
//! or execute.

use std::{borrow::Cow, future::Future, sync::Arc, time::Duration};

use http::{Request, Response};
use tracing::Span;

use super::{
    body::{RequestBody, ResponseBody},
    bounds::{InBody, Inner, OutBody},
    buffer::buffer_request,
    claim::Claim,
    execute::execute,
    fingerprint::{self, Credentials},
    grpc::Protocol,
    idempotency_key::IdempotencyKey,
    json_body::Json,
    key::{self, KeyError},
    key_source::KeySource,
    outcome::Outcome,
    problem::Problem,
    record::replay,
    shared::Shared,
    store_retries::clean_up_lost_claim,
};
use crate::store::{
    Begin, Fingerprint, IdempotencyStore, LockToken, RecordKey, StoreError, StoreErrorKind,
};

/// Who claims the key: the token this layer minted, or the one an outer layer claimed
/// with (`nested`), so a layer on the same store recognises the outer claim as its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claimant {
    pub(crate) token: LockToken,
    pub(crate) nested: bool,
}

/// Takes an intercepted request from its key to its answer: a refusal, a replay, or the
/// inner service run under a claim. A gRPC call's key is read from its metadata (the key
/// header), never from its (protobuf) body, and its refusals are gRPC statuses.
// Not an `async fn` on purpose: see the body.
#[allow(clippy::manual_async_fn)]
pub(crate) fn intercept<S, St, ReqBody, ResBody>(
    mut inner: S,
    shared: Arc<Shared<St>>,
    req: Request<ReqBody>,
    claimant: Claimant,
    span: Span,
    protocol: Protocol,
) -> impl Future<Output = Result<Response<ResponseBody<ResBody>>, S::Error>>
where
    S: Inner<ReqBody, ResBody>,
    St: IdempotencyStore,
    ReqBody: InBody,
    ResBody: OutBody,
{
    // An `async` block, not an `async fn`: an `async fn` first moves its arguments out of
    // its future into locals of the same future.
    async move {
        let config = &*shared.config;
        let (parts, body) = req.into_parts();
        let key_source = match protocol {
            Protocol::Http => &config.key_source,
            Protocol::Grpc => &KeySource::Header,
        };
        // A header key is read before the body: a request without one is refused at once.
        let header_key = match key_source {
            KeySource::Header => match key::extract(&parts.headers, &config.header_name) {
                Ok(Some(key)) => Some(key),
                Ok(None) => return Ok(invalid_key(&shared, &span, protocol, KeyError::Missing)),
                Err(err) => return Ok(invalid_key(&shared, &span, protocol, err)),
            },
            _ => None,
        };

        let (body, trailers) =
            match buffer_request(body, &parts.headers, config.max_request_body).await {
                Ok(read) => read,
                Err(problem) => return Ok(shared.refuse(&span, protocol, problem)),
            };
        // An empty body holds no JSON (and no key): it is fingerprinted as it is.
        let json = if config.reads_json && protocol == Protocol::Http && !body.is_empty() {
            match Json::parse(&body) {
                Ok(json) => Some(json),
                Err(why) => return Ok(shared.refuse(&span, protocol, Problem::InvalidJson(why))),
            }
        } else {
            None
        };
        let found = match header_key {
            Some(key) => Ok(Some(Cow::Borrowed(key))),
            None => body_route_key(config, key_source, &parts, &body, json.as_ref()),
        };
        let key = match found {
            Ok(Some(key)) => key,
            // No key anywhere: as a request without the header.
            Ok(None) if config.require_key => {
                return Ok(invalid_key(&shared, &span, protocol, KeyError::Missing))
            }
            Ok(None) => {
                drop(json);
                let req =
                    Request::from_parts(parts, RequestBody::buffered_with_trailers(body, trailers));
                let response = inner.call(req).await?;
                return Ok(response.map(ResponseBody::streaming));
            }
            Err(err) => return Ok(invalid_key(&shared, &span, protocol, err)),
        };
        // The body as fingerprinted: its bytes, or its canonical JSON without the fields
        // left out.
        let canonical = match (&config.fingerprint_json, json) {
            (Some(ignored), Some(mut json)) => {
                for field in ignored {
                    field.remove(&mut json);
                }
                Some(json.canonical())
            }
            _ => None,
        };
        let fingerprinted = canonical.as_deref().unwrap_or(&body);
        let credentials = Credentials {
            headers: &config.fingerprint_headers,
            cookies: config.fingerprint_cookies.as_deref(),
            authority: config.fingerprint_authority,
            anonymous: &shared.anonymous_caller,
        };
        let fingerprint = fingerprint::compute(
            &parts.method,
            protocol == Protocol::Grpc,
            &parts.uri,
            &parts.headers,
            credentials,
            fingerprinted,
        );
        let scope = config
            .scope
            .as_ref()
            .and_then(|scope| scope(&parts))
            .unwrap_or_default();
        let record_key = RecordKey::new(&config.namespace, &scope, &key);

        let token = claimant.token;
        let begun = {
            // Until the store answers, a claim may have landed without our knowing: if the
            // answer is an error, or never comes (the client went away), release it.
            let cleanup = LostClaim::arm(&shared, &record_key, claimant);
            let begun = claim(&shared, &record_key, &fingerprint, &token).await;
            if begun.is_ok() {
                cleanup.disarm();
            }
            begun
        };
        match begun {
            // An outer layer on this store holds the claim for this very request: it records.
            Ok(Begin::OwnClaim) if claimant.nested => {
                let req =
                    Request::from_parts(parts, RequestBody::buffered_with_trailers(body, trailers));
                let response = inner.call(req).await?;
                Ok(response.map(ResponseBody::streaming))
            }
            // Our own claim (a repeated begin whose first reply was lost counts too).
            Ok(Begin::Claimed | Begin::OwnClaim) => {
                let mut parts = parts;
                let handle = IdempotencyKey::new(
                    record_key.clone(),
                    Some((token, Arc::clone(&shared.config))),
                );
                // A nested layer (on another store) leaves the outer layer's key in place: the
                // handler completes in the outermost layer's store, and this layer records
                // in its own as usual. Layers inside this one claim with its token.
                let seen = match parts.extensions.get::<IdempotencyKey>() {
                    Some(outer) if outer.guard() == Some(token) => None,
                    Some(outer) => Some(outer.guarded_by(Some(token))),
                    None => Some(handle.clone()),
                };
                if let Some(seen) = seen {
                    parts.extensions.insert(seen);
                }
                let req =
                    Request::from_parts(parts, RequestBody::buffered_with_trailers(body, trailers));
                let claim = Claim::new(shared, record_key, token, span, protocol);
                execute(inner, req, claim, handle).await
            }
            Ok(Begin::Completed(mut stored)) => Ok(match stored.body.take() {
                Some(body) => shared.finish(
                    &span,
                    Outcome::Replayed,
                    replay(stored, body, &shared.config.replay_headers),
                ),
                None => shared.refuse(
                    &span,
                    protocol,
                    Problem::ResponseNotStored {
                        original: stored.status,
                    },
                ),
            }),
            Ok(Begin::InProgress) => Ok(shared.refuse(&span, protocol, Problem::InProgress)),
            // The same request under other credentials: a refreshed token, a rotated cookie, or
            // another caller. Never told to use a new key, which would run it twice.
            Ok(Begin::Conflict(stored)) if stored.request() == fingerprint.request() => Ok(shared
                .refuse(
                    &span,
                    protocol,
                    Problem::OtherCredentials {
                        status: config.conflict_status.status(),
                    },
                )),
            Ok(Begin::Conflict(_)) => Ok(shared.refuse(
                &span,
                protocol,
                Problem::Conflict {
                    status: config.conflict_status.status(),
                },
            )),
            Err(err) if err.kind() == StoreErrorKind::Corrupt => {
                // Not an outage: retrying will not help, and the record may be a completed
                // one, so the request must not run either.
                tracing::error!(parent: &span, error = %err, key_hash = %fingerprint::key_hash(&record_key), "the store holds a record it cannot read; answering 500");
                Ok(shared.refuse(&span, protocol, Problem::RecordUnreadable))
            }
            // Fail open on an outage only: a full store is not one, and running every new key
            // unprotected under a flood would let their retries run again.
            Err(err)
                if config.fail_open
                    && matches!(
                        err.kind(),
                        StoreErrorKind::Unavailable | StoreErrorKind::Timeout
                    ) =>
            {
                tracing::warn!(parent: &span, error = %err, "idempotency store failed; running the request unprotected (fail open)");
                let mut parts = parts;
                // The handler still gets its key, with no claim to complete (unless an outer
                // layer's claim guards it). Inner layers must not claim with the token whose
                // claim is being cleaned up: they mint their own.
                let handle = match parts.extensions.get::<IdempotencyKey>() {
                    Some(outer) => outer.guarded_by(None),
                    None => IdempotencyKey::new(record_key.clone(), None),
                };
                parts.extensions.insert(handle);
                let req =
                    Request::from_parts(parts, RequestBody::buffered_with_trailers(body, trailers));
                let response = inner.call(req).await?;
                Ok(shared.finish(
                    &span,
                    Outcome::StoreError,
                    response.map(ResponseBody::streaming),
                ))
            }
            Err(err) => {
                tracing::error!(parent: &span, error = %err, "idempotency store failed; answering 503");
                Ok(shared.refuse(&span, protocol, Problem::StoreUnavailable))
            }
        }
    }
}

/// The key of a route that reads it from the body: a string field of its `json`, or
/// what the route's function returns, validated as a header key is; else the header's
/// after all (a client that sends keys the usual way is never run unprotected); `None`
/// when there is none anywhere.
fn body_route_key<'a>(
    config: &super::config::Config,
    key_source: &KeySource,
    parts: &'a http::request::Parts,
    body: &bytes::Bytes,
    json: Option<&Json>,
) -> Result<Option<Cow<'a, str>>, KeyError> {
    let raw = match key_source {
        KeySource::Header => None,
        KeySource::Json(field) => match json.and_then(|json| field.get(json)) {
            None => None,
            Some(Json::Literal(literal)) if literal == "null" => None,
            Some(Json::String(key)) => Some(key.clone()),
            Some(_) => return Err(KeyError::NotAString),
        },
        KeySource::Request(read) => read(parts, body),
    };
    match raw {
        Some(raw) => key::validate(raw.as_bytes()).map(|key| Some(Cow::Owned(key.to_owned()))),
        None => key::extract(&parts.headers, &config.header_name).map(|key| key.map(Cow::Borrowed)),
    }
}

/// The answer to a request whose key is missing or malformed, naming where the layer
/// reads keys.
fn invalid_key<St, B: http_body::Body>(
    shared: &Shared<St>,
    span: &Span,
    protocol: Protocol,
    err: KeyError,
) -> Response<ResponseBody<B>> {
    let place = match protocol {
        Protocol::Http => Arc::clone(&shared.config.key_place),
        Protocol::Grpc => Arc::from(format!("the {} metadata", shared.config.header_name)),
    };
    shared.refuse(span, protocol, Problem::InvalidKey(err, Some(place)))
}

/// A claim that failed may still have landed (the store ran it, its reply was lost, or the
/// client went away while it was on the wire): dropped armed, this releases it in the
/// background, so that the client's retry runs rather than finds its own dead claim in
/// flight for a whole lease. Never armed when nested: the token is the outer layer's.
struct LostClaim<'a, St: IdempotencyStore> {
    armed: Option<(&'a Arc<Shared<St>>, &'a RecordKey, LockToken)>,
}

impl<'a, St: IdempotencyStore> LostClaim<'a, St> {
    fn arm(shared: &'a Arc<Shared<St>>, key: &'a RecordKey, claimant: Claimant) -> Self {
        Self {
            armed: (!claimant.nested).then_some((shared, key, claimant.token)),
        }
    }

    fn disarm(mut self) {
        self.armed = None;
    }
}

impl<St: IdempotencyStore> Drop for LostClaim<'_, St> {
    fn drop(&mut self) {
        if let Some((shared, key, token)) = self.armed.take() {
            clean_up_lost_claim(Arc::clone(shared), key.clone(), token);
        }
    }
}

/// Claims the key; in wait mode, polls an in-flight key until it completes, its lease
/// frees it, or the wait bound passes.
async fn claim<St: IdempotencyStore>(
    shared: &Shared<St>,
    key: &RecordKey,
    fingerprint: &Fingerprint,
    token: &LockToken,
) -> Result<Begin, StoreError> {
    let config = &*shared.config;
    let deadline = config
        .wait_for_in_flight
        .map(|wait| tokio::time::Instant::now() + wait);
    let mut pause = Duration::from_millis(5);
    loop {
        let begun = shared
            .timed(
                "begin",
                shared.store.begin(key, fingerprint, token, config.lease),
            )
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
