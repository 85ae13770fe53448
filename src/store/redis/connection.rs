//! The connection a [`RedisStore`](super::RedisStore) talks over: one server or a cluster,
//! opened from a URL or handed in by the application.

use std::time::Duration;

use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    Cmd, Pipeline, RedisFuture, Value,
};

use crate::store::{StoreError, StoreErrorKind};

/// How long connecting and each reply may take on the connections the store opens.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// One server (through a connection manager that reconnects by itself) or a cluster
/// (through the cluster client, which routes each command to the node serving its key
/// and follows `MOVED` and `ASK`).
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

fn configuration(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::new(StoreErrorKind::Configuration, err)
}

/// A failed connect: a refused password or a client configuration the server rejects
/// is the application's to fix (no retry helps); anything else is an outage.
fn not_connected(err: redis::RedisError) -> StoreError {
    match err.kind() {
        redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig => {
            configuration(err)
        }
        _ => StoreError::unavailable(err),
    }
}

/// Root certificates to trust (PEM) instead of the system's, for `rediss://`.
pub(super) type Roots<'a> = Option<&'a [u8]>;

#[cfg(feature = "redis-tls")]
fn certificates(roots: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(roots.to_vec()),
    }
}

/// rustls picks its cryptography from its features; an application whose rustls has
/// both `ring` and `aws-lc-rs` would leave it undecided (a panic in `rediss://`
/// connects). Ours is ring, unless the application installed another first.
fn settle_tls_provider(url: &str) {
    #[cfg(feature = "redis-tls")]
    if url.starts_with("rediss") {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    #[cfg(not(feature = "redis-tls"))]
    let _ = url;
}

fn client(url: &str, roots: Roots<'_>) -> Result<redis::Client, StoreError> {
    settle_tls_provider(url);
    match roots {
        #[cfg(feature = "redis-tls")]
        Some(roots) => {
            redis::Client::build_with_tls(url, certificates(roots)).map_err(configuration)
        }
        #[cfg(not(feature = "redis-tls"))]
        Some(_) => Err(no_tls()),
        None => redis::Client::open(url).map_err(configuration),
    }
}

#[cfg(not(feature = "redis-tls"))]
fn no_tls() -> StoreError {
    StoreError::new(
        StoreErrorKind::Configuration,
        "this build has no TLS for Redis (enable the feature redis-tls)",
    )
}

/// Opens a connection manager to the server at `url` (`redis://` or `rediss://`).
pub(super) async fn single(url: &str, roots: Roots<'_>) -> Result<Connection, StoreError> {
    let client = client(url, roots)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(2);
    let connection = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(not_connected)?;
    Ok(Connection::Single(connection))
}

/// Opens a cluster connection, starting from the nodes at `urls` (`redis://` or
/// `rediss://` each; the cluster's other nodes are discovered).
pub(super) async fn cluster<I, U>(urls: I, roots: Roots<'_>) -> Result<Connection, StoreError>
where
    I: IntoIterator<Item = U>,
    U: AsRef<str>,
{
    let nodes = urls
        .into_iter()
        .map(|url| url.as_ref().to_owned())
        .collect::<Vec<_>>();
    if nodes.is_empty() {
        return Err(StoreError::new(
            StoreErrorKind::Configuration,
            "a Redis Cluster needs at least one node URL",
        ));
    }
    #[cfg(not(feature = "redis-tls"))]
    if roots.is_some() || nodes.iter().any(|node| node.starts_with("rediss://")) {
        return Err(no_tls());
    }
    for node in &nodes {
        settle_tls_provider(node);
    }
    let builder = ClusterClient::builder(nodes)
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .retries(2);
    #[cfg(feature = "redis-tls")]
    let builder = match roots {
        Some(roots) => builder.certs(certificates(roots)),
        None => builder,
    };
    let client = builder.build().map_err(configuration)?;
    let connection = client.get_async_connection().await.map_err(not_connected)?;
    Ok(Connection::Cluster(connection))
}

/// What a store opened its connection to, so that it can open more of the same (the
/// connections its waits for replicas go over).
pub(super) struct Opener {
    target: Target,
    roots: Option<Vec<u8>>,
}

enum Target {
    Single(String),
    Cluster(Vec<String>),
}

impl Opener {
    pub(super) fn single(url: &str, roots: Roots<'_>) -> Self {
        Self {
            target: Target::Single(url.to_owned()),
            roots: roots.map(<[u8]>::to_vec),
        }
    }

    pub(super) fn cluster(nodes: Vec<String>, roots: Roots<'_>) -> Self {
        Self {
            target: Target::Cluster(nodes),
            roots: roots.map(<[u8]>::to_vec),
        }
    }

    /// One more connection, as the first was opened.
    pub(super) async fn open(&self) -> Result<Connection, StoreError> {
        let roots = self.roots.as_deref();
        match &self.target {
            Target::Single(url) => single(url, roots).await,
            Target::Cluster(nodes) => cluster(nodes, roots).await,
        }
    }
}

/// The node URLs of `redis-cluster://[user:password@]host:port,host:port[/…]` (or
/// `rediss-cluster://`, over TLS), or `None` for a URL of another scheme.
pub(super) fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, StoreError>> {
    let (scheme, rest) = url.split_once("://")?;
    let node_scheme = match scheme {
        "redis-cluster" => "redis",
        "rediss-cluster" => "rediss",
        _ => return None,
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| format!("{node_scheme}://{user}{host}{tail}"))
        .collect();
    if nodes.is_empty() {
        return Some(Err(StoreError::new(
            StoreErrorKind::Configuration,
            format!("{scheme}:// needs at least one host:port, as in {scheme}://127.0.0.1:7000,127.0.0.1:7001"),
        )));
    }
    Some(Ok(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_node() {
        let nodes =
            cluster_nodes("redis-cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/?protocol=resp3")
                .unwrap()
                .unwrap();
        assert_eq!(
            nodes,
            [
                "redis://u:p@10.0.0.1:7000/?protocol=resp3",
                "redis://u:p@10.0.0.2:7001/?protocol=resp3"
            ]
        );
        assert_eq!(
            cluster_nodes("rediss-cluster://h:1").unwrap().unwrap(),
            ["rediss://h:1"]
        );
        assert!(cluster_nodes("redis://h:1").is_none());
        let err = cluster_nodes("redis-cluster://").unwrap().unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Configuration);
    }
}
