//! `GET /metrics/prometheus`: the layer's counters in the Prometheus text format, under
//! the names `tower_idempotency::telemetry` documents. The demo renders them itself so
//! that it needs no exporter; an application enables the `metrics` feature and installs
//! one (e.g. `metrics-exporter-prometheus`), which then also gets the store call
//! latencies, lease renewals, fenced writes and memory store evictions.

use std::fmt::Write;

use axum::{extract::State, http::header, response::IntoResponse};
use tower_idempotency::{telemetry, InFlight, Metrics};

/// What the endpoint reads.
#[derive(Clone)]
pub(crate) struct Sources {
    pub(crate) metrics: Metrics,
    pub(crate) in_flight: InFlight,
}

/// The text of one scrape.
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
