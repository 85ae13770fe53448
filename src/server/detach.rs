//! [`Detaching`]: a future that is polled in place and, if dropped before it finishes,
//! hands the rest of its work to a task of its own. Nothing here is specific to
//! idempotency.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// Polls the work in place (no task spawned on the common path) and, if dropped before it
/// finishes (hyper drops the response future when the client goes away), spawns the rest
/// of it on the current tokio runtime.
pub(crate) struct Detaching<F>
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
    /// Takes the work already boxed: a large future is then built on the heap once, and
    /// a caller that awaits it in place can share the one box.
    pub(crate) fn new(work: Pin<Box<F>>) -> Self {
        Self { work: Some(work) }
    }
}

impl<F> Future for Detaching<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Taken out while polled: if the work panics, it is dropped here (running its
        // destructors) rather than detached half-unwound.
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
        // Without a runtime the work can only be dropped.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            drop(work.await);
        });
    }
}
