//! [`RedisStore`]: records in Redis, one hash per key, every operation one Lua script.

use std::{fmt, sync::Arc, time::Duration};

use redis::{aio::ConnectionManager, Script, Value};

use super::{
    codec, Begin, Fingerprint, IdempotencyStore, LockToken, Record, RecordKey, RecordState,
    StoreError, StoreErrorKind, StoredResponse,
};

/// Claims a free key, or reports what holds it. Answers `{0}` claimed, `{1, fp}` conflict,
/// `{2}` in progress, `{3, response}` completed, `{4}` already held with this token,
/// `{-1, why}` not one of our records. The record is read first (one command for a
/// replay, a conflict or a key in flight); only a key with none of our fields is checked
/// for existence before it is claimed, so a foreign hash is never written into.
const BEGIN: &str = r"
local r = redis.pcall('HMGET', KEYS[1], 'v', 'fp', 'tok', 'resp')
if r.err then return {-1, 'a value of another type'} end
if not (r[1] or r[2] or r[3] or r[4]) then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 'a hash of another format'} end
  redis.call('HSET', KEYS[1], 'v', ARGV[4], 'fp', ARGV[1], 'tok', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {0}
end
if r[1] ~= ARGV[4] or not r[2] then return {-1, 'a hash of another format'} end
if (not r[3]) == (not r[4]) then return {-1, 'a record neither in flight nor completed'} end
if r[3] and string.len(r[3]) ~= 16 then return {-1, 'a record with a malformed token'} end
if r[3] == ARGV[2] then return {4} end
if r[2] ~= ARGV[1] then return {1, r[2]} end
if r[4] then return {3, r[4]} end
return {2}
";

/// Reads a record: `{0}` none, `{2, fp}` in flight, `{3, fp, response}` completed,
/// `{-1, why}` not one of our records.
const GET: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
if t ~= 'hash' then return {-1, 'a ' .. t .. ' value'} end
local r = redis.call('HMGET', KEYS[1], 'v', 'fp', 'tok', 'resp')
if r[1] ~= ARGV[1] or not r[2] then return {-1, 'a hash of another format'} end
if (not r[3]) == (not r[4]) then return {-1, 'a record neither in flight nor completed'} end
if r[3] and string.len(r[3]) ~= 16 then return {-1, 'a record with a malformed token'} end
if r[4] then return {3, r[2], r[4]} end
return {2, r[2]}
";

/// The fence shared by the writes: the record is ours only while `tok` matches. A value
/// of another type makes `HGET` fail, and its error is no token.
macro_rules! fenced_script {
    ($body:literal) => {
        concat!(
            "if redis.pcall('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end\n",
            $body,
            "\nreturn 1"
        )
    };
}

const COMPLETE: &str = fenced_script!(
    "redis.call('HDEL', KEYS[1], 'tok')
redis.call('HSET', KEYS[1], 'resp', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])"
);
const RELEASE: &str = fenced_script!("redis.call('DEL', KEYS[1])");
const RENEW: &str = fenced_script!("redis.call('PEXPIRE', KEYS[1], ARGV[2])");

/// The record format version written in each hash's `v` field (2: a 64-byte
/// fingerprint, request and caller digests).
const VERSION: &str = "2";

struct Scripts {
    begin: Script,
    get: Script,
    complete: Script,
    release: Script,
    renew: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            begin: Script::new(BEGIN),
            get: Script::new(GET),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
        }
    }

    fn all(&self) -> [&Script; 5] {
        [
            &self.begin,
            &self.get,
            &self.complete,
            &self.release,
            &self.renew,
        ]
    }
}

/// A store in Redis, for many instances behind a load balancer (feature `redis`).
///
/// Each record is one hash under the record key (`{namespace}:{scope length}:{scope}:{key}`,
/// e.g. `idem:0::order-7f3a`) with the fields `v` (format version), `fp` (the 64-byte
/// fingerprint: request and caller digests), `tok` (the 16-byte lock token, while in flight) and `resp` (the encoded
/// response, once completed). Records expire by Redis TTL: the lease while in flight,
/// the record TTL once completed. Every operation is one Lua script on one key, so each is
/// atomic and works on Redis Cluster. A replay costs one round trip; a fresh request two
/// (claim, complete), plus one renewal per third of a lease for a slow handler.
///
/// ```no_run
/// use tower_idempotency::{store::RedisStore, IdempotencyLayer};
///
/// # async fn run() -> Result<(), tower_idempotency::store::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = IdempotencyLayer::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    scripts: Arc<Scripts>,
}

impl RedisStore {
    /// Connects to the Redis server at `url` (`redis://host:port/db`), with a connection
    /// manager that reconnects by itself after a failure.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|err| StoreError::new(StoreErrorKind::Configuration, err))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::unavailable)?;
        Self::with_connection_manager(connection).await
    }

    /// A store over an existing connection manager. Loads the scripts, so that every later
    /// operation is a single `EVALSHA`.
    pub async fn with_connection_manager(
        mut connection: ConnectionManager,
    ) -> Result<Self, StoreError> {
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .prepare_invoke()
                .load_async(&mut connection)
                .await
                .map_err(StoreError::unavailable)?;
        }
        Ok(Self {
            connection,
            scripts: Arc::new(scripts),
        })
    }

    async fn fenced(
        &self,
        script: &Script,
        key: &RecordKey,
        args: &[&[u8]],
    ) -> Result<(), StoreError> {
        let mut invocation = script.key(key.as_str());
        for arg in args {
            invocation.arg(*arg);
        }
        let owned: i64 = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(StoreError::unavailable)?;
        if owned == 1 {
            Ok(())
        } else {
            Err(StoreError::fenced())
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> String {
    // PEXPIRE refuses 0; a zero lease or TTL means "expire at once".
    duration.as_millis().max(1).to_string()
}

/// The reply of `BEGIN` or `GET`: a status code and its bulk strings.
fn parse_reply(reply: Vec<Value>) -> Result<(i64, Vec<Vec<u8>>), StoreError> {
    let mut items = reply.into_iter();
    let Some(Value::Int(status)) = items.next() else {
        return Err(StoreError::corrupt("unexpected script reply"));
    };
    let strings = items
        .map(|item| match item {
            Value::BulkString(bytes) => Ok(bytes),
            _ => Err(StoreError::corrupt("unexpected script reply")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if status == -1 {
        let why = strings
            .first()
            .map(|s| String::from_utf8_lossy(s).into_owned());
        return Err(StoreError::corrupt(format!(
            "the key holds {}, not a record of ours",
            why.unwrap_or_default()
        )));
    }
    Ok((status, strings))
}

fn fingerprint(bytes: &[u8]) -> Result<Fingerprint, StoreError> {
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("fingerprint is not 64 bytes"))?;
    Ok(Fingerprint::from_bytes(bytes))
}

impl IdempotencyStore for RedisStore {
    async fn begin(
        &self,
        key: &RecordKey,
        fp: &Fingerprint,
        token: &LockToken,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let reply: Vec<Value> = self
            .scripts
            .begin
            .key(key.as_str())
            .arg(&fp.to_bytes()[..])
            .arg(&token.to_bytes()[..])
            .arg(millis(lease))
            .arg(VERSION)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(StoreError::unavailable)?;
        match parse_reply(reply)? {
            (0, _) => Ok(Begin::Claimed),
            (4, _) => Ok(Begin::OwnClaim),
            (1, strings) if strings.len() == 1 => Ok(Begin::Conflict(fingerprint(&strings[0])?)),
            (2, _) => Ok(Begin::InProgress),
            (3, strings) if strings.len() == 1 => Ok(Begin::Completed(codec::decode(&strings[0])?)),
            _ => Err(StoreError::corrupt("unexpected script reply")),
        }
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: &LockToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let encoded = codec::encode(response);
        let ttl = millis(ttl);
        self.fenced(
            &self.scripts.complete,
            key,
            &[&token.to_bytes(), &encoded, ttl.as_bytes()],
        )
        .await
    }

    async fn release(&self, key: &RecordKey, token: &LockToken) -> Result<(), StoreError> {
        self.fenced(&self.scripts.release, key, &[&token.to_bytes()])
            .await
    }

    async fn renew(
        &self,
        key: &RecordKey,
        token: &LockToken,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let lease = millis(lease);
        self.fenced(
            &self.scripts.renew,
            key,
            &[&token.to_bytes(), lease.as_bytes()],
        )
        .await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let reply: Vec<Value> = self
            .scripts
            .get
            .key(key.as_str())
            .arg(VERSION)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(StoreError::unavailable)?;
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
