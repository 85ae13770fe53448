//! A tonic gRPC server with the idempotency layer on its `CreateOrder` method, and a client
//! that tells the retry story: its first call's answer is lost (its deadline passes while
//! the payment provider is slow), and it retries with the same `idempotency-key` until it
//! gets the answer, replayed; the order is created once.
//!
//! ```text
//! cargo run -p tower-idempotency-grpc --example grpc     # server and client, one process
//! cargo run -p tower-idempotency-grpc --example grpc -- --serve 127.0.0.1:50051
//! ```

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{metadata::MetadataValue, transport::Channel, Code, Request, Status};
use tower_idempotency::MemoryStore;
use tower_idempotency_grpc::{
    layer, serve, CountOrdersRequest, CreateOrderRequest, Order, Orders, OrdersClient,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (serve_only, addr) = match args.as_slice() {
        [] => (false, "127.0.0.1:0".to_owned()),
        [flag, addr] if flag == "--serve" => (true, addr.clone()),
        _ => return Err("usage: grpc [--serve HOST:PORT]".into()),
    };
    let listener = TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    let orders = Orders::default();
    let server = tokio::spawn(serve(listener, orders.clone(), layer(MemoryStore::new())));
    println!("orders.v1.Orders on {addr}, CreateOrder protected by the idempotency layer");
    if serve_only {
        server.await??;
        return Ok(());
    }

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = OrdersClient::new(channel);
    let order = CreateOrderRequest {
        item: "espresso machine".to_owned(),
        quantity: 1,
        delay_ms: 1500,
    };
    let key = format!("order-{}", std::process::id());
    println!("CreateOrder {order:?}\nidempotency-key: {key}");
    let created = create_with_retries(&mut client, &order, &key).await?;
    println!("created {created:?}");

    // The same key with another order: refused, it never runs.
    let other = CreateOrderRequest {
        quantity: 2,
        ..order
    };
    let refused = client.create_order(keyed(&other, &key, None)).await;
    if let Err(status) = refused {
        println!(
            "the same key, another order: {:?}: {}",
            status.code(),
            status.message()
        );
    }
    let count = client
        .count_orders(CountOrdersRequest {})
        .await?
        .into_inner();
    println!(
        "CreateOrder ran {} time(s); {} order(s) exist",
        orders.runs(),
        count.count
    );
    server.abort();
    Ok(())
}

/// Sends `order` under `key` until it gets an answer: a lost answer (the deadline passed:
/// `DEADLINE_EXCEEDED`, or `CANCELLED` by the client's own timer) or `UNAVAILABLE` is
/// retried with the same key, after the server's pushback if it gave
/// one; any other status is the answer.
async fn create_with_retries(
    client: &mut OrdersClient<Channel>,
    order: &CreateOrderRequest,
    key: &str,
) -> Result<Order, Status> {
    let started = tokio::time::Instant::now();
    for attempt in 1..=10 {
        let deadline = Some(Duration::from_secs(1));
        let answer = client.create_order(keyed(order, key, deadline)).await;
        let at = started.elapsed().as_secs_f64();
        let status = match answer {
            Ok(response) => {
                let replayed = response.metadata().get("idempotent-replayed").is_some();
                println!(
                    "attempt {attempt} at {at:.3} s: OK{}",
                    if replayed { " (replayed)" } else { "" }
                );
                return Ok(response.into_inner());
            }
            Err(status) => status,
        };
        let pushback = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_millis);
        match status.code() {
            // The deadline passed: the server's answer (or the client's own timeout).
            Code::DeadlineExceeded | Code::Cancelled => {
                println!("attempt {attempt} at {at:.3} s: no answer within 1 s (lost)");
            }
            Code::Unavailable => println!(
                "attempt {attempt} at {at:.3} s: UNAVAILABLE: {}",
                status.message()
            ),
            _ => return Err(status),
        }
        tokio::time::sleep(pushback.unwrap_or(Duration::from_millis(100))).await;
    }
    Err(Status::unavailable("gave up after 10 attempts"))
}

/// `order` with its key in the metadata, and a deadline.
fn keyed(
    order: &CreateOrderRequest,
    key: &str,
    deadline: Option<Duration>,
) -> Request<CreateOrderRequest> {
    let mut request = Request::new(order.clone());
    let key = MetadataValue::try_from(key).expect("an ASCII key");
    request.metadata_mut().insert("idempotency-key", key);
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    request
}
