//! [`RedisStore`]: records in Redis, one hash per key, every operation one Lua script.

mod connection;
mod replicas;
mod scripts;

use std::{fmt, sync::Arc, time::Duration};

use redis::{aio::ConnectionManager, cluster_async::ClusterConnection, FromRedisValue, Value};

use self::{
    connection::Connection,
    replicas::{Call, Replicas},
    scripts::{fingerprint, parse_reply, Lua, Scripts, VERSION},
};
use super::{
    codec, Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, RecordState,
    StoreError, StoredResponse,
};

/// A store in Redis, for many instances behind a load balancer (feature `redis`): one
/// server, or a Redis Cluster (Valkey and ElastiCache in cluster mode alike).
///
/// Each record is one hash under the record key (`{namespace}:{scope length}:{scope}:{key}`,
/// e.g. `idem:0::order-7f3a`) with the fields `v` (format version), `fp` (the 64-byte
/// fingerprint: request and caller digests), `tok` (the 16-byte lock token, while in
/// flight), `resp` (the encoded response, once completed) and `by` (the token that
/// completed it). Records expire by Redis TTL: the lease while in flight, the record TTL
/// once completed. Every operation is one Lua script on one key, so each is atomic and,
/// on a cluster, runs on the one node serving that key. A replay costs one round trip; a
/// fresh request two (claim, complete), plus one renewal per third of a lease for a slow
/// handler.
///
/// ```no_run
/// use tower_idempotency::{store::RedisStore, IdempotencyLayer};
///
/// # async fn run() -> Result<(), tower_idempotency::store::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// // Or a cluster, from any of its nodes:
/// let cluster = RedisStore::connect("redis-cluster://10.0.0.1:7000,10.0.0.2:7000").await?;
/// let layer = IdempotencyLayer::new(store);
/// # Ok(()) }
/// ```
///
/// # Failover
///
/// Redis replicates asynchronously. Without [`wait_for_replicas`](Self::wait_for_replicas),
/// a claim acknowledged by a primary that then dies before its replica received it is
/// lost with it: the retry, served by the promoted replica, finds no record and runs the
/// request again. With `wait_for_replicas(n, timeout)`, each claim, completion and
/// renewal is followed (in the same round trip) by `WAIT n timeout`, and the layer goes on
/// only once `n` replicas hold the write: a claim that does not reach them in time is
/// released and answered `503` (nothing ran); a completion that does not is retried like
/// any failed completion, while the claim is held, and counted. The cost is the time the
/// replicas take to acknowledge, on every claim and completion (about one replica round
/// trip each), and a `503` whenever fewer than `n` replicas are reachable.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    scripts: Arc<Scripts>,
    replicas: Option<Replicas>,
    /// The connection's reply timeout, where the store opened the connection itself.
    reply_timeout: Option<Duration>,
    /// How to open more connections like it, where the store opened it itself.
    opener: Option<Arc<connection::Opener>>,
    /// The connections writes go over, by key, when they are followed by `WAIT` (none:
    /// the one connection).
    waiting: replicas::Waiting,
}

impl RedisStore {
    /// Connects to Redis at `url`, and loads the scripts:
    ///
    /// - `redis://host:port/db` (or `rediss://…` over TLS): one server, through a
    ///   connection manager that reconnects by itself after a failure;
    /// - `redis-cluster://host:port,host:port` (or `rediss-cluster://…`): a Redis Cluster,
    ///   starting from these nodes (one is enough; the others are discovered). A
    ///   `user:password@` before the hosts and a `/?…` after them apply to every node.
    ///
    /// Connecting and each reply time out after 2 seconds. `rediss://` needs the
    /// feature `redis-tls`, and checks the server's certificate against the system's
    /// roots (see `connect_with_roots`, with the same feature, for others).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::open(url, None).await
    }

    /// Like [`connect`](Self::connect), over TLS (`rediss://` or `rediss-cluster://`),
    /// trusting the root certificates in `pem` (one or more, PEM-encoded) instead of
    /// the system's: for a private certificate authority. The server's certificate must
    /// name the host the URL gives.
    #[cfg(feature = "redis-tls")]
    ///
    /// Fails with [`StoreErrorKind::Configuration`](crate::store::StoreErrorKind::Configuration) when `pem` holds no certificate or
    /// a malformed one.
    pub async fn connect_with_roots(url: &str, pem: &[u8]) -> Result<Self, StoreError> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let refuse = StoreError::configuration;
        let mut certificates = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            certificate.map_err(|err| refuse(format!("the root certificates: {err}")))?;
            certificates += 1;
        }
        if certificates == 0 {
            return Err(refuse(
                "the root certificates hold no PEM certificate (-----BEGIN CERTIFICATE-----)"
                    .to_owned(),
            ));
        }
        Self::open(url, Some(pem)).await
    }

    async fn open(url: &str, roots: connection::Roots<'_>) -> Result<Self, StoreError> {
        let opener = match connection::cluster_nodes(url) {
            Some(nodes) => connection::Opener::cluster(nodes?, roots),
            None => connection::Opener::single(url, roots),
        };
        let mut store = Self::over(opener.open().await?).await?;
        store.reply_timeout = Some(connection::TIMEOUT);
        store.opener = Some(Arc::new(opener));
        Ok(store)
    }

    /// Connects to a Redis Cluster, starting from the nodes at `urls` (`redis://host:port`
    /// or `rediss://…` each), and loads the scripts on every primary.
    pub async fn connect_cluster<I, U>(urls: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let nodes: Vec<String> = urls
            .into_iter()
            .map(|url| url.as_ref().to_owned())
            .collect();
        let opener = connection::Opener::cluster(nodes, None);
        let mut store = Self::over(opener.open().await?).await?;
        store.reply_timeout = Some(connection::TIMEOUT);
        store.opener = Some(Arc::new(opener));
        Ok(store)
    }

    /// A store over a connection manager the application already has. Loads the scripts,
    /// so that every later operation is a single `EVALSHA`.
    pub async fn with_connection_manager(
        connection: ConnectionManager,
    ) -> Result<Self, StoreError> {
        Self::over(Connection::Single(connection)).await
    }

    /// A store over a cluster connection the application already has (from
    /// `redis::cluster::ClusterClient::get_async_connection`). Loads the scripts on the
    /// nodes, where it can (a node down at that moment is not an error); a node that
    /// lacks them later (after a failover, a restart or a resharding) answers
    /// `NOSCRIPT`, and the store sends that call's script whole (`EVAL`, which also
    /// leaves it loaded there).
    pub async fn with_cluster_connection(
        connection: ClusterConnection,
    ) -> Result<Self, StoreError> {
        Self::over(Connection::Cluster(connection)).await
    }

    async fn over(mut connection: Connection) -> Result<Self, StoreError> {
        let scripts = Scripts::new();
        let cluster = matches!(connection, Connection::Cluster(_));
        for lua in scripts.all() {
            let loaded = lua
                .script()
                .prepare_invoke()
                .load_async(&mut connection)
                .await;
            match loaded {
                Ok(_) => {}
                // `SCRIPT LOAD` goes to every node of a cluster and fails if one is down;
                // a node without the script is served by `EVAL` when it answers NOSCRIPT.
                Err(err) if cluster => {
                    tracing::warn!(error = %err, "could not load the scripts on every cluster node; a node without them gets each script whole");
                    break;
                }
                Err(err) => return Err(StoreError::unavailable(err)),
            }
        }
        Ok(Self {
            connection,
            scripts: Arc::new(scripts),
            replicas: None,
            reply_timeout: None,
            opener: None,
            waiting: replicas::Waiting::default(),
        })
    }

    /// Runs `lua` on `key`: `EVALSHA`, followed in the same round trip by `WAIT` when the
    /// call is [`Call::Durable`] and replicas are awaited. A node without the script
    /// (restarted, failed over, or newly serving the slot) answers `NOSCRIPT`, having run
    /// nothing: the call is sent again as `EVAL` with the script's source, which runs it
    /// and leaves it loaded on that node. Returns the reply and whether the replicas awaited
    /// acknowledged it (`true` when none are).
    async fn run<T: FromRedisValue>(
        &self,
        lua: &Lua,
        key: &RecordKey,
        args: &[&[u8]],
        call: Call,
    ) -> Result<(T, bool), StoreError> {
        let build = |command: &str, script: &str| {
            // Sized for its arguments at once, not grown by doubling as each is written.
            let bytes = command.len() + script.len() + 1 + key.as_str().len();
            let bytes = bytes + args.iter().map(|arg| arg.len()).sum::<usize>();
            let mut cmd = redis::Cmd::with_capacity(4 + args.len(), bytes);
            cmd.arg(command).arg(script).arg(1).arg(key.as_str());
            for arg in args {
                cmd.arg(*arg);
            }
            cmd
        };
        let replicas = self.replicas.filter(|_| call == Call::Durable);
        // The writes to a key keep to its waiting connection (see `Waiting`).
        let writes = match call {
            Call::Read => None,
            Call::Write | Call::Durable => self.waiting.for_key(key.as_str()),
        };
        let mut connection = writes.unwrap_or(&self.connection).clone();
        let send = async |cmd: redis::Cmd, connection: &mut Connection| match replicas {
            None => cmd
                .query_async::<T>(connection)
                .await
                .map(|reply| (reply, true)),
            Some(Replicas { count, timeout_ms }) => redis::pipe()
                .add_command(cmd)
                .cmd("WAIT")
                .arg(count)
                .arg(timeout_ms)
                .query_async::<(T, u64)>(connection)
                .await
                .map(|(reply, acked)| (reply, acked >= u64::from(count))),
        };
        match send(build("EVALSHA", lua.hash()), &mut connection).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                send(build("EVAL", lua.code()), &mut connection).await
            }
            other => other,
        }
        .map_err(StoreError::unavailable)
    }

    /// A fenced write: done when the script answers `1` (and the replicas awaited hold
    /// it). `2` is a completion that landed earlier under this token: spent, so `Fenced`
    /// as the store contract says, but only once the replicas hold it (until then the
    /// layer's retry must go on). Anything else is `Fenced`.
    async fn fenced(
        &self,
        lua: &Lua,
        key: &RecordKey,
        args: &[&[u8]],
        call: Call,
    ) -> Result<(), StoreError> {
        let (reply, replicated): (i64, bool) = self.run(lua, key, args, call).await?;
        match reply {
            1 | 2 if !replicated => Err(self.not_replicated("the write")),
            1 => Ok(()),
            _ => Err(StoreError::fenced()),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

/// `duration` in milliseconds, written in `buffer` (no allocation).
fn millis(duration: Duration, buffer: &mut itoa::Buffer) -> &str {
    // PEXPIRE refuses 0; a zero lease or TTL means "expire at once".
    buffer.format(duration.as_millis().max(1))
}

impl IdempotencyStore for RedisStore {
    async fn begin(
        &self,
        key: &RecordKey,
        fp: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let mut buffer = itoa::Buffer::new();
        let lease = millis(lease, &mut buffer);
        let (reply, replicated): (Vec<Value>, bool) = self
            .run(
                &self.scripts.begin,
                key,
                &[
                    &fp.to_bytes(),
                    &token.to_bytes(),
                    lease.as_bytes(),
                    VERSION.as_bytes(),
                ],
                Call::Durable,
            )
            .await?;
        let begin = match parse_reply(reply)? {
            (0, _) => Begin::Claimed,
            (4, _) => Begin::OwnClaim,
            (1, strings) if strings.len() == 1 => Begin::Conflict(fingerprint(&strings[0])?),
            (2, _) => Begin::InProgress,
            (3, strings) if strings.len() == 1 => Begin::Completed(codec::decode(&strings[0])?),
            _ => return Err(StoreError::corrupt("unexpected script reply")),
        };
        match begin {
            // Not durable yet: give the key back, so that nothing runs on a claim a
            // failover could lose. Should the release fail too, the lease frees the key.
            Begin::Claimed if !replicated => {
                let _ = self.release(key, token).await;
                return Err(self.not_replicated("the claim"));
            }
            // The claim this token already holds: an outer layer's on the same store (its
            // to release), or our own whose reply was lost (the layer releases it).
            Begin::OwnClaim if !replicated => return Err(self.not_replicated("the claim")),
            _ => {}
        }
        Ok(begin)
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let encoded = codec::encode(response);
        let mut buffer = itoa::Buffer::new();
        let ttl = millis(ttl, &mut buffer);
        self.fenced(
            &self.scripts.complete,
            key,
            &[&token.to_bytes(), &encoded, ttl.as_bytes()],
            Call::Durable,
        )
        .await
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        // A release lost in a failover leaves the claim until its lease ends: no wait.
        self.fenced(
            &self.scripts.release,
            key,
            &[&token.to_bytes()],
            Call::Write,
        )
        .await
    }

    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let mut buffer = itoa::Buffer::new();
        let lease = millis(lease, &mut buffer);
        self.fenced(
            &self.scripts.renew,
            key,
            &[&token.to_bytes(), lease.as_bytes()],
            Call::Durable,
        )
        .await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let (reply, _): (Vec<Value>, bool) = self
            .run(&self.scripts.get, key, &[VERSION.as_bytes()], Call::Read)
            .await?;
        match parse_reply(reply)? {
            (0, _) => Ok(None),
            (2, strings) if strings.len() == 1 => Ok(Some(Record {
                fingerprint: fingerprint(&strings[0])?,
                state: RecordState::InFlight,
            })),
            (3, strings) if strings.len() == 2 => Ok(Some(Record {
                fingerprint: fingerprint(&strings[0])?,
                state: RecordState::Completed(codec::decode(&strings[1])?),
            })),
            _ => Err(StoreError::corrupt("unexpected script reply")),
        }
    }
}
