//! `RedisStore` against the real server at `REDIS_URL`.

use tower_idempotency::store::{RecordKey, RedisStore, StoreError};

use crate::{backends::Backend, cleanup::Written, proxy::Protocol};

pub(crate) struct Redis;

async fn command(url: &str, cmd: &mut redis::Cmd) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let () = cmd.query_async(&mut connection).await.unwrap();
}

impl Backend for Redis {
    type Store = RedisStore;
    const VAR: &'static str = "REDIS_URL";
    const PROTOCOL: Protocol = Protocol::Resp;

    async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        RedisStore::connect(url).await
    }

    async fn truncate_response(url: &str, key: &RecordKey) {
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let response: Vec<u8> = redis::cmd("HGET")
            .arg(key.as_str())
            .arg("resp")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(response.len() > 5, "a completed record");
        command(
            url,
            redis::cmd("HSET")
                .arg(key.as_str())
                .arg("resp")
                .arg(&response[..5]),
        )
        .await;
    }

    async fn put_foreign(url: &str, key: &RecordKey) {
        command(
            url,
            redis::cmd("SET")
                .arg(key.as_str())
                .arg("someone else's string")
                .arg("EX")
                .arg(60),
        )
        .await;
    }

    async fn put_record(url: &str, key: &RecordKey, fingerprint: &[u8; 64], response: &[u8]) {
        let mut hset = redis::cmd("HSET");
        hset.arg(key.as_str())
            .arg("v")
            .arg("2")
            .arg("fp")
            .arg(&fingerprint[..])
            .arg("resp")
            .arg(response);
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: i64 = hset.query_async(&mut connection).await.unwrap();
        command(url, redis::cmd("EXPIRE").arg(key.as_str()).arg(60)).await;
    }

    async fn put_neither(url: &str, key: &RecordKey) {
        let mut hset = redis::cmd("HSET");
        hset.arg(key.as_str())
            .arg("v")
            .arg("2")
            .arg("fp")
            .arg(&[7u8; 64][..]);
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: i64 = hset.query_async(&mut connection).await.unwrap();
        command(url, redis::cmd("EXPIRE").arg(key.as_str()).arg(60)).await;
    }

    async fn remove(url: &str, written: &Written) {
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut keys: Vec<String> = written.exact.iter().cloned().collect();
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
        for chunk in keys.chunks(500) {
            let _: i64 = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    }
}

crate::backends::backend_tests!(
    crate::redis_store::Redis,
    #[cfg_attr(redis_url_unset, ignore = "REDIS_URL is not set")]
);
