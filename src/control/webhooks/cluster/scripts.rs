//! The Lua scripts of the webhook queue in Redis: each change of a delivery's
//! state is one atomic script, so two replicas never both move a delivery.
//! Every key is under the cluster's `kg:{<name>}` hash tag (one slot).

use redis::Script;

/// The enqueue loop shared by [`enqueue`] and [`keys_cas`]: quads of key, JSON,
/// created (ms), once-marker key (`''` = none) from ARGV index `first`. A
/// delivery already pending is left as it is; beyond `max` pending ones new ones
/// are refused (counted as dropped). KEYS[1..3]: pending, created, queue.
const ENQUEUE_LOOP: &str = r"
local added, dropped = 0, 0
for i = first, #ARGV, 4 do
  local k, j, c, once = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local fresh = true
  if once ~= '' then
    fresh = redis.call('SET', once, '1', 'NX', 'EX', ttl)
  end
  if fresh and redis.call('HEXISTS', KEYS[1], k) == 0 then
    if redis.call('ZCARD', KEYS[2]) >= max then
      dropped = dropped + 1
      if once ~= '' then redis.call('DEL', once) end
    else
      redis.call('HSET', KEYS[1], k, j)
      redis.call('ZADD', KEYS[2], c, k)
      redis.call('XADD', KEYS[3], '*', 'k', k)
      added = added + 1
    end
  end
end
";

/// Queues deliveries. KEYS: pending, created, queue. ARGV: max, once TTL (s),
/// then quads (see [`ENQUEUE_LOOP`]). Returns `{added, dropped}`.
pub(crate) fn enqueue() -> Script {
    Script::new(&format!(
        "local max, ttl, first = tonumber(ARGV[1]), ARGV[2], 3\n{ENQUEUE_LOOP}\nreturn {{added, dropped}}"
    ))
}

/// Key events of one change, once for the cluster: only when `:wh:keys_version`
/// still holds what the caller read (compare-and-set) are the new keys_seen and
/// version written and the deliveries queued. KEYS: pending, created, queue,
/// keys_version, keys_seen. ARGV: expected version (`''` = none yet), new
/// version, keys_seen JSON, max, then quads. Returns `{added, dropped}`, or
/// `{-1, 0}` when another replica moved the version first.
pub(crate) fn keys_cas() -> Script {
    Script::new(&format!(
        "if (redis.call('GET', KEYS[4]) or '') ~= ARGV[1] then return {{-1, 0}} end
redis.call('SET', KEYS[4], ARGV[2])
redis.call('SET', KEYS[5], ARGV[3])
local max, ttl, first = tonumber(ARGV[4]), '1', 5
{ENQUEUE_LOOP}
return {{added, dropped}}"
    ))
}

/// Moves retries that are due into the stream. KEYS: retry, pending, queue.
/// ARGV: now (ms), limit. Returns how many.
pub(crate) fn promote() -> Script {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, k in ipairs(due) do
  redis.call('ZREM', KEYS[1], k)
  if redis.call('HEXISTS', KEYS[2], k) == 1 then redis.call('XADD', KEYS[3], '*', 'k', k) end
end
return #due
",
    )
}

/// Settles a delivery. KEYS: queue, pending, created, retry. ARGV: group, stream
/// entry id (`''` = none held), delivery key, outcome, JSON, next attempt (ms).
/// Outcomes: `begin` (an attempt starts: its JSON is saved, the entry stays
/// held), `retry` (the entry is released; the delivery waits in `:wh:retry`),
/// `done` (delivered, given up or dropped: gone), `ack` (only the stream
/// entry goes: a second entry of a delivery already held).
pub(crate) fn settle() -> Script {
    Script::new(
        r"
local key, outcome = ARGV[3], ARGV[4]
if outcome == 'begin' then
  if redis.call('HEXISTS', KEYS[2], key) == 1 then redis.call('HSET', KEYS[2], key, ARGV[5]) end
  return 1
end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
if outcome == 'ack' then return 1 end
if outcome == 'retry' then
  if redis.call('HEXISTS', KEYS[2], key) == 1 then
    redis.call('HSET', KEYS[2], key, ARGV[5])
    redis.call('ZADD', KEYS[4], ARGV[6], key)
  end
else
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
  redis.call('ZREM', KEYS[4], key)
end
return 1
",
    )
}

/// Drops every pending delivery of one endpoint. KEYS: pending, created,
/// retry. ARGV: `<endpoint>/`. Stream entries left behind find
/// no delivery and are acknowledged by whoever reads them.
pub(crate) fn forget() -> Script {
    Script::new(
        r"
local n = 0
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(k, 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], k)
    redis.call('ZREM', KEYS[2], k)
    redis.call('ZREM', KEYS[3], k)
    n = n + 1
  end
end
return n
",
    )
}

/// Makes a pending delivery due now (resend): one waiting for a retry goes back
/// into the stream; one already there or held stays. KEYS: pending, retry,
/// queue. ARGV: key. Returns 1 if it is pending.
pub(crate) fn due_now() -> Script {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then redis.call('XADD', KEYS[3], '*', 'k', ARGV[1]) end
return 1
",
    )
}

/// Renews the entries this replica holds (their idle time starts again), only
/// those still its own. KEYS: queue. ARGV: group, consumer, ids. Returns the
/// ids it no longer holds (another replica took them over).
pub(crate) fn renew() -> Script {
    Script::new(
        r"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
",
    )
}

/// Releases the endpoints lock if it is still ours. KEYS: lock. ARGV: token.
pub(crate) fn unlock() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
}
