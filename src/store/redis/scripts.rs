//! The Lua scripts (every operation of the Redis store is one of them, on one key), and
//! their replies read.

use redis::{Script, Value};

use crate::store::{Fingerprint, StoreError};

/// Claims a free key, or reports what holds it. Answers `{0}` claimed, `{1, fp}` conflict,
/// `{2}` in progress, `{3, response}` completed, `{4}` already held with this token,
/// `{-1, why}` not one of our records. `{4}` writes its token again (the same value): a
/// `WAIT` after it then covers the claim it found, whichever connection made that. The record is read first (one command for a
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
if r[3] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'tok', ARGV[2])
  return {4}
end
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

/// Completes the record held with `ARGV[1]`: `1`. The completing token stays in `by`, so
/// that a completion tried again after its reply was lost (by the layer, or by the
/// cluster client after a connection drop) is told apart: `2` (spent, but it landed),
/// where another token or no record is `0`. `2` writes `by` again (the same value), so
/// that a `WAIT` after it covers the completion it found, whichever connection made it.
const COMPLETE: &str = r"
local tok = redis.pcall('HGET', KEYS[1], 'tok')
if tok ~= ARGV[1] then
  if tok == false and redis.pcall('HGET', KEYS[1], 'by') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'by', ARGV[1])
    return 2
  end
  return 0
end
redis.call('HDEL', KEYS[1], 'tok')
redis.call('HSET', KEYS[1], 'resp', ARGV[2], 'by', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";
const RELEASE: &str = fenced_script!("redis.call('DEL', KEYS[1])");
const RENEW: &str = fenced_script!("redis.call('PEXPIRE', KEYS[1], ARGV[2])");

/// The record format version written in each hash's `v` field (2: a 64-byte
/// fingerprint, request and caller digests).
pub(super) const VERSION: &str = "2";

/// A script: its source, and its SHA-1 for `EVALSHA`.
pub(super) struct Lua {
    script: Script,
    code: &'static str,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            script: Script::new(code),
            code,
        }
    }

    /// The SHA-1 `EVALSHA` names the script by.
    pub(super) fn hash(&self) -> &str {
        self.script.get_hash()
    }

    /// The source, for `EVAL` on a node that does not have the script.
    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    /// For `SCRIPT LOAD`.
    pub(super) fn script(&self) -> &Script {
        &self.script
    }
}

pub(super) struct Scripts {
    pub(super) begin: Lua,
    pub(super) get: Lua,
    pub(super) complete: Lua,
    pub(super) release: Lua,
    pub(super) renew: Lua,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            begin: Lua::new(BEGIN),
            get: Lua::new(GET),
            complete: Lua::new(COMPLETE),
            release: Lua::new(RELEASE),
            renew: Lua::new(RENEW),
        }
    }

    pub(super) fn all(&self) -> [&Lua; 5] {
        [
            &self.begin,
            &self.get,
            &self.complete,
            &self.release,
            &self.renew,
        ]
    }
}

/// The reply of `BEGIN` or `GET`: a status code and its bulk strings.
pub(super) fn parse_reply(reply: Vec<Value>) -> Result<(i64, Vec<Vec<u8>>), StoreError> {
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

pub(super) fn fingerprint(bytes: &[u8]) -> Result<Fingerprint, StoreError> {
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| StoreError::corrupt("fingerprint is not 64 bytes"))?;
    Ok(Fingerprint::from_bytes(bytes))
}
