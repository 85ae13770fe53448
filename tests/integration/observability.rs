//! One tracing span per intercepted request, with its outcome; counters of the same.

use std::sync::{Arc, Mutex, OnceLock};

use axum::http::StatusCode;
use tower_idempotency::{IdempotencyLayer, MemoryStore, Outcome};
use tracing::{
    field::{Field, Visit},
    span, Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, registry::LookupSpan, Layer};

use crate::support::{app, post_with_key, send, unique};

/// Collects the outcome recorded on every `idempotency` span opened on the watched
/// thread. It is the process's global subscriber: a thread-local one (`set_default`)
/// races with other tests' threads over the callsites' cached interest, and can miss the
/// spans.
#[derive(Clone, Default)]
struct Spans {
    outcomes: Arc<Mutex<Vec<Option<String>>>>,
    watched: Arc<Mutex<Option<std::thread::ThreadId>>>,
}

/// The global collector, installed once.
fn spans() -> &'static Spans {
    static SPANS: OnceLock<Spans> = OnceLock::new();
    SPANS.get_or_init(|| {
        let spans = Spans::default();
        tracing_subscriber::registry().with(spans.clone()).init();
        spans
    })
}

struct OutcomeVisitor<'a>(&'a mut Option<String>);

impl Visit for OutcomeVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "outcome" {
            *self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let watched = *self.watched.lock().unwrap() == Some(std::thread::current().id());
        if watched && attrs.metadata().name() == "idempotency" {
            ctx.span(id)
                .unwrap()
                .extensions_mut()
                .insert(None::<String>);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        if let Some(outcome) = extensions.get_mut::<Option<String>>() {
            values.record(&mut OutcomeVisitor(outcome));
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let extensions = span.extensions();
        if let Some(outcome) = extensions.get::<Option<String>>() {
            self.outcomes.lock().unwrap().push(outcome.clone());
        }
    }
}

#[tokio::test]
async fn each_intercepted_request_gets_one_span_with_its_outcome() {
    // The test's own current-thread runtime: every span of its requests opens here.
    let spans = spans();
    *spans.watched.lock().unwrap() = Some(std::thread::current().id());
    let layer = IdempotencyLayer::new(MemoryStore::new());
    let metrics = layer.metrics();
    let (app, _) = app(layer);
    let key = unique("span");

    send(&app, post_with_key("/orders", &key, "a")).await; // fresh
    send(&app, post_with_key("/orders", &key, "a")).await; // replayed
    send(&app, post_with_key("/orders", &key, "b")).await; // conflict
    send(&app, post_with_key("/orders", "", "a")).await; // invalid_key
    send(&app, post_with_key("/status/503", &unique("t"), "")).await; // released
    let passed = axum::http::Request::post("/orders")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&app, passed).await.status, StatusCode::CREATED); // not intercepted

    let recorded = spans.outcomes.lock().unwrap().clone();
    let expected = ["fresh", "replayed", "conflict", "invalid_key", "released"];
    assert_eq!(recorded, expected.map(|o| Some(o.to_owned())).to_vec());
    for (outcome, name) in [
        Outcome::Fresh,
        Outcome::Replayed,
        Outcome::Conflict,
        Outcome::InvalidKey,
        Outcome::Released,
    ]
    .into_iter()
    .zip(expected)
    {
        assert_eq!(outcome.as_str(), name);
        assert_eq!(metrics.count(outcome), 1, "{name}");
    }
}
