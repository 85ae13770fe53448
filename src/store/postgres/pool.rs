//! The connections a [`PostgresStore`](super::PostgresStore) runs its statements on: a
//! deadpool pool of tokio-postgres connections (its own, or the application's), or, with
//! the `sqlx` feature, the application's sqlx `PgPool`.

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use crate::store::{StoreError, StoreErrorKind};

/// One statement parameter.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    Small(i16),
    Big(i64),
}

impl Param<'_> {
    /// As a tokio-postgres parameter.
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Text(value) => value,
            Self::Bytes(value) => value,
            Self::Small(value) => value,
            Self::Big(value) => value,
        }
    }
}

/// Where the statements run.
#[derive(Clone)]
pub(super) enum Connections {
    Deadpool(Pool),
    #[cfg(feature = "sqlx")]
    Sqlx(sqlx::PgPool),
}

/// A row a statement returned, its columns read by index.
pub(super) enum Row {
    Tokio(tokio_postgres::Row),
    #[cfg(feature = "sqlx")]
    Sqlx(sqlx::postgres::PgRow),
}

fn corrupt(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, err)
}

fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable(err)
}

impl Row {
    pub(super) fn text(&self, index: usize) -> Result<Option<&str>, StoreError> {
        match self {
            Self::Tokio(row) => row.try_get(index).map_err(corrupt),
            #[cfg(feature = "sqlx")]
            Self::Sqlx(row) => sqlx::Row::try_get(row, index).map_err(corrupt),
        }
    }

    pub(super) fn bytes(&self, index: usize) -> Result<Option<&[u8]>, StoreError> {
        match self {
            Self::Tokio(row) => row.try_get(index).map_err(corrupt),
            #[cfg(feature = "sqlx")]
            Self::Sqlx(row) => sqlx::Row::try_get(row, index).map_err(corrupt),
        }
    }

    pub(super) fn small(&self, index: usize) -> Result<Option<i16>, StoreError> {
        match self {
            Self::Tokio(row) => row.try_get(index).map_err(corrupt),
            #[cfg(feature = "sqlx")]
            Self::Sqlx(row) => sqlx::Row::try_get(row, index).map_err(corrupt),
        }
    }
}

/// The tokio-postgres form of `params` (at most five).
fn tokio_params<'a>(params: &'a [Param<'a>]) -> ([&'a (dyn ToSql + Sync); 5], usize) {
    let mut refs: [&(dyn ToSql + Sync); 5] = [&0i16; 5];
    for (slot, param) in refs.iter_mut().zip(params) {
        *slot = param.as_sql();
    }
    (refs, params.len().min(5))
}

#[cfg(feature = "sqlx")]
fn sqlx_query<'q>(
    sql: &'q str,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    params
        .iter()
        .fold(sqlx::query(sql), |query, param| match *param {
            Param::Text(value) => query.bind(value),
            Param::Bytes(value) => query.bind(value),
            Param::Small(value) => query.bind(value),
            Param::Big(value) => query.bind(value),
        })
}

impl Connections {
    /// Runs `sql` and returns its rows.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        match self {
            Self::Deadpool(pool) => {
                let client = pool.get().await.map_err(unavailable)?;
                let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
                let (refs, len) = tokio_params(params);
                let rows = client
                    .query(&statement, &refs[..len])
                    .await
                    .map_err(unavailable)?;
                Ok(rows.into_iter().map(Row::Tokio).collect())
            }
            #[cfg(feature = "sqlx")]
            Self::Sqlx(pool) => {
                let rows = sqlx_query(sql, params)
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?;
                Ok(rows.into_iter().map(Row::Sqlx).collect())
            }
        }
    }

    /// Runs `sql` and returns how many rows it touched.
    pub(super) async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        match self {
            Self::Deadpool(pool) => {
                let client = pool.get().await.map_err(unavailable)?;
                let statement = client.prepare_cached(sql).await.map_err(unavailable)?;
                let (refs, len) = tokio_params(params);
                client
                    .execute(&statement, &refs[..len])
                    .await
                    .map_err(unavailable)
            }
            #[cfg(feature = "sqlx")]
            Self::Sqlx(pool) => sqlx_query(sql, params)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
                .map_err(unavailable),
        }
    }

    /// Runs the `ddl` statements in one transaction, serialised with other instances on
    /// an advisory lock named `lock`.
    pub(super) async fn migrate(&self, lock: &str, ddl: &[String]) -> Result<(), StoreError> {
        match self {
            Self::Deadpool(pool) => {
                let mut client = pool.get().await.map_err(unavailable)?;
                let tx = client.transaction().await.map_err(unavailable)?;
                tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
                    .await
                    .map_err(unavailable)?;
                for statement in ddl {
                    tx.batch_execute(statement).await.map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)
            }
            #[cfg(feature = "sqlx")]
            Self::Sqlx(pool) => {
                let mut tx = pool.begin().await.map_err(unavailable)?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(lock)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                for statement in ddl {
                    sqlx::query(statement)
                        .persistent(false)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)
            }
        }
    }
}
