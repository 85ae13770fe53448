//! The stores over TLS, against real TLS listeners: Redis at `REDIS_TLS_URL` (with its
//! certificate authority at `REDIS_TLS_CA`; `.ci/redis_tls.sh` starts one), PostgreSQL
//! at `DATABASE_TLS_URL` (`…?sslmode=verify-full&sslrootcert=PATH`, host `localhost`),
//! a Redis Cluster at `REDIS_TLS_CLUSTER_URL` (authority at `REDIS_TLS_CLUSTER_CA`;
//! `.ci/redis_tls_cluster.sh` starts one).
//! A certificate that does not check out is a clear error when the store is built,
//! never a connection in the clear.

use axum::http::StatusCode;
use tower_idempotency::{store::StoreError, IdempotencyLayer, IdempotencyStore};

use crate::support::{app, post_with_key, send, unique};

fn var(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| panic!("this test needs {name}"))
}

/// A fresh request runs once over the store, and its retry replays. Returns the key.
async fn runs_once<St: IdempotencyStore>(store: St) -> String {
    let (app, counter) = app(IdempotencyLayer::new(store));
    let key = unique("tls");
    let first = send(&app, post_with_key("/orders", &key, "x")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(send(&app, post_with_key("/orders", &key, "x"))
        .await
        .replayed());
    assert_eq!(counter.runs(), 1);
    key
}

fn refused<T>(what: &str, result: Result<T, StoreError>, says: &[&str]) {
    let Err(err) = result else {
        panic!("{what}: connected")
    };
    let message = format!("{err:#}").to_lowercase();
    assert!(
        says.iter().any(|word| message.contains(word)),
        "{what}: the error should say {says:?}: {message}"
    );
}

#[cfg(feature = "redis-tls")]
mod redis {
    use tower_idempotency::store::RedisStore;

    use super::*;

    fn ca() -> Vec<u8> {
        std::fs::read(var("REDIS_TLS_CA")).expect("REDIS_TLS_CA names a readable file")
    }

    #[cfg_attr(redis_tls_url_unset, ignore = "REDIS_TLS_URL is not set")]
    #[tokio::test]
    async fn rediss_with_the_servers_authority_works() {
        let url = var("REDIS_TLS_URL");
        let store = RedisStore::connect_with_roots(&url, &ca()).await.unwrap();
        let key = runs_once(store).await;
        let certificates = ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca()),
        };
        let client = ::redis::Client::build_with_tls(url.as_str(), certificates).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let deleted: i64 = ::redis::cmd("DEL")
            .arg(tower_idempotency::store::RecordKey::new("idem", "", &key).as_str())
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(deleted, 1, "the record was in the TLS server");
    }

    #[cfg_attr(redis_tls_url_unset, ignore = "REDIS_TLS_URL is not set")]
    #[tokio::test]
    async fn rediss_refuses_what_does_not_check_out() {
        let url = var("REDIS_TLS_URL");
        // An authority the system does not know.
        refused(
            "system roots",
            RedisStore::connect(&url).await,
            &["unknownissuer", "unknown issuer"],
        );
        // A certificate for localhost, reached as 127.0.0.1.
        let by_address = url.replace("@localhost:", "@127.0.0.1:");
        refused(
            "wrong name",
            RedisStore::connect_with_roots(&by_address, &ca()).await,
            &["notvalidforname", "not valid for name"],
        );
        // Not PEM at all.
        refused(
            "garbage roots",
            RedisStore::connect_with_roots(&url, b"not a certificate").await,
            &["no pem certificate"],
        );
        // The right server, the wrong password.
        let wrong = url.replacen("://:", "://:wrong-", 1);
        let result = RedisStore::connect_with_roots(&wrong, &ca()).await;
        if let Err(err) = &result {
            assert_eq!(
                err.kind(),
                tower_idempotency::store::StoreErrorKind::Configuration
            );
        }
        refused(
            "wrong password",
            result,
            &["password authentication failed"],
        );
    }
}

/// A Redis Cluster over TLS (`rediss-cluster://`, `.ci/redis_tls_cluster.sh` starts one):
/// the store follows the nodes it discovers over TLS too, checking each certificate.
#[cfg(feature = "redis-tls")]
mod redis_cluster {
    use tower_idempotency::store::{RecordKey, RecordState, RedisStore};

    use super::*;

    fn ca() -> Vec<u8> {
        std::fs::read(var("REDIS_TLS_CLUSTER_CA"))
            .expect("REDIS_TLS_CLUSTER_CA names a readable file")
    }

    #[cfg_attr(
        redis_tls_cluster_url_unset,
        ignore = "REDIS_TLS_CLUSTER_URL is not set"
    )]
    #[tokio::test]
    async fn rediss_cluster_with_the_clusters_authority_works() {
        let url = var("REDIS_TLS_CLUSTER_URL");
        let store = RedisStore::connect_with_roots(&url, &ca()).await.unwrap();
        // Keys spread over the nodes, each answering over TLS.
        let mut keys = Vec::new();
        for _ in 0..9 {
            keys.push(runs_once(store.clone()).await);
        }
        let nodes = url
            .trim_start_matches("rediss-cluster://:")
            .split_once('@')
            .unwrap();
        let password = nodes.0;
        let urls: Vec<String> = nodes
            .1
            .split(',')
            .map(|node| format!("rediss://:{password}@{node}"))
            .collect();
        let certificates = ::redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca()),
        };
        let client = ::redis::cluster::ClusterClient::builder(urls)
            .certs(certificates)
            .build()
            .unwrap();
        let mut connection = client.get_async_connection().await.unwrap();
        for key in keys {
            let record_key = RecordKey::new("idem", "", &key);
            let record = store.get(&record_key).await;
            // Deleted before anything is asserted of it.
            let deleted: i64 = ::redis::cmd("DEL")
                .arg(record_key.as_str())
                .query_async(&mut connection)
                .await
                .unwrap();
            let record = record.unwrap().expect("the record");
            assert!(matches!(record.state, RecordState::Completed(_)));
            assert_eq!(deleted, 1, "the record was in the TLS cluster");
        }
    }

    #[cfg_attr(
        redis_tls_cluster_url_unset,
        ignore = "REDIS_TLS_CLUSTER_URL is not set"
    )]
    #[tokio::test]
    async fn rediss_cluster_refuses_an_authority_it_was_not_given() {
        let url = var("REDIS_TLS_CLUSTER_URL");
        // An authority the system does not know (names are checked as on one server).
        refused(
            "system roots",
            RedisStore::connect(&url).await,
            &["unknownissuer", "unknown issuer"],
        );
    }
}

#[cfg(feature = "postgres-tls")]
mod postgres {
    use tower_idempotency::store::PostgresStore;

    use super::*;

    /// `DATABASE_TLS_URL` with its `sslmode` replaced by `mode` (and its root
    /// certificate dropped when `keep_root` is false).
    fn with_mode(mode: &str, keep_root: bool) -> String {
        let url = var("DATABASE_TLS_URL");
        let (base, query) = url
            .split_once('?')
            .expect("DATABASE_TLS_URL has sslmode and sslrootcert");
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.starts_with("sslmode="))
            .filter(|p| keep_root || !p.starts_with("sslrootcert="))
            .map(str::to_owned)
            .collect();
        params.push(format!("sslmode={mode}"));
        format!("{base}?{}", params.join("&"))
    }

    async fn encrypted(store: &PostgresStore) -> bool {
        let client = store.pool().unwrap().get().await.unwrap();
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get(0)
    }

    async fn connects(url: &str) -> PostgresStore {
        let store = PostgresStore::connect(url)
            .await
            .unwrap_or_else(|err| panic!("{url}: {err:#}"));
        assert!(
            encrypted(&store).await,
            "{url}: the connection is encrypted"
        );
        store
    }

    #[cfg_attr(database_tls_url_unset, ignore = "DATABASE_TLS_URL is not set")]
    #[tokio::test]
    async fn each_sslmode_does_what_libpq_does() {
        // Held to the end: deletes the records of the keys this test makes.
        let _cleanup = crate::backends::url::<crate::postgres_store::Postgres>("tls");
        // verify-full: the chain and the name.
        let store = connects(&with_mode("verify-full", true)).await;
        runs_once(store).await;
        // verify-ca: the chain only, so the address works too.
        connects(&with_mode("verify-ca", true).replace("@localhost", "@127.0.0.1")).await;
        // require: encrypted, nothing checked.
        connects(&with_mode("require", false).replace("@localhost", "@127.0.0.1")).await;
        // An unencrypted URL is still plain.
        let plain = PostgresStore::connect(&with_mode("disable", false))
            .await
            .unwrap();
        assert!(!encrypted(&plain).await);
    }

    #[cfg_attr(database_tls_url_unset, ignore = "DATABASE_TLS_URL is not set")]
    #[tokio::test]
    async fn certificates_that_do_not_check_out_are_refused() {
        refused(
            "wrong name",
            PostgresStore::connect(
                &with_mode("verify-full", true).replace("@localhost", "@127.0.0.1"),
            )
            .await,
            &["notvalidforname", "not valid for name"],
        );
        // An authority that did not sign the server's certificate (the system's roots
        // may hold the server's own self-signed certificate, as on Debian).
        let other = std::env::temp_dir().join(format!("other-ca-{}.pem", uuid::Uuid::new_v4()));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout", "/dev/null", "-out"])
            .arg(&other)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl on the PATH");
        assert!(made.success());
        let other_root = format!(
            "{}&sslrootcert={}",
            with_mode("verify-full", false),
            other.display()
        );
        let result = PostgresStore::connect(&other_root).await;
        std::fs::remove_file(&other).unwrap();
        refused(
            "another authority",
            result,
            &["unknownissuer", "unknown issuer", "badsignature"],
        );
        refused(
            "no such root file",
            PostgresStore::connect(&format!(
                "{}&sslrootcert=/nonexistent/ca.pem",
                with_mode("verify-full", false)
            ))
            .await,
            &["sslrootcert"],
        );
        refused(
            "unknown sslmode",
            PostgresStore::connect(&with_mode("sometimes", true)).await,
            &["sslmode"],
        );
    }
}
