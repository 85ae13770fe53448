//! [`Shared`]: what every service of one layer shares (store, configuration, counters),
//! and the steps every stage of the flow takes with it: bounding a store call, and marking
//! a response with its outcome.

use std::{future::Future, sync::Arc, task::Poll};

use http::Response;
use http_body::Body;
use tracing::Span;

use super::{
    body::ResponseBody,
    config::Config,
    grpc::Protocol,
    in_flight::InFlight,
    outcome::{Metrics, Outcome},
    problem::Problem,
};
use crate::store::{StoreError, StoreErrorKind};

/// What every service of one layer shares.
pub(crate) struct Shared<St> {
    pub(crate) store: Arc<St>,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Metrics,
    pub(crate) in_flight: InFlight,
    /// The caller digest of a request without credentials, computed once.
    pub(crate) anonymous_caller: [u8; 32],
}

impl<St> Shared<St> {
    /// Counts `outcome` and records it on the request's span.
    pub(crate) fn record(&self, span: &Span, outcome: Outcome) {
        span.record("outcome", outcome.as_str());
        self.metrics.add(outcome);
    }

    /// Marks `response` with `outcome`: extensions, span, counters.
    pub(crate) fn finish<B>(
        &self,
        span: &Span,
        outcome: Outcome,
        mut response: Response<B>,
    ) -> Response<B> {
        self.record(span, outcome);
        response.extensions_mut().insert(outcome);
        response
    }

    /// Answers `problem` instead of calling the inner service, as a client of `protocol`
    /// reads it.
    pub(crate) fn refuse<B: Body>(
        &self,
        span: &Span,
        protocol: Protocol,
        problem: Problem,
    ) -> Response<ResponseBody<B>> {
        tracing::debug!(parent: span, ?problem, "refused");
        let outcome = problem.outcome();
        self.finish(
            span,
            outcome,
            problem
                .render(&self.config, protocol)
                .map(ResponseBody::full),
        )
    }

    /// Bounds the store call `operation` by the configured timeout. A call that answers
    /// at once (the memory store always does) never arms a timer. With the `metrics`
    /// feature, its duration is measured, and a fenced write counted.
    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError>
    where
        St: crate::store::IdempotencyStore,
    {
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let answer = self.bounded(call).await;
        #[cfg(feature = "metrics")]
        {
            use crate::telemetry::emit;
            emit::store_call(
                self.store.metrics_name(),
                operation,
                answer.is_ok(),
                started.elapsed(),
            );
            if matches!(&answer, Err(err) if err.kind() == StoreErrorKind::Fenced) {
                emit::fenced_write(operation);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = operation;
        answer
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut call = std::pin::pin!(call);
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        if let Poll::Ready(answer) = first {
            return answer;
        }
        tokio::time::timeout(self.config.store_timeout, call)
            .await
            .unwrap_or_else(|_| Err(StoreError::from_kind(StoreErrorKind::Timeout)))
    }
}
