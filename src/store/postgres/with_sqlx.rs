//! sqlx (feature `sqlx`): the store over the application's `PgPool`, and the record
//! completed inside an sqlx transaction.

use super::{
    commit::{
        sealed::{Completion, Transaction},
        surely_rolled_back,
    },
    pool::Connections,
    PostgresStore,
};
use crate::{store::StoreError, CommitError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl PostgresStore {
    /// A store over the application's sqlx pool, keeping its records in `table` (see
    /// [`with_pool`](Self::with_pool) for valid names): one pool serves the application
    /// and the store. Does not touch the database: call [`migrate`](Self::migrate) to
    /// create the table.
    ///
    /// ```no_run
    /// use tower_idempotency::{store::PostgresStore, IdempotencyLayer};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/app").await?;
    /// let store = PostgresStore::from_sqlx(pool.clone(), PostgresStore::DEFAULT_TABLE)?;
    /// store.migrate().await?;
    /// let layer = IdempotencyLayer::new(store);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`StoreErrorKind::Configuration`](crate::store::StoreErrorKind::Configuration)
    /// error naming the table when its name is not valid.
    pub fn from_sqlx(pool: sqlx::PgPool, table: &str) -> Result<Self, StoreError> {
        Self::over(Connections::Sqlx(pool), table)
    }

    /// The sqlx pool the store runs on, when it runs on one.
    pub fn sqlx_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.connections {
            Connections::Sqlx(pool) => Some(pool),
            Connections::Deadpool(_) => None,
        }
    }
}

impl Transaction for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn complete(&mut self, c: Completion<'_>) -> Result<u64, BoxError> {
        let done = sqlx::query(c.sql)
            .bind(c.key)
            .bind(c.token)
            .bind(c.response)
            .bind(c.version)
            .bind(c.ttl_ms)
            .execute(&mut **self)
            .await?;
        Ok(done.rows_affected())
    }

    async fn commit(self) -> Result<(), CommitError> {
        sqlx::Transaction::commit(self).await.map_err(|err| {
            let refused = match &err {
                sqlx::Error::Database(db) => db.code().is_some_and(|c| surely_rolled_back(&c)),
                _ => false,
            };
            if refused {
                CommitError::RolledBack(err.into())
            } else {
                CommitError::Unknown(err.into())
            }
        })
    }
}
