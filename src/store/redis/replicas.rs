//! [`RedisStore::wait_for_replicas`]: the claim, completion and renewal acknowledged by
//! replicas before the layer goes on, the connections those waits go over, and which
//! calls wait ([`Call`]).

use std::{sync::Arc, time::Duration};

use super::{connection::Connection, RedisStore};
use crate::store::{StoreError, StoreErrorKind};

/// What a script call does, which decides its connection and whether `WAIT` follows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    /// Reads only (`get`).
    Read,
    /// May write, and a failover losing it costs nothing (a release: the lease frees the
    /// key anyway).
    Write,
    /// May write, and is followed by `WAIT` when replicas are awaited.
    Durable,
}

/// How many connections a store that opened its own spreads its waits over: a `WAIT`
/// holds up the connection it is sent on, so waits on one connection run one at a time.
pub(super) const WAITING_CONNECTIONS: usize = 8;

/// The connections the writes go over when they are followed by `WAIT` (none: the
/// store's one). Each key keeps to one of them: a `WAIT` counts only the writes made on
/// its own connection, so a write tried again (after its reply or its wait was lost) must
/// follow its first attempt there, and a release must not overtake the claim it frees.
#[derive(Clone, Default)]
pub(super) struct Waiting {
    connections: Arc<[Connection]>,
}

impl Waiting {
    /// The connection the writes to `key` go over, if there are any.
    pub(super) fn for_key(&self, key: &str) -> Option<&Connection> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        if self.connections.is_empty() {
            return None;
        }
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        Some(&self.connections[(hash % self.connections.len() as u64) as usize])
    }
}

/// `WAIT` after each claim, completion and renewal.
#[derive(Clone, Copy, Debug)]
pub(super) struct Replicas {
    pub(super) count: u32,
    pub(super) timeout_ms: u64,
}

impl RedisStore {
    /// Makes each claim, completion and renewal wait until `replicas` replicas of the
    /// key's primary acknowledge it, for up to `timeout` (Redis `WAIT`), so that a
    /// failover cannot lose an acknowledged claim: see [Failover](Self#failover). Set
    /// `replicas` to the number of replicas each primary has: with fewer, a replica
    /// that did not acknowledge may be the one promoted.
    ///
    /// `WAIT` holds up the connection it is sent on: Redis answers nothing else on it
    /// until the replicas acknowledge or `timeout` passes. A store that opened its own
    /// connection ([`connect`](Self::connect), [`connect_cluster`](Self::connect_cluster))
    /// therefore opens eight more here (on a cluster, eight more cluster connections, each
    /// with a socket to every primary) and spreads the writes over them by key, so that
    /// waits for different keys proceed side by side (up to eight at once), and `get`
    /// never queues behind one. The writes to one key keep to one connection, where each
    /// `WAIT` covers them all and a release never overtakes its claim.
    /// A store over the application's connection
    /// ([`with_connection_manager`](Self::with_connection_manager),
    /// [`with_cluster_connection`](Self::with_cluster_connection)) keeps that one: each
    /// wait there holds up every other call, so keep the timeout short (tens of
    /// milliseconds on a LAN).
    ///
    /// Fails with [`StoreErrorKind::Configuration`] for zero replicas, a timeout under one
    /// millisecond (`WAIT` would block without end), or, on a connection the store opened,
    /// a timeout not below its 2-second reply timeout; and as
    /// [`connect`](Self::connect) does when the connections cannot be opened.
    pub async fn wait_for_replicas(
        mut self,
        replicas: u32,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let refuse = |why: String| Err(StoreError::new(StoreErrorKind::Configuration, why));
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if replicas == 0 {
            return refuse("wait_for_replicas needs at least one replica".to_owned());
        }
        if timeout_ms == 0 {
            return refuse(format!("wait_for_replicas: a timeout of {timeout:?} is under one millisecond, and WAIT 0 would block without end"));
        }
        if let Some(reply) = self.reply_timeout.filter(|reply| timeout >= *reply) {
            return refuse(format!("wait_for_replicas: the timeout {timeout:?} must be below the connection's reply timeout of {reply:?}"));
        }
        self.replicas = Some(Replicas {
            count: replicas,
            timeout_ms,
        });
        if let Some(opener) = &self.opener {
            let opening = (0..WAITING_CONNECTIONS).map(|_| opener.open());
            let connections = futures_util::future::try_join_all(opening).await?;
            self.waiting = Waiting {
                connections: connections.into(),
            };
        }
        Ok(self)
    }

    pub(super) fn not_replicated(&self, what: &str) -> StoreError {
        let Replicas { count, timeout_ms } = self.replicas.unwrap_or(Replicas {
            count: 0,
            timeout_ms: 0,
        });
        StoreError::new(
            StoreErrorKind::Unavailable,
            format!("{what} did not reach {count} replicas within {timeout_ms} ms"),
        )
    }
}
