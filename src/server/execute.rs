//! Running the inner service under a claim, then deciding what becomes of the key: its
//! response recorded, or the key released.

use std::sync::Arc;

use http::{Request, Response};
use tracing::{Instrument, Span};

use super::{
    body::{RequestBody, ResponseBody},
    bounds::{Inner, OutBody},
    buffer::{read_response, ReadResponse},
    claim::Claim,
    detach::Detaching,
    outcome::Outcome,
    record::to_record,
    shared::Shared,
};
use crate::store::{IdempotencyStore, LockToken, RecordKey};

/// Runs the claimed request to its end and records the outcome. With `run_to_completion`,
/// a client that disconnects cancels only its wait: the work goes on, on a task of its
/// own, to finish the write and record it.
pub(crate) async fn execute<S, St, ReqBody, ResBody>(
    inner: S,
    shared: Arc<Shared<St>>,
    req: Request<RequestBody<ReqBody>>,
    key: RecordKey,
    token: LockToken,
    span: Span,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Inner<ReqBody, ResBody>,
    St: IdempotencyStore,
    ReqBody: Send + 'static,
    ResBody: OutBody,
{
    let run_to_completion = shared.config.run_to_completion;
    let work = run_and_record(inner, req, Claim::new(shared, key, token, span));
    if run_to_completion {
        Detaching::new(work.in_current_span()).await
    } else {
        work.await
    }
}

/// What the inner service gave, up to the point the layer decides.
enum Ran<B: http_body::Body> {
    /// A transient status: released and passed on as it streams.
    Transient(Response<B>),
    Read(http::response::Parts, ReadResponse<B>),
}

async fn run_and_record<S, St, ReqBody, ResBody>(
    mut inner: S,
    req: Request<RequestBody<ReqBody>>,
    mut claim: Claim<St>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Inner<ReqBody, ResBody>,
    St: IdempotencyStore,
    ResBody: OutBody,
{
    let config = Arc::clone(&claim.shared().config);
    let ran = claim
        .renewing(async {
            let response = inner.call(req).await?;
            if config.transient_statuses.contains(&response.status()) {
                return Ok(Ran::Transient(response));
            }
            let (parts, body) = response.into_parts();
            let read = read_response(body, config.max_response_body).await;
            Ok(Ran::Read(parts, read))
        })
        .await;
    let (parts, read) = match ran {
        Err(err) => {
            claim.release().await;
            claim.shared().record(claim.span(), Outcome::Released);
            return Err(err);
        }
        Ok(Ran::Transient(response)) => {
            claim.release().await;
            return Ok(claim.finish(Outcome::Released, response.map(ResponseBody::streaming)));
        }
        Ok(Ran::Read(parts, read)) => (parts, read),
    };
    let (outcome, body) = match read {
        ReadResponse::Complete { body, trailers } => {
            let record = to_record(&parts, Some(body.clone()), &config.unstored_headers);
            claim.complete(record).await;
            let body = match trailers {
                None => ResponseBody::full(body),
                trailers => ResponseBody::held(body, None, None, trailers),
            };
            (Outcome::Fresh, body)
        }
        ReadResponse::Overflow { head, rest } => {
            // Delivered once, as it streams; a retry learns it ran, and does not run again.
            claim
                .complete(to_record(&parts, None, &config.unstored_headers))
                .await;
            (
                Outcome::Fresh,
                ResponseBody::held(head, Some(rest), None, None),
            )
        }
        ReadResponse::Failed { head, error } => {
            claim.release().await;
            (
                Outcome::Released,
                ResponseBody::held(head, None, Some(error), None),
            )
        }
    };
    Ok(claim.finish(outcome, Response::from_parts(parts, body)))
}
