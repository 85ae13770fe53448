//! Running the inner service under a claim: lease renewal while it runs, then recording
//! its response (or releasing the key), even if the client has gone away.

use std::{collections::VecDeque, future::Future, pin::Pin, sync::Arc};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;
use tracing::{Instrument, Span};

use crate::{
    body::{RequestBody, ResponseBody},
    intercept::{timed, Shared},
    outcome::Outcome,
    replay::to_record,
    store::{IdempotencyStore, LockToken, RecordKey, StoreErrorKind, StoredResponse},
};

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
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let run_to_completion = shared.config.run_to_completion;
    let claim = Claim {
        shared,
        key,
        token,
        span,
        settled: false,
    };
    let work = run_and_record(inner, req, claim);
    if run_to_completion {
        Detaching::new(work.in_current_span()).await
    } else {
        work.await
    }
}

/// Polls the work in place (no task spawned on the common path) and, if dropped before it
/// finishes (hyper drops the response future when the client goes away), hands the rest of
/// it to a task of its own.
struct Detaching<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    work: Option<Pin<Box<F>>>,
}

impl<F> Detaching<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    fn new(work: F) -> Self {
        Self {
            work: Some(Box::pin(work)),
        }
    }
}

impl<F> Future for Detaching<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // Taken out while polled: if the work panics, it is dropped here (releasing its
        // claim) rather than detached half-unwound.
        let mut work = self.work.take().expect("polled after completion");
        let poll = work.as_mut().poll(cx);
        if poll.is_pending() {
            self.work = Some(work);
        }
        poll
    }
}

impl<F> Drop for Detaching<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        // Without a runtime the work can only be dropped, which releases its claim.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            drop(work.await);
        });
    }
}

/// The claim this request holds. Settled by `complete` or `release`; dropped unsettled
/// (a panic in the inner service, or a cancelled request without `run_to_completion`),
/// it releases the key in the background so that a retry can run.
struct Claim<St: IdempotencyStore> {
    shared: Arc<Shared<St>>,
    key: RecordKey,
    token: LockToken,
    span: Span,
    settled: bool,
}

impl<St: IdempotencyStore> Claim<St> {
    async fn complete(&mut self, record: StoredResponse) {
        let config = &self.shared.config;
        let stored = timed(
            config,
            self.shared
                .store
                .complete(&self.key, &self.token, record, config.ttl),
        )
        .await;
        self.settled = true;
        if let Err(err) = stored {
            tracing::error!(parent: &self.span, error = %err, "could not record the response; the client still gets it");
            self.shared.metrics.add_record_failure();
        }
    }

    async fn release(&mut self) {
        let released = timed(
            &self.shared.config,
            self.shared.store.release(&self.key, &self.token),
        )
        .await;
        self.settled = true;
        if let Err(err) = released {
            tracing::warn!(parent: &self.span, error = %err, "could not release the key; it frees when its lease expires");
            self.shared.metrics.add_record_failure();
        }
    }

    fn finish<B>(&self, outcome: Outcome, response: Response<B>) -> Response<B> {
        self.shared.finish(&self.span, outcome, response)
    }

    /// Runs `work` while renewing the lease every third of a lease period.
    async fn renewing<F: Future>(&self, work: F) -> F::Output {
        let config = &self.shared.config;
        let renew = async {
            loop {
                tokio::time::sleep(config.lease / 3).await;
                let renewed = timed(
                    config,
                    self.shared
                        .store
                        .renew(&self.key, &self.token, config.lease),
                )
                .await;
                match renewed {
                    Ok(()) => {}
                    Err(err) if err.kind() == StoreErrorKind::Fenced => {
                        tracing::warn!(parent: &self.span, "lease lost while the request ran; its result will not be recorded");
                        return std::future::pending().await;
                    }
                    Err(err) => {
                        tracing::warn!(parent: &self.span, error = %err, "could not renew the lease; trying again");
                    }
                }
            }
        };
        tokio::select! {
            biased;
            output = work => output,
            never = renew => never,
        }
    }
}

impl<St: IdempotencyStore> Drop for Claim<St> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.shared.record(&self.span, Outcome::Released);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let (key, token) = (self.key.clone(), self.token);
        runtime.spawn(async move {
            let _ = timed(&shared.config, shared.store.release(&key, &token)).await;
        });
    }
}

/// What the inner service gave, up to the point the layer decides.
enum Ran<B: Body> {
    /// A transient status: released and passed on as it streams.
    Transient(Response<B>),
    Read(http::response::Parts, ReadBody<B>),
}

async fn run_and_record<S, St, ReqBody, ResBody>(
    mut inner: S,
    req: Request<RequestBody<ReqBody>>,
    mut claim: Claim<St>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    St: IdempotencyStore,
    ResBody: Body<Data = Bytes>,
{
    let config = Arc::clone(&claim.shared.config);
    let ran = claim
        .renewing(async {
            let response = inner.call(req).await?;
            if config.transient_statuses.contains(&response.status()) {
                return Ok(Ran::Transient(response));
            }
            let (parts, body) = response.into_parts();
            Ok(Ran::Read(
                parts,
                read_body(body, config.max_response_body).await,
            ))
        })
        .await;
    let (parts, read) = match ran {
        Err(err) => {
            claim.release().await;
            claim.shared.record(&claim.span, Outcome::Released);
            return Err(err);
        }
        Ok(Ran::Transient(response)) => {
            claim.release().await;
            return Ok(claim.finish(Outcome::Released, response.map(ResponseBody::streaming)));
        }
        Ok(Ran::Read(parts, read)) => (parts, read),
    };
    let (outcome, body) = match read {
        ReadBody::Complete { body, trailers } => {
            let record = to_record(&parts, Some(body.clone()), &config.unstored_headers);
            claim.complete(record).await;
            let body = match trailers {
                None => ResponseBody::full(body),
                trailers => ResponseBody::held(VecDeque::from([body]), None, None, trailers),
            };
            (Outcome::Fresh, body)
        }
        ReadBody::Overflow { head, rest } => {
            // Delivered once, as it streams; a retry learns it ran, and does not run again.
            claim
                .complete(to_record(&parts, None, &config.unstored_headers))
                .await;
            (
                Outcome::Fresh,
                ResponseBody::held(head, Some(rest), None, None),
            )
        }
        ReadBody::Failed { head, error } => {
            claim.release().await;
            (
                Outcome::Released,
                ResponseBody::held(head, None, Some(error), None),
            )
        }
    };
    Ok(claim.finish(outcome, Response::from_parts(parts, body)))
}

/// A response body read up to the recording limit.
enum ReadBody<B: Body> {
    Complete {
        body: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Over the limit: what was read, and the rest still to stream.
    Overflow {
        head: VecDeque<Bytes>,
        rest: Pin<Box<B>>,
    },
    /// The body failed: what was read before, and the error.
    Failed {
        head: VecDeque<Bytes>,
        error: B::Error,
    },
}

async fn read_body<B: Body<Data = Bytes>>(body: B, limit: usize) -> ReadBody<B> {
    let mut body = Box::pin(body);
    let mut head = VecDeque::new();
    let mut len = 0;
    loop {
        match body.frame().await {
            None => {
                return ReadBody::Complete {
                    body: concat(head),
                    trailers: None,
                }
            }
            Some(Err(error)) => return ReadBody::Failed { head, error },
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    head.push_back(data);
                    if len > limit {
                        return ReadBody::Overflow { head, rest: body };
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return ReadBody::Complete {
                            body: concat(head),
                            trailers: Some(trailers),
                        };
                    }
                }
            },
        }
    }
}

fn concat(mut chunks: VecDeque<Bytes>) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop_front().unwrap_or_default();
    }
    let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        all.extend_from_slice(&chunk);
    }
    all.freeze()
}
