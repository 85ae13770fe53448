//! The `orders.v1.Orders` gRPC service of the `grpc` example and its tests: its messages,
//! its generated server and client, and an implementation that counts its runs.
//!
//! `CreateOrder` is the write the idempotency layer protects; `CountOrders` (unary, a
//! read) and `WatchOrders` (a server stream) are not named, and pass through.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::Semaphore};
use tokio_stream::{wrappers::TcpListenerStream, Stream};
use tonic::{Request, Response, Status};
use tower_idempotency::{IdempotencyLayer, IdempotencyStore};

/// The generated server and client (`build.rs`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod orders {
    include!(concat!(env!("OUT_DIR"), "/orders.v1.Orders.rs"));
}

pub use orders::{orders_client::OrdersClient, orders_server::OrdersServer};

/// The path of the one write: `/orders.v1.Orders/CreateOrder`.
pub const CREATE_ORDER: &str = "/orders.v1.Orders/CreateOrder";

/// `CreateOrder`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateOrderRequest {
    /// What is ordered: `flaky` fails with `UNAVAILABLE` on its first run, `gated` waits
    /// for the service's gate, `crash` makes the handler panic.
    #[prost(string, tag = "1")]
    pub item: String,
    /// How many; 0 is refused with `INVALID_ARGUMENT`.
    #[prost(uint32, tag = "2")]
    pub quantity: u32,
    /// How long the handler takes (a slow payment provider).
    #[prost(uint32, tag = "3")]
    pub delay_ms: u32,
}

/// An order, as created.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Order {
    /// Its number, from 1.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// What was ordered.
    #[prost(string, tag = "2")]
    pub item: String,
    /// How many.
    #[prost(uint32, tag = "3")]
    pub quantity: u32,
}

/// `CountOrders`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountOrdersRequest {}

/// How many orders there are.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OrderCount {
    /// The number of orders.
    #[prost(uint64, tag = "1")]
    pub count: u64,
}

/// `WatchOrders`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchOrdersRequest {}

/// The service: orders in memory, and the number of times each method ran.
#[derive(Debug, Clone, Default)]
pub struct Orders {
    orders: Arc<Mutex<Vec<Order>>>,
    runs: Arc<AtomicUsize>,
    flaky_failed: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
}

impl Orders {
    /// A service whose `gated` orders wait for a permit of `gate`.
    pub fn gated(gate: Arc<Semaphore>) -> Self {
        Self {
            gate: Some(gate),
            ..Self::default()
        }
    }

    /// How many times `CreateOrder` ran (to its end or not).
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    /// How many orders were created.
    pub fn count(&self) -> usize {
        self.orders.lock().expect("orders").len()
    }
}

#[tonic::async_trait]
impl orders::orders_server::Orders for Orders {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        assert!(request.item != "crash", "the handler crashed");
        if request.quantity == 0 {
            return Err(Status::invalid_argument("quantity must be at least 1"));
        }
        if request.item == "flaky" && self.flaky_failed.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Status::unavailable(
                "the payment provider is down; try again",
            ));
        }
        if let (Some(gate), "gated") = (&self.gate, request.item.as_str()) {
            gate.acquire().await.expect("gate").forget();
        }
        tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        let mut orders = self.orders.lock().expect("orders");
        let order = Order {
            id: orders.len() as u64 + 1,
            item: request.item,
            quantity: request.quantity,
        };
        orders.push(order.clone());
        Ok(Response::new(order))
    }

    async fn count_orders(
        &self,
        _request: Request<CountOrdersRequest>,
    ) -> Result<Response<OrderCount>, Status> {
        Ok(Response::new(OrderCount {
            count: self.count() as u64,
        }))
    }

    type WatchOrdersStream = Pin<Box<dyn Stream<Item = Result<Order, Status>> + Send>>;

    async fn watch_orders(
        &self,
        _request: Request<WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let orders = self.orders.lock().expect("orders").clone();
        let stream = tokio_stream::iter(orders.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The idempotency layer of the example: `CreateOrder` protected, on `store`.
pub fn layer<St: IdempotencyStore>(store: St) -> IdempotencyLayer<St> {
    IdempotencyLayer::new(store)
        .grpc_methods([CREATE_ORDER])
        .expect("a valid method path")
}

/// Serves `orders` behind `layer` on `listener` (a tonic server, HTTP/2), until the task
/// is dropped.
pub async fn serve<St: IdempotencyStore>(
    listener: TcpListener,
    orders: Orders,
    layer: IdempotencyLayer<St>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(layer)
        .add_service(OrdersServer::new(orders))
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await
}
