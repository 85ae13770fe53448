//! [`PostgresStore`]: records in one PostgreSQL table.

use std::{fmt, sync::Arc, time::Duration};

use deadpool_postgres::{Pool, Runtime};

mod commit;
mod pool;
mod sql;
mod tls;
#[cfg(feature = "postgres-tls")]
mod verifiers;
#[cfg(feature = "sqlx")]
mod with_sqlx;

pub use self::commit::PgTransaction;
use self::{
    pool::{Connections, Param, Row},
    sql::{valid_table_name, Statements, SWEEP_BATCH},
};
use super::{
    codec, Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, RecordState,
    StoreError, StoreErrorKind, StoredResponse,
};

/// The record format version in each row (2: a 64-byte fingerprint, request and caller
/// digests).
const VERSION: i16 = 2;

/// A store in PostgreSQL, for teams whose source of truth is Postgres (feature `postgres`).
///
/// One table (default `idempotency_records`), created by [`migrate`](Self::migrate):
///
/// ```sql
/// CREATE TABLE idempotency_records (
///     key         text        PRIMARY KEY,  -- {namespace}:{scope length}:{scope}:{key}
///     fingerprint bytea       NOT NULL,     -- request and caller SHA-256 digests
///     token       bytea,                    -- lock token, while in flight
///     response    bytea,                    -- encoded response, once completed
///     version     smallint    NOT NULL,     -- record format version
///     expires_at  timestamptz NOT NULL      -- lease end in flight, TTL end completed
/// );
/// CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);
/// ```
///
/// A claim is one `INSERT … ON CONFLICT DO NOTHING` that returns the live row it lost to,
/// so a replay costs one statement and a fresh request two (claim, complete). Reads ignore
/// expired rows; [`sweep`](Self::sweep) deletes them, and
/// [`spawn_sweeper`](Self::spawn_sweeper) does so periodically. Taking over an expired row
/// is one more conditional `UPDATE`.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_idempotency::{store::PostgresStore, IdempotencyLayer};
///
/// # async fn run() -> Result<(), tower_idempotency::store::StoreError> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// store.spawn_sweeper(Duration::from_secs(600));
/// let layer = IdempotencyLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    connections: Connections,
    sql: Arc<Statements>,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// The default table name.
    pub const DEFAULT_TABLE: &'static str = "idempotency_records";

    /// Connects to `url` (`postgres://user@host:port/db`) with a pool of up to 16
    /// connections, and creates the default table if it is missing.
    ///
    /// TLS (feature `postgres-tls`, through rustls) as libpq reads the URL's `sslmode`:
    /// `require` encrypts without checking the certificate, `verify-ca` checks that it
    /// chains to a trusted root, `verify-full` also that it names the host; `prefer`
    /// encrypts when the server offers it. The roots are the file `sslrootcert=PATH`
    /// names (PEM; `verify-ca` requires one), else, for `verify-full`, the system's.
    /// Without the feature, any `sslmode` other than `disable` and `prefer` is refused,
    /// as is an `sslrootcert` without TLS or a second `?` in the URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let settings = tls::settings(url)?;
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|err| StoreError::new(StoreErrorKind::Configuration, err))?;
        config.connect_timeout(Duration::from_secs(2));
        let manager = tls::manager(config, &settings)?;
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|err| StoreError::new(StoreErrorKind::Configuration, err))?;
        let store = Self::with_pool(pool, Self::DEFAULT_TABLE)?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store over an existing pool, keeping its records in `table` (an identifier of
    /// lower-case letters, digits and underscores, optionally `schema.table`). Does not
    /// touch the database: call [`migrate`](Self::migrate) to create the table.
    ///
    /// # Errors
    ///
    /// A [`StoreErrorKind::Configuration`] error naming the table when its name is not
    /// valid.
    pub fn with_pool(pool: Pool, table: &str) -> Result<Self, StoreError> {
        Self::over(Connections::Deadpool(pool), table)
    }

    fn over(connections: Connections, table: &str) -> Result<Self, StoreError> {
        if !valid_table_name(table) {
            return Err(StoreError::configuration(format!(
                "invalid table name {table:?}: use lower-case letters, digits and underscores"
            )));
        }
        Ok(Self {
            connections,
            sql: Arc::new(Statements::new(table)),
        })
    }

    /// The deadpool pool the store runs on, when it runs on one: the application may run
    /// its own transactions on it (see [`complete_and_commit`](Self::complete_and_commit)).
    pub fn pool(&self) -> Option<&Pool> {
        match &self.connections {
            Connections::Deadpool(pool) => Some(pool),
            #[cfg(feature = "sqlx")]
            Connections::Sqlx(_) => None,
        }
    }

    /// The table the records are kept in.
    pub fn table(&self) -> &str {
        &self.sql.table
    }

    /// Creates the table and its index if they are missing. Safe to run from many
    /// instances at once (it serialises on an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let table = &self.sql.table;
        let index = format!("{}_expires_at", table.replace('.', "_"));
        let ddl = [
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                key         text        PRIMARY KEY,
                fingerprint bytea       NOT NULL,
                token       bytea,
                response    bytea,
                version     smallint    NOT NULL,
                expires_at  timestamptz NOT NULL
            )"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at)"),
        ];
        self.connections.migrate(table, &ddl).await
    }

    /// Deletes expired rows, in batches of 1,000 (each its own statement, a few
    /// milliseconds long), and returns how many it deleted. A row a claim is taking over
    /// at that moment is skipped rather than waited for (`SKIP LOCKED`), and no claim
    /// waits longer than one batch: a table of 1M expired rows is swept at about 330,000
    /// rows a second on the development machine while claims go on at their usual median
    /// (`cargo bench --bench sweep --features postgres`).
    pub async fn sweep(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.execute(&self.sql.sweep, &[]).await?;
            total += deleted;
            if deleted < SWEEP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Runs [`sweep`](Self::sweep) every `period` on a task of its own, until the returned
    /// handle is aborted. Failures are logged and retried at the next period.
    pub fn spawn_sweeper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            loop {
                interval.tick().await;
                match store.sweep().await {
                    Ok(deleted) => tracing::debug!(deleted, "swept expired idempotency records"),
                    Err(err) => {
                        tracing::warn!(error = %err, "could not sweep expired idempotency records")
                    }
                }
            }
        })
    }

    async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        self.connections.query(sql, params).await
    }

    async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        self.connections.execute(sql, params).await
    }

    async fn fenced(&self, sql: &str, params: &[Param<'_>]) -> Result<(), StoreError> {
        match self.execute(sql, params).await? {
            0 => Err(StoreError::fenced()),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

/// A row's fingerprint, response, version and token, checked: a row is in flight (a
/// token, no response) or completed (a response, no token), nothing else.
fn decode_row(
    fingerprint: &[u8],
    response: Option<&[u8]>,
    version: Option<i16>,
    token: Option<&[u8]>,
) -> Result<Record, StoreError> {
    if version != Some(VERSION) {
        return Err(StoreError::corrupt(format!(
            "unknown record format version {version:?}"
        )));
    }
    let fingerprint: [u8; 64] = fingerprint
        .try_into()
        .map_err(|_| StoreError::corrupt("fingerprint is not 64 bytes"))?;
    Ok(Record {
        fingerprint: Fingerprint::from_bytes(fingerprint),
        state: match (response, token) {
            (Some(bytes), None) => RecordState::Completed(codec::decode(bytes)?),
            (None, Some(token)) if token.len() == 16 => RecordState::InFlight,
            _ => {
                return Err(StoreError::corrupt(
                    "a row neither in flight (a 16-byte token) nor completed (a response)",
                ))
            }
        },
    })
}

/// A row of `get` (and the lost race of a claim, from `first`): fingerprint, response,
/// version, token.
fn record_at(row: &Row, first: usize) -> Result<Record, StoreError> {
    decode_row(
        row.bytes(first)?.unwrap_or_default(),
        row.bytes(first + 1)?,
        row.small(first + 2)?,
        row.bytes(first + 3)?,
    )
}

impl IdempotencyStore for PostgresStore {
    async fn begin(
        &self,
        key: &RecordKey,
        fp: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let token_bytes = token.to_bytes();
        let fp_bytes = fp.to_bytes();
        let params = [
            Param::Text(key.as_str()),
            Param::Bytes(&fp_bytes),
            Param::Bytes(&token_bytes),
            Param::Small(VERSION),
            Param::Big(millis(lease)),
        ];
        // A row inserted by another transaction after this statement's snapshot is neither
        // claimed nor visible: run the statement again, which then sees it.
        for _ in 0..3 {
            let rows = self.query(&self.sql.claim, &params).await?;
            let Some(row) = rows.first() else { continue };
            match row.text(0)?.unwrap_or_default() {
                "claimed" => return Ok(Begin::Claimed),
                "own" => return Ok(Begin::OwnClaim),
                "expired" => {
                    if self.execute(&self.sql.take_over, &params).await? == 1 {
                        return Ok(Begin::Claimed);
                    }
                }
                _ => {
                    let record = record_at(row, 1)?;
                    return Ok(match record.state {
                        _ if record.fingerprint != *fp => Begin::Conflict(record.fingerprint),
                        RecordState::InFlight => Begin::InProgress,
                        RecordState::Completed(response) => Begin::Completed(response),
                    });
                }
            }
        }
        Err(StoreError::unavailable(
            "the claim kept racing with other writers",
        ))
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let encoded = codec::encode(response);
        let token = token.to_bytes();
        self.fenced(
            &self.sql.complete,
            &[
                Param::Text(key.as_str()),
                Param::Bytes(&token),
                Param::Bytes(&encoded),
                Param::Small(VERSION),
                Param::Big(millis(ttl)),
            ],
        )
        .await
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        let token = token.to_bytes();
        self.fenced(
            &self.sql.release,
            &[Param::Text(key.as_str()), Param::Bytes(&token)],
        )
        .await
    }

    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let token = token.to_bytes();
        self.fenced(
            &self.sql.renew,
            &[
                Param::Text(key.as_str()),
                Param::Bytes(&token),
                Param::Big(millis(lease)),
            ],
        )
        .await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let rows = self
            .query(&self.sql.get, &[Param::Text(key.as_str())])
            .await?;
        rows.first().map(|row| record_at(row, 0)).transpose()
    }
}
