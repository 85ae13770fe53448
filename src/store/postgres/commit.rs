//! Completing the record in the handler's own transaction: one fenced statement before
//! the handler's commit, so the business write and the record commit together or not at
//! all.

use std::{error::Error, future::Future};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use tokio_postgres::types::Type;

use super::{codec, millis, PostgresStore, VERSION};
use crate::{
    server::handler_record::{self as completion, Prepared},
    CommitError, Committed, IdempotencyKey,
};

type BoxError = Box<dyn Error + Send + Sync>;

/// A PostgreSQL transaction [`PostgresStore::complete_and_commit`] can complete the record
/// in and commit: tokio-postgres's and deadpool-postgres's `Transaction`, and with the
/// `sqlx` feature sqlx's `Transaction<'_, Postgres>`. Sealed.
pub trait PgTransaction: sealed::Transaction {}

impl<T: sealed::Transaction> PgTransaction for T {}

pub(super) mod sealed {
    use super::*;

    /// The completion statement's parameters.
    #[allow(unreachable_pub)] // sealed: named only inside the crate
    #[derive(Debug)]
    pub struct Completion<'a> {
        pub(crate) sql: &'a str,
        pub(crate) key: &'a str,
        pub(crate) token: &'a [u8],
        pub(crate) response: &'a [u8],
        pub(crate) version: i16,
        pub(crate) ttl_ms: i64,
    }

    /// What the store needs of a transaction: run the fenced completion (returning how
    /// many rows it completed), then commit.
    #[allow(unreachable_pub)] // sealed: named only inside the crate
    pub trait Transaction: Send {
        /// Runs the completion statement; the rows it completed (0: fenced).
        fn complete(
            &mut self,
            completion: Completion<'_>,
        ) -> impl Future<Output = Result<u64, BoxError>> + Send;

        /// Commits: [`CommitError::RolledBack`] when the server refused the commit,
        /// [`CommitError::Unknown`] when its outcome is unknown (the connection failed).
        fn commit(self) -> impl Future<Output = Result<(), CommitError>> + Send;
    }
}

/// The parameters of the fenced completion, typed, for tokio-postgres's
/// `query_typed` (one round trip, no statement to prepare first).
async fn tokio_complete(
    tx: &tokio_postgres::Transaction<'_>,
    c: sealed::Completion<'_>,
) -> Result<u64, BoxError> {
    let rows = tx
        .query_typed(
            c.sql,
            &[
                (&c.key, Type::TEXT),
                (&c.token, Type::BYTEA),
                (&c.response, Type::BYTEA),
                (&c.version, Type::INT2),
                (&c.ttl_ms, Type::INT8),
            ],
        )
        .await?;
    Ok(rows.len() as u64)
}

/// Whether a commit refused with `sqlstate` surely rolled back: a serialization failure
/// or deadlock (class 40), a deferred constraint (23), a transaction state error (25) or
/// a deferred trigger's raise (P0). Any other answer (a proxy's, a shutdown's) and a
/// failed connection leave its outcome unknown.
pub(super) fn surely_rolled_back(sqlstate: &str) -> bool {
    ["40", "23", "25", "P0"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
}

fn tokio_commit_error(err: tokio_postgres::Error) -> CommitError {
    match err.code() {
        Some(code) if surely_rolled_back(code.code()) => CommitError::RolledBack(err.into()),
        _ => CommitError::Unknown(err.into()),
    }
}

impl sealed::Transaction for tokio_postgres::Transaction<'_> {
    async fn complete(&mut self, completion: sealed::Completion<'_>) -> Result<u64, BoxError> {
        tokio_complete(self, completion).await
    }

    async fn commit(self) -> Result<(), CommitError> {
        tokio_postgres::Transaction::commit(self)
            .await
            .map_err(tokio_commit_error)
    }
}

impl sealed::Transaction for deadpool_postgres::Transaction<'_> {
    async fn complete(&mut self, completion: sealed::Completion<'_>) -> Result<u64, BoxError> {
        tokio_complete(self, completion).await
    }

    async fn commit(self) -> Result<(), CommitError> {
        deadpool_postgres::Transaction::commit(self)
            .await
            .map_err(tokio_commit_error)
    }
}

impl PostgresStore {
    /// Completes the request's record inside the handler's transaction `tx`, fenced by
    /// the request's claim, then commits `tx`: the business write and the record commit
    /// together, or neither does. Return the [`Committed`] it gives: the layer answers
    /// with exactly what was recorded, and does not complete the record again.
    ///
    /// This closes the window between the handler's commit and the layer's completion: a
    /// process killed after this commit leaves a completed record, and the retry replays
    /// it instead of running the handler again.
    ///
    /// - The response is read whole and recorded as the layer would record it (the body is
    ///   left out past the layer's `max_response_body`).
    /// - If the claim is no longer this request's (its lease ran out and another request
    ///   took the key over), nothing is committed: [`CommitError::Fenced`].
    /// - A request run without a claim (a fail-open layer during a store outage) only
    ///   commits.
    ///
    /// `tx` must be a top-level transaction (not a savepoint: its commit is not one) on
    /// the database that holds this store's table; name the table with its schema if
    /// your transactions change `search_path`. In `REPEATABLE READ` or `SERIALIZABLE`,
    /// the layer's lease renewals (every third of a lease) update the record row, so a
    /// transaction older than the last renewal fails with a serialization error
    /// ([`CommitError::RolledBack`]): retry such transactions, or keep them short.
    ///
    /// With nested idempotency layers, the handler's key is the outermost layer's:
    /// complete in that layer's store.
    ///
    /// # Errors
    ///
    /// A [`CommitError`]; its [`into_http`](CommitError::into_http) (or, with the `axum` feature, `IntoResponse`) is the answer
    /// to give.
    pub async fn complete_and_commit<T, B>(
        &self,
        mut tx: T,
        key: &IdempotencyKey,
        response: Response<B>,
    ) -> Result<Committed, CommitError>
    where
        T: PgTransaction,
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let target = completion::target(key);
        let prepared: Prepared =
            completion::prepare(target.as_ref().map(|t| t.claim), response).await?;
        if let (Some(target), Some(record)) = (&target, prepared.record()) {
            let encoded = codec::encode(record);
            let token = target.claim.token.to_bytes();
            let completed = tx
                .complete(sealed::Completion {
                    sql: &self.sql.complete_returning,
                    key: target.key.as_str(),
                    token: &token,
                    response: &encoded,
                    version: VERSION,
                    ttl_ms: millis(target.claim.config.ttl),
                })
                .await
                .map_err(CommitError::RolledBack)?;
            // `tx` is dropped uncommitted on every early return: rolled back.
            if completed == 0 {
                return Err(CommitError::Fenced);
            }
        }
        tx.commit().await?;
        Ok(prepared.committed(target.map(|t| t.claim)))
    }
}
