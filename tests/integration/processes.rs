//! Real `orders` processes sharing one store: split traffic, a crash, a paused process.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::task::JoinSet;
use tower_idempotency::store::{IdempotencyStore, RecordKey, RecordState};

use crate::{
    backends::{store, Backend},
    support::{orders_binary, read, unique, Answer},
};

/// The `Host` every request carries, as a load balancer in front of the processes keeps
/// it: the authority is part of the fingerprint.
const HOST: &str = "orders.test";

/// A plain HTTP/1 client.
fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `POST /orders` to the process at `addr`, with `key` and the shared `Host`.
fn order_request(addr: SocketAddr, key: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/orders"))
        .header("idempotency-key", key)
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// `POST /orders` to the process at `addr`, as it answers (or fails to).
pub(crate) async fn post_to(
    addr: SocketAddr,
    key: &str,
    body: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
    client().request(order_request(addr, key, body)).await
}

/// Where one test's processes keep their orders: each process's memory, or (on
/// PostgreSQL) a table of the test's own that they share, dropped by `clean_up`.
pub(crate) struct Shop {
    url: String,
    pub(crate) table: String,
}

impl Shop {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            table: format!("orders_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn shared(&self) -> bool {
        self.url.starts_with("postgres")
    }

    pub(crate) fn start(&self, lease_secs: u64) -> Orders {
        Orders::start(&self.url, lease_secs, &self.table)
    }

    /// The orders of all `processes`, counted once.
    pub(crate) async fn total(&self, processes: &[&Orders]) -> u64 {
        if self.shared() {
            return processes[0].order_count().await;
        }
        let mut total = 0;
        for process in processes {
            total += process.order_count().await;
        }
        total
    }

    pub(crate) async fn clean_up(self) {
        #[cfg(feature = "postgres")]
        if self.shared() {
            let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let sql = format!("DROP TABLE IF EXISTS {}", self.table);
            client.batch_execute(&sql).await.unwrap();
        }
    }
}

/// One `orders` process, killed when dropped.
pub(crate) struct Orders {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Orders {
    fn start(store_url: &str, lease_secs: u64, orders_table: &str) -> Self {
        let mut child = Command::new(orders_binary())
            .args([
                "--addr",
                "127.0.0.1:0",
                "--store",
                store_url,
                "--orders-table",
                orders_table,
                "--lease",
                &lease_secs.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("orders starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line from orders: {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(crate) async fn post(&self, key: &str, body: &str) -> Answer {
        let request = order_request(self.addr, key, body);
        read(client().request(request).await.expect("orders answers")).await
    }

    /// Posts, and posts again every 100 ms while the key is in progress (for up to
    /// 10 s): the first answer after the lease of a dead claim ran out.
    pub(crate) async fn post_until_not_in_progress(&self, key: &str, body: &str) -> Answer {
        let mut answer = self.post(key, body).await;
        for _ in 0..100 {
            if answer.status != StatusCode::CONFLICT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = self.post(key, body).await;
        }
        answer
    }

    pub(crate) async fn order_count(&self) -> u64 {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::get(format!("http://{}/orders", self.addr))
            .body(Full::default())
            .unwrap();
        read(client.request(request).await.unwrap()).await.json()["count"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Orders {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two processes, 64 concurrent identical requests split between them: one order.
pub(crate) async fn two_processes_run_once<B: Backend>(url: &str) {
    let shop = Shop::new(url);
    let a = std::sync::Arc::new(shop.start(30));
    let b = std::sync::Arc::new(shop.start(30));
    let key = unique("processes");
    let body = r#"{"item":"lamp","quantity":1,"delay_ms":1000}"#;
    let mut requests = JoinSet::new();
    for i in 0..64 {
        let orders = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        requests.spawn(async move { orders.post(&key, body).await });
    }
    let answers = requests.join_all().await;
    let created: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for answer in answers.iter().filter(|a| a.status != StatusCode::CREATED) {
        answer.assert_problem(StatusCode::CONFLICT, "in-progress");
    }
    assert_eq!(shop.total(&[&a, &b]).await, 1);
    for orders in [&a, &b] {
        let retry = orders.post(&key, body).await;
        assert!(retry.replayed());
        assert_eq!(retry.body, created[0].body);
    }
    shop.clean_up().await;
}

/// Waits until the key is claimed in the store.
async fn in_flight<B: Backend>(url: &str, key: &str) {
    let store = store::<B>(url).await;
    let record_key = RecordKey::new("idem", "", key);
    crate::support::eventually("the first request holds the key", async || {
        matches!(store.get(&record_key).await.unwrap(), Some(r) if r.state == RecordState::InFlight)
    })
    .await;
}

/// Kill -9 mid-handler: until the lease expires a retry is told to wait; after, it runs
/// once, on the surviving process.
pub(crate) async fn crashed_process_is_taken_over<B: Backend>(url: &str) {
    let shop = Shop::new(url);
    let mut a = shop.start(2);
    let b = shop.start(2);
    let key = unique("crash");
    let body = r#"{"item":"chair","quantity":2,"delay_ms":1500}"#;
    let first = tokio::spawn({
        let (addr, key) = (a.addr, key.clone());
        async move {
            client()
                .request(order_request(addr, &key, body))
                .await
                .is_err()
        }
    });
    in_flight::<B>(url, &key).await;
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    assert!(first.await.unwrap(), "the crashed process never answered");

    b.post(&key, body)
        .await
        .assert_problem(StatusCode::CONFLICT, "in-progress");
    let retry = b.post_until_not_in_progress(&key, body).await;
    assert_eq!(
        retry.status,
        StatusCode::CREATED,
        "the retry ran after the lease expired"
    );
    assert!(!retry.replayed());
    assert_eq!(shop.total(&[&b]).await, 1);
    let again = b.post(&key, body).await;
    assert!(again.replayed());
    assert_eq!(again.body, retry.body);
    shop.clean_up().await;
}

/// A process paused past its lease is taken over; when it resumes and finishes, its write
/// is fenced off: the record stays the new owner's.
pub(crate) async fn paused_process_is_fenced<B: Backend>(url: &str) {
    let shop = Shop::new(url);
    let a = std::sync::Arc::new(shop.start(1));
    let b = shop.start(1);
    let key = unique("paused");
    let body = r#"{"item":"desk","quantity":1,"delay_ms":300}"#;
    let first = tokio::spawn({
        let (a, key) = (a.clone(), key.clone());
        async move { a.post(&key, body).await }
    });
    in_flight::<B>(url, &key).await;
    a.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(2500)).await; // well past the 1 s lease
    let taken_over = b.post(&key, body).await;
    assert_eq!(taken_over.status, StatusCode::CREATED);
    a.signal("-CONT");
    let zombie = first.await.unwrap();
    if shop.shared() {
        // Its order and its completion were one transaction, fenced: nothing committed,
        // and the client hears that the key is another request's.
        zombie.assert_problem(StatusCode::CONFLICT, "in-progress");
        assert_eq!(shop.total(&[&b]).await, 1, "one order");
    } else {
        assert_eq!(
            zombie.status,
            StatusCode::CREATED,
            "the paused request still answers its client"
        );
    }
    // The zombie's record write was fenced: both processes replay the new owner's response.
    for orders in [&*a, &b] {
        let replay = orders.post(&key, body).await;
        assert!(replay.replayed());
        assert_eq!(replay.body, taken_over.body);
    }
    let metrics = {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::get(format!("http://{}/metrics", a.addr))
            .body(Full::default())
            .unwrap();
        read(client.request(request).await.unwrap()).await.json()
    };
    assert_eq!(
        metrics["record_failures"], 1,
        "the fenced write was counted"
    );
    shop.clean_up().await;
}

/// Failure row "graceful shutdown": the client gives up mid-handler, then the process is
/// told to stop (SIGTERM). It waits for the handler, records it, and exits cleanly; the
/// retry on another process replays the order instead of finding the key stuck in flight.
pub(crate) async fn graceful_shutdown_finishes_the_write<B: Backend>(url: &str) {
    let shop = Shop::new(url);
    let mut a = shop.start(30);
    let b = shop.start(30);
    let key = unique("shutdown");
    let body = r#"{"item":"sofa","quantity":1,"delay_ms":1500}"#;
    let gave_up = tokio::spawn({
        let (addr, key) = (a.addr, key.clone());
        async move {
            let request = client().request(order_request(addr, &key, body));
            tokio::time::timeout(Duration::from_millis(300), request)
                .await
                .is_err()
        }
    });
    in_flight::<B>(url, &key).await;
    assert!(
        gave_up.await.unwrap(),
        "the client left before the order was done"
    );
    a.signal("-TERM");
    let mut exited = None;
    for _ in 0..100 {
        exited = a.child.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("the process stops within 5 s");
    assert!(status.success(), "a clean exit: {status}");
    let retry = b.post(&key, body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(
        retry.replayed(),
        "the order finished before the process exited"
    );
    // B never ran it: its own orders are none, or the shared table holds A's one.
    let expected = u64::from(shop.shared());
    assert_eq!(shop.total(&[&b]).await, expected, "and B never ran it");
    shop.clean_up().await;
}
