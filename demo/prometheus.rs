//! `GET /metrics/prometheus`, in the Prometheus text format, under the names
//! `tower_idempotency::telemetry` documents. With the demo's `metrics` feature, the
//! layer's metrics go through the `metrics` facade to `metrics-exporter-prometheus`
//! (store call latencies, lease renewals, fenced writes and memory store evictions
//! included); without it, the demo renders the layer's own counters itself, so that its
//! default build needs no exporter.

#[cfg(not(feature = "metrics"))]
use std::fmt::Write;

use axum::{extract::State, http::header, response::IntoResponse};
#[cfg(not(feature = "metrics"))]
use tower_idempotency::telemetry;
use tower_idempotency::{InFlight, Metrics};

/// What the endpoint reads.
#[derive(Clone)]
pub(crate) struct Sources {
    /// The installed exporter, with the `metrics` feature.
    #[cfg(feature = "metrics")]
    exporter: metrics_exporter_prometheus::PrometheusHandle,
    #[cfg(not(feature = "metrics"))]
    metrics: Metrics,
    #[cfg(not(feature = "metrics"))]
    in_flight: InFlight,
}

impl Sources {
    /// What to scrape. With the `metrics` feature, this installs the process's recorder:
    /// call it once.
    #[cfg(feature = "metrics")]
    pub(crate) fn new(_: Metrics, _: InFlight) -> Result<Self, String> {
        let exporter = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .map_err(|err| format!("cannot install the Prometheus recorder: {err}"))?;
        Ok(Self { exporter })
    }

    /// What to scrape: the layer's own counters.
    #[cfg(not(feature = "metrics"))]
    pub(crate) fn new(metrics: Metrics, in_flight: InFlight) -> Result<Self, String> {
        Ok(Self { metrics, in_flight })
    }
}

/// The text of one scrape.
#[cfg(feature = "metrics")]
fn render(sources: &Sources) -> String {
    sources.exporter.run_upkeep();
    sources.exporter.render()
}

/// The text of one scrape, from the layer's own counters.
#[cfg(not(feature = "metrics"))]
fn render(sources: &Sources) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {} Requests the layer handled, by outcome.",
        telemetry::REQUESTS
    );
    let _ = writeln!(out, "# TYPE {} counter", telemetry::REQUESTS);
    for (outcome, count) in sources.metrics.snapshot() {
        let _ = writeln!(
            out,
            "{}{{outcome=\"{outcome}\"}} {count}",
            telemetry::REQUESTS
        );
    }
    for (name, help, value) in [
        (
            telemetry::RECORD_FAILURES,
            "Responses not stored after the handler ran.",
            sources.metrics.record_failures(),
        ),
        (
            telemetry::COMPLETION_RETRIES,
            "Completions retried after a store failure.",
            sources.metrics.completion_retries(),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let name = telemetry::CLAIMS_IN_FLIGHT;
    let _ = writeln!(
        out,
        "# HELP {name} Claims the layer holds.\n# TYPE {name} gauge\n{name} {}",
        sources.in_flight.count()
    );
    out
}

pub(crate) async fn scrape(State(sources): State<Sources>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&sources),
    )
}
