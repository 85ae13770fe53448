//! The lost-response scenario, against the `orders` example.
//!
//! ```text
//! cargo run --example orders                           # in one terminal
//! cargo run --example client --features client         # in another
//! cargo run --example client --features client -- --url http://127.0.0.1:3000
//! ```
//!
//! The order takes 1.5 s to commit (`delay_ms`), and the client gives each attempt 1 s:
//! the first attempt's response is lost to the timeout while the server commits anyway.
//! The client retries with the same key: the server says the order is in progress, then
//! replays its response. One order, whatever happened on the wire.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{ServiceBuilder, ServiceExt};
use tower_idempotency::client::{AttemptResult, ClientOutcome, IdempotencyClientLayer};

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let mut args = std::env::args().skip(1);
    let base = match (args.next().as_deref(), args.next()) {
        (Some("--url"), Some(url)) => url,
        (None, _) => "http://127.0.0.1:3000".to_owned(),
        _ => return Err("usage: client [--url http://HOST:PORT]".into()),
    };
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(IdempotencyClientLayer::new().attempt_timeout(Duration::from_secs(1)))
        .service(http.clone());

    let body = r#"{"item":"espresso machine","quantity":1,"delay_ms":1500}"#;
    println!("POST {base}/orders {body}");
    let request = http::Request::post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let response = client
        .oneshot(request)
        .await
        .map_err(|err| format!("{err} (is `cargo run --example orders` running at {base}?)"))?;

    let outcome = response
        .extensions()
        .get::<ClientOutcome>()
        .cloned()
        .expect("outcome");
    println!("key: {}", outcome.key.as_deref().unwrap_or("(none)"));
    for (n, attempt) in outcome.attempts.iter().enumerate() {
        let result = match &attempt.result {
            AttemptResult::Status(status) if *status == http::StatusCode::CONFLICT => {
                format!("{status}: still in progress on the server")
            }
            AttemptResult::Status(status) => status.to_string(),
            AttemptResult::TimedOut => "no response within 1 s (lost)".to_owned(),
            AttemptResult::TransportError(err) => format!("transport error: {err}"),
            other => format!("{other:?}"),
        };
        println!(
            "attempt {} after waiting {:>6.3} s: {result}",
            n + 1,
            attempt.waited.as_secs_f64()
        );
    }
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "final: {status} replayed={} {}",
        outcome.replayed,
        String::from_utf8_lossy(&body)
    );

    let list = http.get(format!("{base}/orders").parse()?).await?;
    let list = list.into_body().collect().await?.to_bytes();
    println!("GET /orders: {}", String::from_utf8_lossy(&list));
    Ok(())
}
