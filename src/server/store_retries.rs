//! Store writes tried again: [`retry_until`], and the releases of claims that went
//! unsettled or whose `begin` failed, run in the background.

use std::{future::Future, sync::Arc, time::Duration};

use super::shared::Shared;
use crate::store::{IdempotencyStore, LockToken, RecordKey, StoreError, StoreErrorKind};

/// The first pause between two tries of a store write that failed; it doubles up to
/// [`MAX_PAUSE`].
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(20);
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(1);

/// When [`retry_until`] stops trying, besides success and the deadline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Also on [`StoreErrorKind::Fenced`]: the claim is not ours (any more).
    Fenced,
    /// Not on `Fenced`: a claim whose `begin` may still reach the store after us.
    Deadline,
}

/// Tries `write` until it succeeds, `until` passes, or (with [`Until::Fenced`]) it is
/// fenced, pausing between tries; returns the last result.
pub(crate) async fn retry_until<F, Fut>(
    until: tokio::time::Instant,
    stop: Until,
    mut write: F,
) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        let result = write().await;
        match &result {
            Ok(()) => return result,
            Err(err) if stop == Until::Fenced && err.kind() == StoreErrorKind::Fenced => {
                return result
            }
            Err(_) if tokio::time::Instant::now() + pause > until => return result,
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Releases a claim dropped unsettled, in the background, retrying within one lease
/// (after which it frees by itself).
pub(crate) fn release_in_background<St: IdempotencyStore>(
    shared: Arc<Shared<St>>,
    key: RecordKey,
    token: LockToken,
) {
    let window = shared.config.lease;
    release_within(shared, key, token, window, Until::Fenced);
}

/// Releases a claim whose `begin` failed or was abandoned: it may have landed, or may
/// still land (a slow statement in a pool), so a fenced release is tried again, for up to
/// twice the store timeout (within a lease). Releasing with this token can only ever
/// free this request's own claim.
pub(crate) fn clean_up_lost_claim<St: IdempotencyStore>(
    shared: Arc<Shared<St>>,
    key: RecordKey,
    token: LockToken,
) {
    let window = (shared.config.store_timeout * 2).min(shared.config.lease);
    release_within(shared, key, token, window, Until::Deadline);
}

/// Releases `key` held with `token` on a task of its own, retrying until `until` or the
/// `window` ends (nothing, outside a runtime).
fn release_within<St: IdempotencyStore>(
    shared: Arc<Shared<St>>,
    key: RecordKey,
    token: LockToken,
    window: std::time::Duration,
    until: Until,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let deadline = tokio::time::Instant::now() + window;
        let _ = retry_until(deadline, until, || {
            shared.timed("release", shared.store.release(&key, &token))
        })
        .await;
    });
}
