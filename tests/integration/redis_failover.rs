//! Failover on a Redis Cluster of its own (three primaries, one replica each), started and
//! stopped by the test so that it never degrades the cluster other tests share. Runs with
//! the other cluster tests (`REDIS_CLUSTER_URL` set), and needs `redis-server` and
//! `redis-cli` on the `PATH`.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use axum::http::StatusCode;
use tower_idempotency::{
    store::{IdempotencyStore, RecordKey, RedisStore, StoreErrorKind},
    IdempotencyLayer,
};

use crate::support::{app, post_with_key, send, unique, Answer};

/// Six `redis-server` processes in one cluster; killed, and their files removed, on drop.
struct OwnCluster {
    ports: Vec<u16>,
    dir: PathBuf,
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for port in &self.ports {
            if let Some(pid) = self.pid(*port) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_port(taken: &[u16]) -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bus_free = port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if bus_free && !taken.contains(&port) {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli on the PATH");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl OwnCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("idem-failover-{}", uuid::Uuid::new_v4()));
        let mut ports = Vec::new();
        for _ in 0..6 {
            ports.push(free_port(&ports));
        }
        let cluster = Self { ports, dir };
        for port in &cluster.ports {
            let node = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node).unwrap();
            let status = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .arg("--cluster-config-file")
                .arg(node.join("nodes.conf"))
                .arg("--dir")
                .arg(&node)
                .arg("--pidfile")
                .arg(node.join("pid"))
                .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
                .stdout(Stdio::null())
                .status()
                .expect("redis-server on the PATH");
            assert!(status.success(), "redis-server on port {port}");
        }
        for port in &cluster.ports {
            wait_until(&format!("node {port} answers"), || {
                cli(*port, &["ping"]).trim() == "PONG"
            });
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create");
        wait_until(
            "every node sees the cluster ok, every replica in sync",
            || {
                cluster.ports.iter().all(|port| {
                    cli(*port, &["cluster", "info"]).contains("cluster_state:ok")
                        && !cli(*port, &["info", "replication"]).contains("master_link_status:down")
                })
            },
        );
        cluster
    }

    fn pid(&self, port: u16) -> Option<String> {
        std::fs::read_to_string(self.dir.join(port.to_string()).join("pid"))
            .ok()
            .map(|pid| pid.trim().to_owned())
    }

    fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// The port of the primary serving `key`, and of its replica.
    fn primary_and_replica(&self, key: &RecordKey) -> (u16, u16) {
        let any = self.alive()[0];
        let slot: u16 = cli(any, &["cluster", "keyslot", key.as_str()])
            .trim()
            .parse()
            .unwrap();
        let nodes = cli(any, &["cluster", "nodes"]);
        let port_of = |line: &str| -> u16 {
            let addr = line.split(' ').nth(1).unwrap();
            addr.split('@')
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let primary = nodes
            .lines()
            .find(|line| {
                line.contains("master") && !line.contains("fail") && line.split(' ').skip(8).any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
                })
            })
            .expect("a primary serves the slot");
        let id = primary.split(' ').next().unwrap();
        let replica = nodes
            .lines()
            .find(|line| line.split(' ').nth(3) == Some(id))
            .expect("the primary has a replica");
        (port_of(primary), port_of(replica))
    }

    fn alive(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|port| cli(*port, &["ping"]).trim() == "PONG")
            .collect()
    }

    fn signal(&self, port: u16, signal: &str) {
        let pid = self.pid(port).expect("the node's pid");
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..300 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

async fn store(url: &str) -> RedisStore {
    RedisStore::connect(url)
        .await
        .expect("the test's own cluster")
        .wait_for_replicas(1, Duration::from_millis(500))
        .await
        .unwrap()
}

/// With `wait_for_replicas`, the primary holding an in-flight claim is SIGKILLed, its
/// replica takes over, and the retry finds the claim: it is not run again, and once the
/// first run completes (on the new primary), the retry replays it. A replica that
/// cannot acknowledge (stopped) makes the claim a `503`: nothing runs, the key is free.
#[cfg_attr(redis_cluster_url_unset, ignore = "REDIS_CLUSTER_URL is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_does_not_run_an_acknowledged_claim_again() {
    let cluster = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .unwrap();
    let url = cluster.url();
    let (a, count) = app(IdempotencyLayer::new(store(&url).await));
    let key = unique("failover");
    let record_key = RecordKey::new("idem", "", &key);
    let (primary, replica) = cluster.primary_and_replica(&record_key);

    // A stopped replica acknowledges nothing: the claim is given back and answered 503.
    cluster.signal(replica, "-STOP");
    let refused = send(&a, post_with_key("/slow", &key, "x")).await;
    cluster.signal(replica, "-CONT");
    refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert_eq!(
        count.runs(),
        0,
        "nothing ran on a claim the replica did not hold"
    );
    let probe = store(&url).await;
    assert!(
        probe.get(&record_key).await.unwrap().is_none(),
        "the claim was released"
    );

    // The claim reaches the replica before the handler runs.
    let first = tokio::spawn({
        let (a, key) = (a.clone(), key.clone());
        async move { send(&a, post_with_key("/slow", &key, "x")).await }
    });
    crate::support::eventually("the handler runs", async || count.runs() == 1).await;
    cluster.signal(primary, "-KILL");
    tokio::task::spawn_blocking({
        let ports = cluster.ports.clone();
        move || {
            wait_until("the replica is promoted", || {
                cli(replica, &["role"]).starts_with("master")
                    && ports
                        .iter()
                        .filter(|p| **p != primary)
                        .all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
            })
        }
    })
    .await
    .unwrap();

    // Another instance retries: the promoted replica holds the claim.
    let (b, count_b) = app(IdempotencyLayer::new(store(&url).await));
    let mut retry: Answer = send(&b, post_with_key("/slow", &key, "x")).await;
    for _ in 0..50 {
        if retry.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        retry = send(&b, post_with_key("/slow", &key, "x")).await;
    }
    retry.assert_problem(StatusCode::CONFLICT, "in-progress");
    assert_eq!(
        count.runs() + count_b.runs(),
        1,
        "not run again after the failover"
    );

    // The first run finishes; its completion lands on the new primary.
    count.gate.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    crate::support::eventually("the completion is recorded", async || {
        send(&b, post_with_key("/slow", &key, "x")).await.replayed()
    })
    .await;
    let replay = send(&b, post_with_key("/slow", &key, "x")).await;
    assert_eq!(replay.body, first.body);
    assert_eq!(count.runs() + count_b.runs(), 1);
    drop(cluster);
}

/// Mistakes in the option are refused when the store is built.
#[cfg_attr(redis_cluster_url_unset, ignore = "REDIS_CLUSTER_URL is not set")]
#[tokio::test]
async fn wait_for_replicas_refuses_what_cannot_work() {
    let url = crate::backends::url::<crate::redis_store::RedisCluster>("wait_for_replicas");
    let connect = || RedisStore::connect(&url);
    for (replicas, timeout) in [
        (0, Duration::from_millis(100)),
        (1, Duration::ZERO),
        (1, Duration::from_micros(999)),
        (1, Duration::from_secs(2)),
    ] {
        let err = connect()
            .await
            .unwrap()
            .wait_for_replicas(replicas, timeout)
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            StoreErrorKind::Configuration,
            "{replicas} {timeout:?}: {err}"
        );
    }
    // The shared cluster has no replicas: every claim is refused, and nothing runs.
    let store = connect()
        .await
        .unwrap()
        .wait_for_replicas(1, Duration::from_millis(50))
        .await
        .unwrap();
    let (app, counter) = app(IdempotencyLayer::new(store));
    let answer = send(&app, post_with_key("/orders", &unique("no-replica"), "x")).await;
    answer.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable");
    assert_eq!(counter.runs(), 0);
}

/// The waits of a store that opened its own connections go over connections of their
/// own: with the replica stopped, claims of different keys wait for it side by side (each
/// `WAIT` holds up the connection it is sent on; on one connection they would wait one
/// after the other), and a read is answered meanwhile.
#[cfg_attr(redis_cluster_url_unset, ignore = "REDIS_CLUSTER_URL is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_replicas_proceed_side_by_side() {
    use tower_idempotency::store::{Fingerprint, LockToken};
    let cluster = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .unwrap();
    let store = RedisStore::connect(&cluster.url())
        .await
        .unwrap()
        .wait_for_replicas(1, Duration::from_millis(1900))
        .await
        .unwrap();
    // One hash tag: every key on one primary, with one replica.
    let tag = uuid::Uuid::new_v4();
    // Eight keys: each keeps to one of the store's eight waiting connections (by a hash
    // of the key), so at least two share none (all eight on one: 8^-7).
    let keys: Vec<RecordKey> = (0..8)
        .map(|i| RecordKey::new("idem", "", &format!("side-{{{tag}}}-{i}")))
        .collect();
    let (primary, replica) = cluster.primary_and_replica(&keys[0]);

    cluster.signal(replica, "-STOP");
    let fp = Fingerprint::new([1; 32], [2; 32]);
    let claims: Vec<_> = keys
        .iter()
        .map(|key| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let token = LockToken::generate();
                store
                    .begin(&key, &fp, &token, Duration::from_secs(30))
                    .await
            })
        })
        .collect();
    // Clients blocked (`flags=b`) in a `WAIT` right now (`cmd` is a client's last command,
    // whether or not it still runs).
    let waiting = move || {
        cli(primary, &["client", "list"])
            .lines()
            .filter(|client| {
                let field = |name: &str| {
                    client
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix(name))
                        .unwrap_or_default()
                        .to_owned()
                };
                field("cmd=") == "wait" && field("flags=").contains('b')
            })
            .count()
    };
    let all_waiting = tokio::task::spawn_blocking(move || {
        (0..150).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            waiting() >= 2
        })
    });
    assert!(all_waiting.await.unwrap(), "claims waiting side by side");
    let other = RecordKey::new("idem", "", &format!("other-{{{tag}}}"));
    assert_eq!(store.get(&other).await.unwrap(), None);
    assert!(
        claims.iter().all(|claim| !claim.is_finished()),
        "the read was answered while the claims still waited"
    );
    cluster.signal(replica, "-CONT");
    for claim in claims {
        // Acknowledged once the replica runs again, or refused (and released) if it
        // took longer than the wait: either way, settled.
        let _ = claim.await.unwrap();
    }
}

/// A completion tried again over another connection (a reconnect, or another store)
/// finds its first attempt landed (`2`): it is told spent only once the replicas hold
/// that first attempt. (The script writes again for the `WAIT` after it to cover: on a
/// server whose `WAIT` counts only the connection's own writes, that is what makes it so;
/// Redis 7.0, here, counts up to the offset of the connection's last command.)
#[cfg_attr(redis_cluster_url_unset, ignore = "REDIS_CLUSTER_URL is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_found_landed_is_spent_only_once_replicated() {
    use tower_idempotency::store::{Fingerprint, LockToken, StoredResponse};
    let cluster = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .unwrap();
    let (first, second) = (store(&cluster.url()).await, store(&cluster.url()).await);
    let key = RecordKey::new("idem", "", &unique("landed"));
    let (_, replica) = cluster.primary_and_replica(&key);
    let token = LockToken::generate();
    let fp = Fingerprint::new([3; 32], [4; 32]);
    first
        .begin(&key, &fp, &token, Duration::from_secs(30))
        .await
        .unwrap();
    let response = StoredResponse {
        status: StatusCode::CREATED,
        headers: Default::default(),
        body: Some("done".into()),
        trailers: None,
    };
    let ttl = Duration::from_secs(60);

    cluster.signal(replica, "-STOP");
    let unreplicated = first.complete(&key, &token, &response, ttl).await;
    assert_eq!(
        unreplicated.unwrap_err().kind(),
        StoreErrorKind::Unavailable
    );
    // Landed on the primary, not yet on the replica: not spent for the other store either.
    let again = second.complete(&key, &token, &response, ttl).await;
    assert_eq!(again.unwrap_err().kind(), StoreErrorKind::Unavailable);
    cluster.signal(replica, "-CONT");
    let spent = second.complete(&key, &token, &response, ttl).await;
    assert_eq!(spent.unwrap_err().kind(), StoreErrorKind::Fenced);
    first
        .get(&key)
        .await
        .unwrap()
        .expect("the completed record");
}
