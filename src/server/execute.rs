//! Running the inner service under a claim, then deciding what becomes of the key: its
//! response recorded, the failure recorded, or the key released.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc};

use futures_util::FutureExt;
use http::{Request, Response};
use tracing::Span;

use super::{
    body::{RequestBody, ResponseBody},
    bounds::{Inner, OutBody},
    buffer::{read_response, ReadResponse},
    claim::Claim,
    detach::Detaching,
    grpc::{self, Protocol},
    idempotency_key::{Completed, IdempotencyKey},
    not_executed::NotExecuted,
    outcome::Outcome,
};
use crate::store::IdempotencyStore;

/// Runs the request `claim` holds to its end and records the outcome. With
/// `run_to_completion`, a client that disconnects cancels only its wait: the work goes on,
/// on a task of its own, to finish the write and record it.
///
/// Not an `async fn`: its arguments go straight into the work's box, not first into a
/// future of its own (each hand-over of the request is a copy).
pub(crate) fn execute<S, St, ReqBody, ResBody>(
    inner: S,
    req: Request<RequestBody<ReqBody>>,
    claim: Claim<St>,
    handle: IdempotencyKey,
) -> Detaching<impl Future<Output = Result<Response<ResponseBody<ResBody>>, S::Error>> + Send>
where
    S: Inner<ReqBody, ResBody>,
    St: IdempotencyStore,
    ReqBody: Send + 'static,
    ResBody: OutBody,
{
    let run_to_completion = claim.shared().config.run_to_completion;
    let claim = claim.watching(handle.clone());
    // Boxed here, not held inline: the work is the largest part of the request's future,
    // and inline it would be copied each time the future moves (into the layer's box).
    // (The box is made first and the future written into it; boxed after, the future
    // would be built on the stack and copied in whole.) Polled in place, the work runs in
    // the caller's span; detached, its task runs in that same span.
    let work = Box::into_pin(Box::write(
        Box::new_uninit(),
        run_and_record(inner, req, claim, handle),
    ));
    Detaching::new(work, run_to_completion.then(Span::current))
}

/// What the inner service gave, up to the point the layer decides.
enum Ran<B: http_body::Body> {
    /// Nothing to record: released and passed on as it streams, with this outcome.
    Release(Outcome, Response<B>),
    /// A gRPC answer read whole, whose trailers say "not done": released, then given as
    /// it was read.
    ReleaseRead(http::response::Parts, bytes::Bytes, http::HeaderMap),
    /// The handler completed the record in its own transaction, and committed.
    Committed(http::Extensions),
    Read(http::response::Parts, ReadResponse<B>),
}

/// Whether the inner service's response says "not done, release": a transient status (or,
/// to a gRPC call, a transient status in a trailers-only answer's headers), or the answer
/// of a nested idempotency layer on another store that did not run the handler (an
/// in-progress `409` there must not be recorded here and replayed after the request
/// finished; a replay there is that store's to give).
fn released<B>(
    config: &super::config::Config,
    protocol: Protocol,
    response: &Response<B>,
) -> Option<Outcome> {
    if NotExecuted::is_marked(response) {
        return Some(Outcome::NotExecuted);
    }
    match response.extensions().get::<Outcome>() {
        // The handler ran: under the nested layer's claim, after its failure, or
        // unprotected by a nested fail-open layer (its 503 refusal is transient anyway).
        Some(Outcome::Fresh | Outcome::HandlerFailed | Outcome::StoreError) | None => {}
        Some(&nested) => return Some(nested),
    }
    let transient = &config.transient_statuses;
    (transient.contains(&response.status())
        || protocol == Protocol::Grpc && grpc::is_transient(transient, response.headers()))
    .then_some(Outcome::Released)
}

// Not an `async fn` on purpose: see the body.
#[allow(clippy::manual_async_fn)]
fn run_and_record<S, St, ReqBody, ResBody>(
    mut inner: S,
    req: Request<RequestBody<ReqBody>>,
    mut claim: Claim<St>,
    handle: IdempotencyKey,
) -> impl Future<Output = Result<Response<ResponseBody<ResBody>>, S::Error>>
where
    S: Inner<ReqBody, ResBody>,
    St: IdempotencyStore,
    ResBody: OutBody,
{
    // An `async` block, not an `async fn`: an `async fn` first moves its arguments out of
    // its future into locals of the same future (the request twice over).
    async move {
        let config = Arc::clone(&claim.shared().config);
        let protocol = claim.protocol();
        let run = async {
            let response = inner.call(req).await?;
            // A committed completion is what the store holds: it wins over the answer.
            if handle.completed().is_some() {
                return Ok(Ran::Committed(response.into_parts().0.extensions));
            }
            if let Some(outcome) = released(&config, protocol, &response) {
                return Ok(Ran::Release(outcome, response));
            }
            let (parts, body) = response.into_parts();
            let read = read_response(body, config.max_response_body).await;
            // A gRPC call's outcome is in the trailers after its message.
            match read {
                ReadResponse::Complete {
                    body,
                    trailers: Some(trailers),
                } if protocol == Protocol::Grpc
                    && grpc::is_transient(&config.transient_statuses, &trailers) =>
                {
                    Ok(Ran::ReleaseRead(parts, body, trailers))
                }
                read => Ok(Ran::Read(parts, read)),
            }
        };
        // A panic is caught to settle the claim (the write may have happened), then resumed.
        let run = std::pin::pin!(AssertUnwindSafe(run).catch_unwind());
        let ran = claim.renewing(run).await;
        // The handler committed the record, then failed: the record stands.
        if let (Some(_), Err(_) | Ok(Err(_))) = (handle.completed(), &ran) {
            claim.settle_committed();
        }
        let (parts, read) = match ran {
            Err(panic) if claim.is_settled() => std::panic::resume_unwind(panic),
            Ok(Err(err)) if claim.is_settled() => return Err(err),
            Err(panic) => {
                let outcome = claim.fail().await;
                claim.note(outcome);
                std::panic::resume_unwind(panic);
            }
            Ok(Err(err)) => {
                let outcome = claim.fail().await;
                claim.note(outcome);
                return Err(err);
            }
            Ok(Ok(Ran::Release(outcome, response))) => {
                claim.release().await;
                return Ok(claim.finish(outcome, response.map(ResponseBody::streaming)));
            }
            Ok(Ok(Ran::ReleaseRead(parts, body, trailers))) => {
                claim.release().await;
                let body = ResponseBody::held(body, None, None, Some(trailers));
                return Ok(claim.finish(Outcome::Released, Response::from_parts(parts, body)));
            }
            Ok(Ok(Ran::Committed(extensions))) => {
                claim.settle_committed();
                let completed = handle.completed().expect("committed").clone();
                return Ok(claim.finish(Outcome::Fresh, answer(completed, extensions)));
            }
            Ok(Ok(Ran::Read(parts, read))) => (parts, read),
        };
        // The handler has answered: from here on, nothing may release the key.
        claim.mark_ran();
        let mut parts = parts;
        let body = match read {
            ReadResponse::Complete { body, trailers } => {
                // The body and trailers given are those given back: never empty in their place.
                let (body, trailers) = claim.complete_with(&mut parts, Some(body), trailers).await;
                let body = body.unwrap_or_default();
                match trailers {
                    None => ResponseBody::full(body),
                    trailers => ResponseBody::held(body, None, None, trailers),
                }
            }
            ReadResponse::Overflow { head, rest } => {
                // Delivered once, as it streams; a retry learns it ran, and does not run again.
                claim.complete_with(&mut parts, None, None).await;
                ResponseBody::held(head, Some(rest), None, None)
            }
            ReadResponse::Failed { head, error } => {
                // The handler answered with a status, so it ran: recorded without the body,
                // never released. The client gets what was read, then the error.
                claim.complete_with(&mut parts, None, None).await;
                ResponseBody::held(head, None, Some(error), None)
            }
        };
        Ok(claim.finish(Outcome::Fresh, Response::from_parts(parts, body)))
    }
}

/// The answer to a request whose handler committed `completed` as its record: exactly what
/// was recorded, with the extensions of the handler's own answer.
fn answer<B: http_body::Body>(
    completed: Completed,
    mut extensions: http::Extensions,
) -> Response<ResponseBody<B>> {
    // It committed: a mark saying otherwise must not reach an outer layer.
    extensions.remove::<NotExecuted>();
    let body = match completed.trailers {
        None => ResponseBody::full(completed.body),
        trailers => ResponseBody::held(completed.body, None, None, trailers),
    };
    let mut response = Response::new(body);
    *response.status_mut() = completed.status;
    *response.headers_mut() = completed.headers;
    *response.extensions_mut() = extensions;
    response
}
