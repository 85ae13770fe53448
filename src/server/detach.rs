//! [`Detaching`]: a boxed future that is polled in place and, if dropped before it
//! finishes (and asked to), hands the rest of its work to a task of its own. Nothing here
//! is specific to idempotency.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tracing::{Instrument, Span};

/// Polls the work in place (no task spawned on the common path) and, if dropped before it
/// finishes (hyper drops the response future when the client goes away), either drops it
/// or, when made to detach, spawns the rest of it on the current tokio runtime.
pub(crate) struct Detaching<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    work: Option<Pin<Box<F>>>,
    /// `Some` when the work, dropped unfinished, goes on: the span its task runs in.
    detach: Option<Span>,
}

impl<F> Detaching<F>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    /// Takes the work already boxed (a large future is then built on the heap once);
    /// `detach`: whether the work, if dropped unfinished, goes on on a task of its own, and
    /// in which span (polled in place, the work runs in its caller's).
    pub(crate) fn new(work: Pin<Box<F>>, detach: Option<Span>) -> Self {
        Self {
            work: Some(work),
            detach,
        }
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
        let (Some(work), Some(span)) = (self.work.take(), self.detach.take()) else {
            return;
        };
        // Without a runtime the work can only be dropped.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(
            async move {
                drop(work.await);
            }
            .instrument(span),
        );
    }
}
