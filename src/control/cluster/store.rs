//! The Redis layout of one cluster and the Lua scripts that change it. Every key
//! starts with `kg:{<name>}` (one hash slot, so scripts touch one shard).
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `:epoch` | string | random marker set when the cluster is seeded; gone = wiped |
//! | `:version` | integer | bumped by every change |
//! | `:keys` | hash | key id → [`Stored`] JSON (hash, prefix, sealed copy; never the key) |
//! | `:revs` | hash | key id → revision (compare-and-set for `If-Match`) |
//! | `:names` | hash | lower-cased name → key id (names unique ignoring case) |
//! | `:api` | string | `1` / `0`, the API switch |
//! | `:file_revision` | integer | the keys file `revision:` last applied |
//! | `:changes` · `:audit` · `:logs` | streams | change records, audit records, recent requests |
//! | `:rl:<id>` | string | GCRA theoretical arrival time (µs, Redis clock) |
//! | `:last_used` | sorted set | key id → newest use (Unix ms) |
//! | `:nodes` | hash | node → heartbeat JSON |

use std::collections::HashMap;

use redis::Script;
use serde::{Deserialize, Serialize};

use crate::keys::file::{KeyEntry, KeysFile};

/// Where a key came from: the keys file (read-only in the admin API) or a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    File,
    Api,
}

/// One key as stored in `:keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) src: Source,
    pub(crate) entry: KeyEntry,
}

/// The names of one cluster's Redis keys.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) epoch: String,
    pub(crate) version: String,
    pub(crate) keys: String,
    pub(crate) revs: String,
    pub(crate) names: String,
    pub(crate) api: String,
    pub(crate) file_revision: String,
    pub(crate) changes: String,
    pub(crate) audit: String,
    pub(crate) logs: String,
    pub(crate) last_used: String,
    pub(crate) nodes: String,
    rl: String,
}

impl Layout {
    pub(crate) fn new(name: &str) -> Self {
        let p = crate::config::cluster::key_prefix(name);
        let k = |s: &str| format!("{p}:{s}");
        Self {
            epoch: k("epoch"),
            version: k("version"),
            keys: k("keys"),
            revs: k("revs"),
            names: k("names"),
            api: k("api"),
            file_revision: k("file_revision"),
            changes: k("changes"),
            audit: k("audit"),
            logs: k("logs"),
            last_used: k("last_used"),
            nodes: k("nodes"),
            rl: k("rl:"),
        }
    }

    pub(super) fn rate(&self, id: &str) -> String {
        format!("{}{id}", self.rl)
    }
}

/// Everything a snapshot is built from, read in one MULTI.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) epoch: Option<String>,
    pub(crate) version: u64,
    pub(crate) file: KeysFile,
}

pub(crate) type Raw = (
    Option<String>,
    Option<u64>,
    Option<String>,
    HashMap<String, String>,
    HashMap<String, u64>,
);

pub(crate) fn read_pipe(l: &Layout) -> redis::Pipeline {
    let mut p = redis::pipe();
    p.atomic()
        .get(&l.epoch)
        .get(&l.version)
        .get(&l.api)
        .hgetall(&l.keys)
        .hgetall(&l.revs);
    p
}

/// Decodes a [`read_pipe`] answer; the second value lists the key sources.
pub(crate) fn decode(raw: Raw) -> Result<(State, HashMap<String, Source>), String> {
    let (epoch, version, api, keys, revs) = raw;
    let mut entries = Vec::with_capacity(keys.len());
    let mut sources = HashMap::with_capacity(keys.len());
    for (id, json) in keys {
        let s: Stored = serde_json::from_str(&json)
            .map_err(|e| format!("cluster key {id:?} cannot be read: {e}"))?;
        let mut entry = s.entry;
        entry.revision = Some(revs.get(&id).copied().unwrap_or(0));
        sources.insert(id, s.src);
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((
        State {
            epoch,
            version: version.unwrap_or(0),
            file: KeysFile {
                api_enabled: api.as_deref() != Some("0"),
                keys: entries,
                revision: None,
                entry_positions: Vec::new(),
            },
        },
        sources,
    ))
}

/// One `EVALSHA` of `script` (`cmd`); a server that lost the script (restarted,
/// `SCRIPT FLUSH`) gets it loaded and the same call again (nothing ran the first
/// time: `NOSCRIPT` is answered before the script starts).
pub(crate) async fn evalsha<T: redis::FromRedisValue>(
    script: &Script,
    cmd: &redis::Cmd,
    con: &mut redis::aio::ConnectionManager,
) -> redis::RedisResult<T> {
    match cmd.query_async(con).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(con).await?;
            cmd.query_async(con).await
        }
        answer => answer,
    }
}

/// Appends records to the capped recent-requests stream, one entry each (field
/// `j`), exactly as one `XADD` per record would. KEYS: the stream. ARGV: the cap
/// (`MAXLEN ~`), then the records. Returns how many were appended.
pub(crate) fn append_logs() -> Script {
    Script::new(
        r"
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'j', ARGV[i])
end
return #ARGV - 1
",
    )
}

/// GCRA with the Redis server's clock. ARGV: emission interval and tolerance
/// (interval × (burst − 1)), both in µs. Returns `{1, 0}` allowed or `{0, wait_µs}`;
/// a denial writes nothing.
pub(crate) fn gcra() -> Script {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local diff = tat - now
if diff > tolerance then
  return {0, math.ceil(diff - tolerance)}
end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return {1, 0}
",
    )
}

/// One admin write, atomically: the epoch must match, the key's revision must be
/// the expected one (compare-and-set), names stay unique; then the version is
/// bumped and a change record and an audit record are appended.
///
/// KEYS: epoch, keys, revs, names, version, changes, audit, api.
/// ARGV: epoch, op (`put`/`delete`/`api`), id, expected revision (`new` = must not
/// exist), stored JSON or api value, old lower name, new lower name, audit JSON.
/// Returns `{'ok', version, revision}` or `{reason, current revision}`.
pub(crate) fn write() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'epoch', 0, 0} end
local op = ARGV[2]
local id = ARGV[3]
local rev = 0
if op ~= 'api' then
  rev = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  local exists = redis.call('HEXISTS', KEYS[2], id) == 1
  if ARGV[4] == 'new' then
    if exists then return {'exists', rev, 0} end
  else
    if not exists then return {'not_found', 0, 0} end
    if tonumber(ARGV[4]) ~= rev then return {'conflict', rev, 0} end
  end
  if op == 'delete' then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    if ARGV[6] ~= '' then redis.call('HDEL', KEYS[4], ARGV[6]) end
    rev = rev + 1
  else
    local owner = redis.call('HGET', KEYS[4], ARGV[7])
    if owner and owner ~= id then return {'name_taken', rev, 0} end
    if ARGV[6] ~= '' and ARGV[6] ~= ARGV[7] then redis.call('HDEL', KEYS[4], ARGV[6]) end
    redis.call('HSET', KEYS[4], ARGV[7], id)
    redis.call('HSET', KEYS[2], id, ARGV[5])
    rev = redis.call('HINCRBY', KEYS[3], id, 1)
  end
else
  redis.call('SET', KEYS[8], ARGV[5])
end
local v = redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', '1000', '*', 'v', v, 'op', op, 'id', id)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', '10000', '*', 'j', ARGV[8])
return {'ok', v, rev}
",
    )
}

/// Replaces the keys that came from the keys file (seeding when the cluster is
/// empty). Refuses when the epoch or the applied file revision moved meanwhile, or
/// when a file key's id or name belongs to a key made through the admin API.
///
/// KEYS: epoch, keys, revs, names, version, changes, file_revision, api.
/// ARGV: expected epoch (`` = seed an empty cluster with ARGV[2] as epoch), new
/// epoch, expected file revision, new file revision, api value (`` = keep),
/// then triples of id, lower name, stored JSON. Returns `{'ok', version}` or `{reason, 0}`.
pub(crate) fn apply_file() -> Script {
    Script::new(
        r#"
local epoch = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if epoch then return {'seeded', 0} end
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[7], '0')
elseif epoch ~= ARGV[1] then
  return {'epoch', 0}
end
if tostring(tonumber(redis.call('GET', KEYS[7]) or '0')) ~= ARGV[3] then return {'moved', 0} end
local file_ids = {}
local n = (#ARGV - 5) / 3
for i = 0, n - 1 do
  local id = ARGV[6 + i * 3]
  local lname = ARGV[7 + i * 3]
  local cur = redis.call('HGET', KEYS[2], id)
  if cur and not string.find(cur, '^{"src":"file"') then return {'id_taken:' .. id, 0} end
  local owner = redis.call('HGET', KEYS[4], lname)
  if owner and owner ~= id then
    local o = redis.call('HGET', KEYS[2], owner)
    if o and not string.find(o, '^{"src":"file"') then return {'name_taken:' .. id, 0} end
  end
  file_ids[id] = true
end
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local id, v = all[i], all[i + 1]
  if string.find(v, '^{"src":"file"') and not file_ids[id] then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
  end
end
local names = redis.call('HGETALL', KEYS[4])
for i = 1, #names, 2 do
  local v = redis.call('HGET', KEYS[2], names[i + 1])
  if not v or string.find(v, '^{"src":"file"') then redis.call('HDEL', KEYS[4], names[i]) end
end
for i = 0, n - 1 do
  local id = ARGV[6 + i * 3]
  redis.call('HSET', KEYS[2], id, ARGV[8 + i * 3])
  redis.call('HSET', KEYS[4], ARGV[7 + i * 3], id)
  redis.call('HINCRBY', KEYS[3], id, 1)
end
if ARGV[5] ~= '' then redis.call('SET', KEYS[8], ARGV[5]) end
redis.call('SET', KEYS[7], ARGV[4])
local v = redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', '1000', '*', 'v', v, 'op', 'file', 'id', '')
return {'ok', v}
"#,
    )
}

/// A keys-file entry as the cluster stores it: never the plain key. An
/// operator-supplied `secret:` becomes its SHA-256 (plus a sealed copy when a seal
/// key is set, so it stays revealable).
pub(crate) fn to_stored(
    mut e: KeyEntry,
    src: Source,
    seal: Option<&crate::keys::seal::SealKey>,
) -> Result<Stored, String> {
    if let Some(s) = e.secret.take() {
        e.sha256 = Some(crate::keys::KeyHash::of(s.as_bytes()).to_hex());
        if let Some(key) = seal {
            let secret = crate::keys::Secret::new(s);
            e.sealed = Some(key.seal(&e.id, &secret)?);
        }
    }
    e.revision = None;
    Ok(Stored { src, entry: e })
}

pub(crate) fn stored_json(s: &Stored) -> String {
    // `src` first: the file-apply script recognises file keys by this prefix.
    serde_json::to_string(s).unwrap_or_default()
}
