//! [`Claim`]: the guard of a claimed key, from the claim to its settlement. It renews the
//! lease while the work runs, and settles the record once: completed with a response, or
//! released so that a retry runs afresh. Dropped unsettled, it releases the key.

use std::{future::Future, sync::Arc};

use http::Response;
use tracing::Span;

use super::{outcome::Outcome, shared::Shared};
use crate::store::{IdempotencyStore, LockToken, RecordKey, StoreErrorKind, StoredResponse};

/// The claim this request holds. Settled by `complete` or `release`; dropped unsettled
/// (a panic in the inner service, or a cancelled request without `run_to_completion`),
/// it releases the key in the background so that a retry can run.
pub(crate) struct Claim<St: IdempotencyStore> {
    shared: Arc<Shared<St>>,
    key: RecordKey,
    token: LockToken,
    span: Span,
    settled: bool,
}

impl<St: IdempotencyStore> Claim<St> {
    pub(crate) fn new(
        shared: Arc<Shared<St>>,
        key: RecordKey,
        token: LockToken,
        span: Span,
    ) -> Self {
        Self {
            shared,
            key,
            token,
            span,
            settled: false,
        }
    }

    /// What the layer shares.
    pub(crate) fn shared(&self) -> &Shared<St> {
        &self.shared
    }

    /// The request's span.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records `record` as the key's response.
    pub(crate) async fn complete(&mut self, record: StoredResponse) {
        let shared = &self.shared;
        let stored = shared
            .timed(
                shared
                    .store
                    .complete(&self.key, &self.token, record, shared.config.ttl),
            )
            .await;
        self.settled = true;
        if let Err(err) = stored {
            tracing::error!(parent: &self.span, error = %err, "could not record the response; the client still gets it");
            shared.metrics.add_record_failure();
        }
    }

    /// Frees the key, so that a retry runs afresh.
    pub(crate) async fn release(&mut self) {
        let shared = &self.shared;
        let released = shared
            .timed(shared.store.release(&self.key, &self.token))
            .await;
        self.settled = true;
        if let Err(err) = released {
            tracing::warn!(parent: &self.span, error = %err, "could not release the key; it frees when its lease expires");
            shared.metrics.add_record_failure();
        }
    }

    /// Marks `response` with `outcome` (extensions, span, counters).
    pub(crate) fn finish<B>(&self, outcome: Outcome, response: Response<B>) -> Response<B> {
        self.shared.finish(&self.span, outcome, response)
    }

    /// Runs `work` while renewing the lease every third of a lease period.
    pub(crate) async fn renewing<F: Future>(&self, work: F) -> F::Output {
        let shared = &self.shared;
        let lease = shared.config.lease;
        let renew = async {
            loop {
                tokio::time::sleep(lease / 3).await;
                let renewed = shared
                    .timed(shared.store.renew(&self.key, &self.token, lease))
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
            let _ = shared.timed(shared.store.release(&key, &token)).await;
        });
    }
}
