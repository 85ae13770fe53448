//! The lost-response scenario with reqwest, against the `orders` example, and a key that
//! survives a restart.
//!
//! ```text
//! cargo run --example orders                                   # in one terminal
//! cargo run --example reqwest_client --features reqwest        # in another
//! cargo run --example reqwest_client --features reqwest -- --url http://127.0.0.1:3000
//! cargo run --example reqwest_client --features reqwest -- --intent-file /tmp/checkout.intent
//! ```
//!
//! The order takes 1.5 s to commit (`delay_ms`), and the client gives each attempt 1 s:
//! the first attempt's response is lost to the timeout while the server commits anyway.
//! The middleware retries with the same key: the server says the order is in progress,
//! then replays its response. One order, whatever happened on the wire.
//!
//! With `--intent-file`, the key is `checkout:<intent id>`, the intent id read from that
//! file, or minted and written there (flushed to disk) before the first attempt. A
//! process that dies mid-call and is started again reads the same id, so it sends the
//! same key and gets the first run's answer instead of placing a second order: store the
//! key with your local attempt, never recompute a different one after a restart.

use std::time::Duration;

use reqwest_middleware::ClientBuilder;
use tower_idempotency::client::{AttemptResult, ClientOutcome, IdempotencyClientLayer};

/// The persisted intent id in `path`, or a new one written there first.
fn intent_id(path: &str) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            let mut file = std::fs::File::create(path)?;
            std::io::Write::write_all(&mut file, id.as_bytes())?;
            file.sync_all()?;
            Ok(id)
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut base = "http://127.0.0.1:3000".to_owned();
    let mut intent_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--url", Some(url)) => base = url,
            ("--intent-file", Some(path)) => intent_file = Some(path),
            _ => {
                return Err(
                    "usage: reqwest_client [--url http://HOST:PORT] [--intent-file PATH]".into(),
                )
            }
        }
    }
    let mut layer = IdempotencyClientLayer::new().attempt_timeout(Duration::from_secs(1));
    if let Some(path) = &intent_file {
        let key = format!("checkout:{}", intent_id(path)?);
        println!("intent: {path} (key {key})");
        layer = layer.key_from(move |_, _| Some(key.clone()));
    }
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(layer.reqwest_middleware())
        .build();

    let body = r#"{"item":"espresso machine","quantity":1,"delay_ms":1500}"#;
    println!("POST {base}/orders {body}");
    let response = client
        .post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|err| format!("{err} (is `cargo run --example orders` running at {base}?)"))?;

    let outcome = response
        .extensions()
        .get::<ClientOutcome>()
        .cloned()
        .ok_or("the middleware put no outcome on the response")?;
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
    let body = response.text().await?;
    println!("final: {status} replayed={} {body}", outcome.replayed);

    let list = reqwest::get(format!("{base}/orders")).await?.text().await?;
    println!("GET /orders: {list}");
    Ok(())
}
