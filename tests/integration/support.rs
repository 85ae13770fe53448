//! A counting app to put the layer in front of, and request helpers.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, Request, Response, StatusCode},
    routing::post,
    Router,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;
use tower_idempotency::{IdempotencyLayer, IdempotencyStore, Outcome};

/// Counts real executions of the handlers, and gates the slow one.
#[derive(Clone)]
pub(crate) struct Counter {
    runs: Arc<AtomicUsize>,
    /// Permits for `/slow` to finish; tests add them.
    pub(crate) gate: Arc<Semaphore>,
    /// Notified each time `/slow` starts.
    pub(crate) started: Arc<Notify>,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            runs: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            started: Arc::default(),
        }
    }
}

impl Counter {
    pub(crate) fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn bump(&self) -> usize {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The routes under test, each counting its executions.
pub(crate) fn routes(counter: Counter) -> Router {
    Router::new()
        .route("/orders", post(create).patch(create))
        .route("/slow", post(slow))
        .route("/status/{code}", post(status))
        .route("/big/{len}", post(big))
        .route("/panic", post(panic))
        .with_state(counter)
}

pub(crate) fn app<St: IdempotencyStore>(layer: IdempotencyLayer<St>) -> (Router, Counter) {
    let counter = Counter::default();
    (routes(counter.clone()).layer(layer), counter)
}

async fn create(State(counter): State<Counter>, body: Bytes) -> Response<Body> {
    let n = counter.bump();
    Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .header("location", format!("/orders/{n}"))
        .header("x-run", n.to_string())
        .header("set-cookie", "session=secret")
        .body(Body::from(format!(
            "{{\"run\":{n},\"echo\":{}}}",
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        )))
        .unwrap()
}

async fn slow(State(counter): State<Counter>) -> (StatusCode, String) {
    let n = counter.bump();
    counter.started.notify_one();
    counter.gate.acquire().await.unwrap().forget();
    (StatusCode::CREATED, format!("slow run {n}"))
}

async fn status(State(counter): State<Counter>, Path(code): Path<u16>) -> (StatusCode, String) {
    let n = counter.bump();
    (
        StatusCode::from_u16(code).unwrap(),
        format!("status run {n}"),
    )
}

async fn big(State(counter): State<Counter>, Path(len): Path<usize>) -> Vec<u8> {
    counter.bump();
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn panic(State(counter): State<Counter>) -> &'static str {
    counter.bump();
    panic!("handler panicked on purpose");
}

/// A POST with a key and a body.
pub(crate) fn post_with_key(uri: &str, key: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) outcome: Option<Outcome>,
}

impl Answer {
    pub(crate) fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Asserts a problem+json answer of `status` whose type ends with `kind`.
    #[track_caller]
    pub(crate) fn assert_problem(&self, status: StatusCode, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let problem = self.json();
        assert_eq!(problem["status"], status.as_u16());
        let ty = problem["type"].as_str().unwrap();
        assert!(ty.ends_with(kind), "problem type {ty} is not {kind}");
        assert!(problem["title"].is_string() && problem["detail"].is_string());
    }
}

pub(crate) async fn read<B>(response: Response<B>) -> Answer
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let outcome = response.extensions().get::<Outcome>().copied();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        outcome,
    }
}

pub(crate) async fn send(app: &Router, request: Request<Body>) -> Answer {
    read(app.clone().oneshot(request).await.unwrap()).await
}

/// Waits (bounded) until `condition` holds, yielding to other tasks meanwhile.
pub(crate) async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

pub(crate) fn unique(prefix: &str) -> String {
    let key = format!("{prefix}-{}", uuid::Uuid::new_v4());
    #[cfg(any(feature = "redis", feature = "postgres"))]
    crate::cleanup::note(&key);
    key
}

/// The example `name`, built with `features` (a list of this package's features; `[]`
/// for none) and cached for the run. Every test that runs one example builds it with the
/// same features, so that no build overwrites a binary another test is starting.
#[cfg(any(feature = "redis", feature = "postgres", feature = "reqwest"))]
pub(crate) fn example_binary(name: &str, features: &[&str]) -> std::path::PathBuf {
    // Built as this test binary was: the same profile, and the same `--target` when one
    // was given (its triple is then in this binary's path); cargo says where it put it.
    let features = features.join(",");
    let mut args = vec![
        "build",
        "--quiet",
        "--example",
        name,
        "--features",
        &features,
    ];
    args.push("--message-format=json-render-diagnostics");
    if !cfg!(debug_assertions) {
        args.push("--release");
    }
    let target = env!("TEST_TARGET");
    let this = std::env::current_exe().unwrap();
    if this.components().any(|part| part.as_os_str() == target) {
        args.extend(["--target", target]);
    }
    let output = std::process::Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the {name} example failed"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == name)
        .find_map(|message| message["executable"].as_str().map(std::path::PathBuf::from))
        .unwrap_or_else(|| panic!("cargo named no executable for the {name} example"))
}

/// The `orders` example, built with this test's store features (and `client`).
#[cfg(any(feature = "redis", feature = "postgres", feature = "reqwest"))]
pub(crate) fn orders_binary() -> &'static std::path::Path {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let features: Vec<&str> = [
            cfg!(feature = "redis").then_some("redis"),
            cfg!(feature = "postgres").then_some("postgres"),
            cfg!(feature = "client").then_some("client"),
        ]
        .into_iter()
        .flatten()
        .collect();
        example_binary("orders", &features)
    })
}
