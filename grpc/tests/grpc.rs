//! The idempotency layer in front of a tonic server, called by a tonic client over TCP
//! (HTTP/2): each test counts the handler's real runs.

use std::{sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tonic::{metadata::MetadataValue, transport::Channel, Code, Request, Response, Status};
use tower_idempotency::{
    store::{Begin, Fingerprint, LockToken, Record, RecordKey, StoreError, StoredResponse},
    IdempotencyLayer, IdempotencyStore, MemoryStore,
};
use tower_idempotency_grpc::{
    layer, serve, CountOrdersRequest, CreateOrderRequest, Order, Orders, OrdersClient,
    WatchOrdersRequest,
};

/// A server on a port of its own, stopped when dropped.
struct Server {
    client: OrdersClient<Channel>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start<St: IdempotencyStore>(orders: Orders, layer: IdempotencyLayer<St>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, orders, layer));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Server {
        client: OrdersClient::new(channel),
        task,
    }
}

fn order(item: &str, quantity: u32) -> CreateOrderRequest {
    CreateOrderRequest {
        item: item.to_owned(),
        quantity,
        delay_ms: 0,
    }
}

fn keyed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let key = MetadataValue::try_from(key).unwrap();
    request.metadata_mut().insert("idempotency-key", key);
    request
}

fn replayed<T>(response: &Response<T>) -> bool {
    response.metadata().get("idempotent-replayed").is_some()
}

fn metadata<'a>(status: &'a Status, name: &str) -> Option<&'a str> {
    status.metadata().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_lost_answer_is_retried_runs_once_and_is_replayed_with_its_trailers() {
    let gate = Arc::new(Semaphore::new(0));
    let orders = Orders::gated(Arc::clone(&gate));
    let mut server = start(orders.clone(), layer(MemoryStore::new())).await;
    let create = order("gated", 1);

    // The first call's deadline passes while the handler waits: its answer is lost.
    let mut first = keyed(create.clone(), "lost-1");
    first.set_timeout(Duration::from_millis(200));
    let lost = server.client.create_order(first).await.unwrap_err();
    assert!(
        matches!(lost.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{lost:?}"
    );

    // Its retry, while it still runs: UNAVAILABLE, with the wait and the problem.
    let busy = server
        .client
        .create_order(keyed(create.clone(), "lost-1"))
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::Unavailable, "{busy:?}");
    assert!(busy.message().contains("in progress"), "{}", busy.message());
    assert_eq!(metadata(&busy, "grpc-retry-pushback-ms"), Some("1000"));
    assert_eq!(
        metadata(&busy, "idempotency-problem"),
        Some("urn:tower-idempotency:problem:in-progress")
    );

    // The handler finishes on its own (the layer runs it to completion), and records.
    gate.add_permits(1);
    let mut answer = None;
    for _ in 0..250 {
        match server
            .client
            .create_order(keyed(create.clone(), "lost-1"))
            .await
        {
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done => {
                answer = Some(done.unwrap());
                break;
            }
        }
    }
    let answer = answer.expect("the first call finished within 5 s");
    assert!(replayed(&answer));
    // The unary client merges the trailers into the metadata: they were replayed.
    assert_eq!(answer.metadata().get("grpc-status").unwrap(), "0");
    let expected = Order {
        id: 1,
        item: "gated".to_owned(),
        quantity: 1,
    };
    assert_eq!(answer.into_inner(), expected);
    let again = server
        .client
        .create_order(keyed(create, "lost-1"))
        .await
        .unwrap();
    assert!(replayed(&again));
    assert_eq!(again.into_inner(), expected);
    assert_eq!((orders.runs(), orders.count()), (1, 1));
}

#[tokio::test]
async fn an_error_status_is_recorded_and_replayed() {
    let orders = Orders::default();
    let mut server = start(orders.clone(), layer(MemoryStore::new())).await;
    for attempt in 0..3 {
        let status = server
            .client
            .create_order(keyed(order("tea", 0), "zero-1"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "quantity must be at least 1");
        assert_eq!(
            metadata(&status, "idempotent-replayed").is_some(),
            attempt > 0,
            "attempt {attempt}"
        );
    }
    assert_eq!(
        orders.runs(),
        1,
        "an error the handler answered is its answer"
    );
}

#[tokio::test]
async fn a_handler_that_crashes_is_unknown_to_every_retry_and_never_runs_again() {
    let orders = Orders::default();
    let mut server = start(orders.clone(), layer(MemoryStore::new())).await;
    let crashed = server
        .client
        .create_order(keyed(order("crash", 1), "crash-1"))
        .await
        .unwrap_err();
    // The handler's task died: the stream is reset, and the first caller learns nothing.
    assert_eq!(crashed.code(), Code::Cancelled, "{crashed:?}");
    for _ in 0..2 {
        let unknown = server
            .client
            .create_order(keyed(order("crash", 1), "crash-1"))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::Unknown, "{unknown:?}");
        assert!(
            unknown.message().contains("will not run again"),
            "{}",
            unknown.message()
        );
        assert_eq!(metadata(&unknown, "idempotent-replayed"), Some("true"));
    }
    assert_eq!(orders.runs(), 1);
}

#[tokio::test]
async fn unavailable_releases_the_key_and_the_retry_runs() {
    let orders = Orders::default();
    let mut server = start(orders.clone(), layer(MemoryStore::new())).await;
    let down = server
        .client
        .create_order(keyed(order("flaky", 1), "flaky-1"))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
    assert!(
        metadata(&down, "idempotency-problem").is_none(),
        "the handler's own"
    );
    let created = server
        .client
        .create_order(keyed(order("flaky", 1), "flaky-1"))
        .await
        .unwrap();
    assert!(!replayed(&created), "released, so run again");
    let replay = server
        .client
        .create_order(keyed(order("flaky", 1), "flaky-1"))
        .await
        .unwrap();
    assert!(replayed(&replay));
    assert_eq!(replay.into_inner(), created.into_inner());
    assert_eq!((orders.runs(), orders.count()), (2, 1));
}

#[tokio::test]
async fn the_key_with_another_request_is_failed_precondition_and_never_runs() {
    let orders = Orders::default();
    let mut server = start(orders.clone(), layer(MemoryStore::new())).await;
    server
        .client
        .create_order(keyed(order("tea", 1), "conflict-1"))
        .await
        .unwrap();
    let conflict = server
        .client
        .create_order(keyed(order("tea", 2), "conflict-1"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    assert!(
        conflict.message().contains("new key"),
        "{}",
        conflict.message()
    );
    assert_eq!(
        metadata(&conflict, "idempotency-problem"),
        Some("urn:tower-idempotency:problem:conflict")
    );
    assert_eq!(metadata(&conflict, "grpc-retry-pushback-ms"), None);
    assert_eq!(orders.runs(), 1);
}

#[tokio::test]
async fn a_malformed_or_missing_key_is_invalid_argument_and_never_runs() {
    let orders = Orders::default();
    let mut server = start(orders.clone(), layer(MemoryStore::new()).require_key(true)).await;
    let invalid = server
        .client
        .create_order(keyed(order("tea", 1), &"k".repeat(300)))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("255"), "{}", invalid.message());
    let missing = server
        .client
        .create_order(Request::new(order("tea", 1)))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains("the idempotency-key metadata"),
        "{}",
        missing.message()
    );
    assert_eq!(orders.runs(), 0);
}

/// A store whose every call fails, as an unreachable one does.
struct Down;

impl IdempotencyStore for Down {
    async fn begin(
        &self,
        _: &RecordKey,
        _: &Fingerprint,
        _: &LockToken,
        _: Duration,
    ) -> Result<Begin, StoreError> {
        Err(StoreError::unavailable("the store is down"))
    }

    async fn complete(
        &self,
        _: &RecordKey,
        _: &LockToken,
        _: &StoredResponse,
        _: Duration,
    ) -> Result<(), StoreError> {
        Err(StoreError::unavailable("the store is down"))
    }

    async fn release(&self, _: &RecordKey, _: &LockToken) -> Result<(), StoreError> {
        Err(StoreError::unavailable("the store is down"))
    }

    async fn renew(&self, _: &RecordKey, _: &LockToken, _: Duration) -> Result<(), StoreError> {
        Err(StoreError::unavailable("the store is down"))
    }

    async fn get(&self, _: &RecordKey) -> Result<Option<Record>, StoreError> {
        Err(StoreError::unavailable("the store is down"))
    }
}

#[tokio::test]
async fn a_store_outage_is_unavailable_with_a_pushback_and_never_runs() {
    let orders = Orders::default();
    let mut server = start(orders.clone(), layer(Down)).await;
    let outage = server
        .client
        .create_order(keyed(order("tea", 1), "outage-1"))
        .await
        .unwrap_err();
    assert_eq!(outage.code(), Code::Unavailable);
    assert_eq!(metadata(&outage, "grpc-retry-pushback-ms"), Some("2000"));
    assert_eq!(
        metadata(&outage, "idempotency-problem"),
        Some("urn:tower-idempotency:problem:store-unavailable")
    );
    assert_eq!(orders.runs(), 0);
}

#[tokio::test]
async fn streaming_and_unnamed_calls_pass_through_untouched() {
    let orders = Orders::default();
    let mut server = start(orders.clone(), layer(MemoryStore::new())).await;
    server
        .client
        .create_order(keyed(order("tea", 1), "stream-1"))
        .await
        .unwrap();
    for _ in 0..2 {
        // Keyed, yet not named: each call runs, and none is a replay.
        let mut stream = server
            .client
            .watch_orders(keyed(WatchOrdersRequest {}, "stream-1"))
            .await
            .unwrap();
        assert!(!replayed(&stream));
        let mut seen = Vec::new();
        while let Some(order) = stream.get_mut().message().await.unwrap() {
            seen.push(order.id);
        }
        assert_eq!(seen, [1]);
        let count = server
            .client
            .count_orders(keyed(CountOrdersRequest {}, "stream-1"))
            .await
            .unwrap();
        assert!(!replayed(&count));
        assert_eq!(count.into_inner().count, 1);
    }
    // A second order under a new key, and the count follows: reads were never replayed.
    server
        .client
        .create_order(keyed(order("cake", 1), "stream-2"))
        .await
        .unwrap();
    let count = server
        .client
        .count_orders(keyed(CountOrdersRequest {}, "stream-1"))
        .await
        .unwrap();
    assert_eq!(count.into_inner().count, 2);
}

#[test]
fn a_malformed_method_path_is_refused_when_the_layer_is_built() {
    for bad in ["orders.v1.Orders/CreateOrder", "/CreateOrder", "/a/b/c"] {
        let err = IdempotencyLayer::new(MemoryStore::new())
            .grpc_methods([bad])
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(err.knob(), "grpc_methods");
        assert!(err.to_string().contains(bad), "{err}");
    }
}
