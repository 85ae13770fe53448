//! [`Claim`]: the guard of a claimed key, from the claim to its settlement. It renews the
//! lease while the work runs, and settles the record once: completed with a response
//! (retried in the background if the store blips), or released so that a retry runs
//! afresh. Dropped unsettled, it releases the key.

use std::{future::Future, pin::Pin, sync::Arc};

use http::{response::Parts, Response};
use tracing::Span;

use super::{
    choices::HandlerFailure,
    grpc::Protocol,
    idempotency_key::IdempotencyKey,
    outcome::Outcome,
    problem::Problem,
    record::{advertise_expiry, give_back, lend, to_record, GivenBack},
    shared::Shared,
    store_retries::{release_in_background, retry_until, Until, FIRST_PAUSE, MAX_PAUSE},
};
use crate::{
    store::{
        IdempotencyStore, LockToken, RecordKey, RecordState, StoreError, StoreErrorKind,
        StoredResponse,
    },
    telemetry::emit,
};

/// The claim this request holds. Settled by `complete`, `fail` or `release`; dropped
/// unsettled (a cancelled request without `run_to_completion`), it releases the key in
/// the background so that a retry can run.
pub(crate) struct Claim<St: IdempotencyStore> {
    shared: Arc<Shared<St>>,
    key: RecordKey,
    token: LockToken,
    span: Span,
    /// How the request speaks: the answer recorded for a failed handler is in its terms.
    protocol: Protocol,
    settled: bool,
    /// The handler has run to its end: never release on drop.
    ran: bool,
    /// The handler's key, through which it may complete the record itself.
    handle: Option<IdempotencyKey>,
}

impl<St: IdempotencyStore> Claim<St> {
    pub(crate) fn new(
        shared: Arc<Shared<St>>,
        key: RecordKey,
        token: LockToken,
        span: Span,
        protocol: Protocol,
    ) -> Self {
        shared.in_flight.enter();
        Self {
            shared,
            key,
            token,
            span,
            protocol,
            settled: false,
            ran: false,
            handle: None,
        }
    }

    /// Watches `handle`, through which the handler may complete the record in its own
    /// transaction: the lease it then loses is no loss.
    pub(crate) fn watching(mut self, handle: IdempotencyKey) -> Self {
        self.handle = Some(handle);
        self
    }

    /// The handler completed the record and committed: nothing is left to write.
    pub(crate) fn settle_committed(&mut self) {
        self.settled = true;
        self.ran = true;
    }

    /// Whether the claim is settled.
    pub(crate) fn is_settled(&self) -> bool {
        self.settled
    }

    /// Notes that the handler has answered: dropped unsettled from now on (a panic while
    /// recording), the claim keeps the key in flight rather than release it.
    pub(crate) fn mark_ran(&mut self) {
        self.ran = true;
    }

    /// How the request speaks.
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// What the layer shares.
    pub(crate) fn shared(&self) -> &Shared<St> {
        &self.shared
    }

    /// Records `record` as the key's response. A store error other than a lost claim is
    /// retried on a task of its own, the lease renewed meanwhile, for up to the
    /// configured completion retry period: the caller goes on at once.
    pub(crate) async fn complete(&mut self, record: &StoredResponse) {
        let shared = &self.shared;
        let ttl = shared.config.ttl;
        let first = shared
            .timed(
                "complete",
                shared.store.complete(&self.key, &self.token, record, ttl),
            )
            .await;
        match first {
            Ok(()) => self.settled = true,
            Err(err) if err.kind() == StoreErrorKind::Fenced => {
                self.settled = true;
                self.lost(&err);
            }
            Err(err) => {
                tracing::warn!(parent: &self.span, error = %err, "could not record the response; retrying while the claim is held");
                shared.metrics.add_completion_retry();
                let handoff = self.hand_off();
                tokio::spawn(handoff.keep_completing(record.clone()));
            }
        }
    }

    /// Settles a claim whose inner service failed (an error or a panic) after it started:
    /// recorded as a `500` saying the outcome is unknown, or released, as configured.
    pub(crate) async fn fail(&mut self) -> Outcome {
        match self.shared.config.handler_failure {
            HandlerFailure::Release => {
                self.release().await;
                Outcome::Released
            }
            HandlerFailure::Record => {
                // It started: whatever befalls the recording (a panicking hook, a dropped
                // future), the key must not be freed by it.
                self.ran = true;
                let (mut parts, body) = Problem::OutcomeUnknown
                    .render(&self.shared.config, self.protocol)
                    .into_parts();
                if self.shared.config.advertise_expiry {
                    advertise_expiry(&mut parts.headers, self.shared.config.ttl);
                }
                self.complete(&self.record(&parts, Some(body), None)).await;
                Outcome::HandlerFailed
            }
        }
    }

    /// The record of a response with these `parts`, `body` (`None`: not kept) and
    /// `trailers`.
    pub(crate) fn record(
        &self,
        parts: &Parts,
        body: Option<bytes::Bytes>,
        trailers: Option<http::HeaderMap>,
    ) -> StoredResponse {
        to_record(parts, body, trailers, &self.shared.config.not_recorded)
    }

    /// Records the response with `parts`, `body` (`None`: not kept) and `trailers`, its
    /// headers lent to the record rather than copied, and given back; the body and
    /// trailers are handed back too.
    pub(crate) async fn complete_with(
        &mut self,
        parts: &mut Parts,
        body: Option<bytes::Bytes>,
        trailers: Option<http::HeaderMap>,
    ) -> GivenBack {
        let config = &self.shared.config;
        if config.advertise_expiry {
            advertise_expiry(&mut parts.headers, config.ttl);
        }
        let (record, lent) = lend(parts, body, trailers, &config.not_recorded);
        self.complete(&record).await;
        give_back(parts, record, lent)
    }

    /// Frees the key, so that a retry runs afresh.
    pub(crate) async fn release(&mut self) {
        let shared = &self.shared;
        let released = shared
            .timed("release", shared.store.release(&self.key, &self.token))
            .await;
        self.settled = true;
        if let Err(err) = released {
            tracing::warn!(parent: &self.span, error = %err, "could not release the key; it frees when its lease expires");
            shared.metrics.add_record_failure();
        }
    }

    /// Counts `outcome` and records it on the request's span, for an answer the layer does
    /// not give (an error or a panic of the inner service goes on up).
    pub(crate) fn note(&self, outcome: Outcome) {
        self.shared.record(&self.span, outcome);
    }

    /// Marks `response` with `outcome` (extensions, span, counters).
    pub(crate) fn finish<B>(&self, outcome: Outcome, response: Response<B>) -> Response<B> {
        self.shared.finish(&self.span, outcome, response)
    }

    /// Runs `work` while renewing the lease: a third of a lease after the last renewal
    /// that was sent and succeeded, and, after a failure, again soon, each try bounded by
    /// what is left of the lease (not only the store timeout), so that one slow renewal
    /// cannot outlast the lease it should extend.
    ///
    /// `work` is pinned where the caller keeps it, not moved in: the future it belongs to
    /// is large, and each move is a copy.
    pub(crate) async fn renewing<F: Future>(&self, work: Pin<&mut F>) -> F::Output {
        let shared = &self.shared;
        let lease = shared.config.lease;
        let renew = async {
            let mut renewed_at = tokio::time::Instant::now();
            loop {
                tokio::time::sleep_until(renewed_at + lease / 3).await;
                let mut pause = FIRST_PAUSE;
                loop {
                    let sent = tokio::time::Instant::now();
                    let left = (renewed_at + lease).saturating_duration_since(sent);
                    // Half of what is left, so that a second try still fits in the lease.
                    let bound = shared.config.store_timeout.min((left / 2).max(FIRST_PAUSE));
                    let renewed = tokio::time::timeout(
                        bound,
                        shared.store.renew(&self.key, &self.token, lease),
                    )
                    .await
                    .unwrap_or_else(|_| Err(StoreError::from_kind(StoreErrorKind::Timeout)));
                    match renewed {
                        Ok(()) => {
                            emit::lease_renewal("ok");
                            renewed_at = sent;
                            break;
                        }
                        Err(err) if err.kind() == StoreErrorKind::Fenced => {
                            emit::lease_renewal("fenced");
                            emit::fenced_write("renew");
                            let committed = self
                                .handle
                                .as_ref()
                                .is_some_and(|handle| handle.completed().is_some());
                            if !committed {
                                tracing::warn!(parent: &self.span, "lease lost while the request ran; its result will not be recorded");
                            }
                            return std::future::pending().await;
                        }
                        Err(err) => {
                            emit::lease_renewal("error");
                            tracing::warn!(parent: &self.span, error = %err, "could not renew the lease; trying again");
                        }
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        };
        tokio::select! {
            biased;
            output = work => output,
            never = renew => never,
        }
    }

    /// A claim that takes over this one's duty; this one is left settled. The handler
    /// has run, so the new one never releases the key, even if its task is cancelled.
    fn hand_off(&mut self) -> Self {
        self.settled = true;
        let mut handoff = Self::new(
            Arc::clone(&self.shared),
            self.key.clone(),
            self.token,
            self.span.clone(),
            self.protocol,
        );
        handoff.ran = true;
        handoff
    }

    /// Retries the completion until it is stored, the claim is lost, or the retry period
    /// ends; the lease is renewed meanwhile, so no one else runs the request.
    async fn keep_completing(mut self, record: StoredResponse) {
        let shared = Arc::clone(&self.shared);
        let until = tokio::time::Instant::now() + shared.config.completion_retry;
        let ttl = shared.config.ttl;
        let retries = std::pin::pin!(retry_until(until, Until::Fenced, || {
            shared.timed(
                "complete",
                shared.store.complete(&self.key, &self.token, &record, ttl),
            )
        }));
        let last = self.renewing(retries).await;
        self.settled = true;
        match last {
            Ok(()) => tracing::info!(parent: &self.span, "recorded the response after retrying"),
            // Fenced after a failed try: that try may have landed, its reply lost. Then
            // the record is completed, and nothing was lost.
            Err(err) if err.kind() == StoreErrorKind::Fenced && self.holds(&record).await => {
                tracing::info!(parent: &self.span, "the response was recorded by an earlier try");
            }
            Err(err) => self.lost(&err),
        }
    }

    /// Whether the key holds `record` now: an earlier try of ours landed. (Another run's
    /// record, after the lease lapsed, is a loss to count.)
    async fn holds(&self, record: &StoredResponse) -> bool {
        let read = self
            .shared
            .timed("get", self.shared.store.get(&self.key))
            .await;
        matches!(read, Ok(Some(held)) if held.state == RecordState::Completed(record.clone()))
    }

    /// Logs and counts a response that could not be stored.
    fn lost(&self, err: &StoreError) {
        tracing::error!(parent: &self.span, error = %err, "could not record the response; the key frees when its lease ends, and a retry then runs again");
        self.shared.metrics.add_record_failure();
    }
}

impl<St: IdempotencyStore> Drop for Claim<St> {
    fn drop(&mut self) {
        self.shared.in_flight.leave();
        if self.settled {
            return;
        }
        if self.ran {
            // The handler ran: the key stays in flight until its lease ends.
            self.lost(&StoreError::from_kind(StoreErrorKind::Unavailable));
            return;
        }
        self.shared.record(&self.span, Outcome::Released);
        release_in_background(Arc::clone(&self.shared), self.key.clone(), self.token);
    }
}
