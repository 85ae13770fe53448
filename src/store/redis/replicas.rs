//! [`RedisStore::wait_for_replicas`]: the claim, completion and renewal acknowledged by
//! replicas before the layer goes on.

use std::time::Duration;

use super::RedisStore;
use crate::store::{StoreError, StoreErrorKind};

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
    /// `WAIT` holds up the connection it is sent on (Redis answers nothing else on it
    /// meanwhile), and the store multiplexes its calls over one connection (one per
    /// node on a cluster): with healthy replicas each wait is one replica round trip,
    /// but with a replica unreachable every call queues behind `timeout`. Keep the
    /// timeout short (tens of milliseconds on a LAN), and give the store a connection
    /// of its own rather than one the application shares.
    ///
    /// Fails with [`StoreErrorKind::Configuration`] for zero replicas, a timeout under one
    /// millisecond (`WAIT` would block without end), or, on a connection the store opened,
    /// a timeout not below its 2-second reply timeout.
    pub fn wait_for_replicas(
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
