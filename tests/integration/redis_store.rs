//! `RedisStore` against the real servers: one server at `REDIS_URL`, and a Redis Cluster
//! at `REDIS_CLUSTER_URL` (`redis-cluster://host:port,host:port,…`).

use std::collections::HashMap;

use redis::{aio::ConnectionLike, cluster::NodeAddress, FromRedisValue};
use tower_idempotency::store::{RecordKey, RedisStore, StoreError};

use crate::{
    backends::{server_addr, store, url_via, Backend},
    cleanup::Written,
    proxy::{Protocol, Proxies, Proxy},
};

/// One Redis server.
pub(crate) struct Redis;

/// A Redis Cluster (three primaries in CI).
pub(crate) struct RedisCluster;

/// The node URLs of a `redis-cluster://` URL, or `None` for one server.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let hosts = url.strip_prefix("redis-cluster://")?;
    Some(
        hosts
            .split(',')
            .map(|host| format!("redis://{host}"))
            .collect(),
    )
}

/// Runs `cmd` on the server, or on the cluster node serving its key.
pub(crate) async fn query<T: FromRedisValue>(url: &str, cmd: &redis::Cmd) -> T {
    query_each(url, std::slice::from_ref(cmd))
        .await
        .pop()
        .unwrap()
}

/// Runs each of `cmds` in turn over one connection.
async fn query_each<T: FromRedisValue>(url: &str, cmds: &[redis::Cmd]) -> Vec<T> {
    async fn on<T: FromRedisValue>(
        connection: &mut impl ConnectionLike,
        cmds: &[redis::Cmd],
    ) -> Vec<T> {
        let mut replies = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            replies.push(cmd.query_async(connection).await.unwrap());
        }
        replies
    }
    match cluster_nodes(url) {
        Some(nodes) => {
            let client = redis::cluster::ClusterClient::new(nodes).unwrap();
            on(&mut client.get_async_connection().await.unwrap(), cmds).await
        }
        None => {
            let client = redis::Client::open(url).unwrap();
            on(
                &mut client.get_multiplexed_async_connection().await.unwrap(),
                cmds,
            )
            .await
        }
    }
}

/// The primaries of the cluster at `url`, as `host:port`.
async fn primaries(url: &str) -> Vec<String> {
    let nodes: String = query(url, &redis::cmd("CLUSTER").arg("NODES").clone()).await;
    nodes
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(2)
                .is_some_and(|flags| flags.contains("master"))
        })
        .map(|line| {
            let addr = line.split(' ').nth(1).unwrap();
            addr.split('@').next().unwrap().to_owned()
        })
        .collect()
}

/// Deletes the keys in `written` from the server at `url` (one node of a cluster: keys
/// found by `SCAN` on a primary live on it).
async fn remove_on(url: &str, written: &Written) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    for part in &written.containing {
        let escaped: String = part
            .chars()
            .flat_map(|c| {
                let special = matches!(c, '*' | '?' | '[' | ']' | '\\');
                special.then_some('\\').into_iter().chain([c])
            })
            .collect();
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{escaped}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .unwrap();
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    for key in keys {
        let _: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

macro_rules! redis_backend {
    ($backend:ty, $var:literal) => {
        impl Backend for $backend {
            type Store = RedisStore;
            const VAR: &'static str = $var;
            const PROTOCOL: Protocol = Protocol::Resp;

            async fn connect(url: &str) -> Result<RedisStore, StoreError> {
                RedisStore::connect(url).await
            }

            async fn proxied(url: &str) -> (RedisStore, Proxies) {
                proxied(url).await
            }

            async fn truncate_response(url: &str, key: &RecordKey) {
                let response: Vec<u8> =
                    query(url, redis::cmd("HGET").arg(key.as_str()).arg("resp")).await;
                assert!(response.len() > 5, "a completed record");
                let hset = redis::cmd("HSET")
                    .arg(key.as_str())
                    .arg("resp")
                    .arg(&response[..5])
                    .clone();
                let _: i64 = query(url, &hset).await;
            }

            async fn put_foreign(url: &str, key: &RecordKey) {
                let set = redis::cmd("SET")
                    .arg(key.as_str())
                    .arg("someone else's string")
                    .arg("EX")
                    .arg(60)
                    .clone();
                let () = query(url, &set).await;
            }

            async fn put_record(
                url: &str,
                key: &RecordKey,
                fingerprint: &[u8; 64],
                response: &[u8],
            ) {
                let hset = redis::cmd("HSET")
                    .arg(key.as_str())
                    .arg("v")
                    .arg("2")
                    .arg("fp")
                    .arg(&fingerprint[..])
                    .arg("resp")
                    .arg(response)
                    .clone();
                let _: i64 = query(url, &hset).await;
                let _: i64 = query(url, redis::cmd("EXPIRE").arg(key.as_str()).arg(60)).await;
            }

            async fn put_neither(url: &str, key: &RecordKey) {
                let hset = redis::cmd("HSET")
                    .arg(key.as_str())
                    .arg("v")
                    .arg("2")
                    .arg("fp")
                    .arg(&[7u8; 64][..])
                    .clone();
                let _: i64 = query(url, &hset).await;
                let _: i64 = query(url, redis::cmd("EXPIRE").arg(key.as_str()).arg(60)).await;
            }

            async fn remove(url: &str, written: &Written) {
                let deletes: Vec<redis::Cmd> = written
                    .exact
                    .iter()
                    .map(|key| redis::cmd("DEL").arg(key).clone())
                    .collect();
                let _: Vec<i64> = query_each(url, &deletes).await;
                if written.containing.is_empty() {
                    return;
                }
                match cluster_nodes(url) {
                    None => remove_on(url, written).await,
                    Some(_) => {
                        for node in primaries(url).await {
                            remove_on(&format!("redis://{node}"), written).await;
                        }
                    }
                }
            }
        }
    };
}

redis_backend!(Redis, "REDIS_URL");
redis_backend!(RedisCluster, "REDIS_CLUSTER_URL");

/// A store whose every connection goes through a proxy: one for a server, one per node
/// of a cluster (the cluster client maps each node's address to its proxy).
async fn proxied(url: &str) -> (RedisStore, Proxies) {
    let Some(_) = cluster_nodes(url) else {
        let proxy = Proxy::start(server_addr(url), Protocol::Resp).await;
        let store = store::<Redis>(&url_via(url, proxy.addr())).await;
        return (store, Proxies::new(vec![proxy]));
    };
    let mut map = HashMap::new();
    let mut proxies = Vec::new();
    for node in primaries(url).await {
        let addr: std::net::SocketAddr = node.parse().unwrap();
        let proxy = Proxy::start(addr, Protocol::Resp).await;
        map.insert(
            NodeAddress::new(addr.ip().to_string(), addr.port()),
            NodeAddress::new(proxy.addr().ip().to_string(), proxy.addr().port()),
        );
        proxies.push(proxy);
    }
    let seeds: Vec<String> = proxies
        .iter()
        .map(|proxy| format!("redis://{}", proxy.addr()))
        .collect();
    let client = redis::cluster::ClusterClient::builder(seeds)
        .node_address_map(map)
        .connection_timeout(std::time::Duration::from_secs(2))
        .response_timeout(std::time::Duration::from_secs(2))
        .retries(2)
        .build()
        .unwrap();
    let connection = client.get_async_connection().await.unwrap();
    let store = RedisStore::with_cluster_connection(connection)
        .await
        .unwrap();
    (store, Proxies::new(proxies))
}

/// A node that lost its scripts (restarted, failed over to a replica that never loaded
/// them, or newly serving the key's slot after a resharding) answers `NOSCRIPT`: the
/// store loads the script and runs it again, and nothing runs twice.
async fn lost_scripts_are_loaded_again<B: Backend<Store = RedisStore>>(url: &str) {
    let counter = crate::support::Counter::default();
    let app = crate::support::routes(counter.clone()).layer(
        tower_idempotency::IdempotencyLayer::new(store::<B>(url).await),
    );
    let key = crate::support::unique("noscript");
    let request = || crate::support::post_with_key("/orders", &key, "x");
    let () = query(url, &redis::cmd("SCRIPT").arg("FLUSH").clone()).await;
    let first = crate::support::send(&app, request()).await;
    assert_eq!(first.status, axum::http::StatusCode::CREATED);
    let () = query(url, &redis::cmd("SCRIPT").arg("FLUSH").clone()).await;
    let retry = crate::support::send(&app, request()).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(counter.runs(), 1);
}

#[cfg_attr(redis_url_unset, ignore = "REDIS_URL is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_scripts_are_loaded_again_on_one_server() {
    let url = crate::backends::url::<Redis>("lost_scripts_are_loaded_again");
    lost_scripts_are_loaded_again::<Redis>(&url).await;
}

#[cfg_attr(redis_cluster_url_unset, ignore = "REDIS_CLUSTER_URL is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_scripts_are_loaded_again_on_a_cluster() {
    let url = crate::backends::url::<RedisCluster>("lost_scripts_are_loaded_again");
    lost_scripts_are_loaded_again::<RedisCluster>(&url).await;
}

crate::backends::backend_tests!(
    crate::redis_store::Redis,
    #[cfg_attr(redis_url_unset, ignore = "REDIS_URL is not set")]
);

mod cluster {
    crate::backends::backend_tests!(
        crate::redis_store::RedisCluster,
        #[cfg_attr(redis_cluster_url_unset, ignore = "REDIS_CLUSTER_URL is not set")]
    );
}
