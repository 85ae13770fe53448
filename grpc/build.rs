//! Generates the `orders.v1.Orders` service's server and client from its Rust definition
//! (the messages are `prost` structs in `lib.rs`), so no `protoc` is needed.

use tonic_build::manual::{Builder, Method, Service};

fn method(
    name: &str,
    route: &str,
    input: &str,
    output: &str,
) -> tonic_build::manual::MethodBuilder {
    Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::{input}"))
        .output_type(format!("crate::{output}"))
        .codec_path("tonic_prost::ProstCodec")
}

fn main() {
    let orders = Service::builder()
        .name("Orders")
        .package("orders.v1")
        .method(method("create_order", "CreateOrder", "CreateOrderRequest", "Order").build())
        .method(
            method(
                "count_orders",
                "CountOrders",
                "CountOrdersRequest",
                "OrderCount",
            )
            .build(),
        )
        .method(
            method("watch_orders", "WatchOrders", "WatchOrdersRequest", "Order")
                .server_streaming()
                .build(),
        )
        .build();
    Builder::new().compile(&[orders]);
    println!("cargo:rerun-if-changed=build.rs");
}
