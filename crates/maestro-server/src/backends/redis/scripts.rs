//! The Lua scripts that run inside Redis: `COMMIT` (applies a transaction's changes, numbers,
//! journals and publishes its events), `LIST` (an atomic collection read) and `PAGE` (one page
//! of an index, newest first, with the values), with the handles used to call them by SHA1.

/// Applies one transaction's changes; returns the sequence numbers given to its events.
///
/// `ARGV`: prefix, journal capacity, channel, then the operations, flat: `put <collection>
/// <id> <owner or ''> <json>`, `new` (as `put`, but the entity must not exist: the commit
/// fails with `MAESTRO_EXISTS` and writes nothing if it does), `req <collection> <id>` (the
/// entity must exist, else `MAESTRO_MISSING <n>` for the n-th `req`), `del <collection> <id>`, `ctr <name> <value>`, `ev <scope>
/// <event json>`, `due <index> <id> <ms or ''>` (sets or clears a deadline: a sorted set per
/// index, scored by the due time). Flat arguments rather than one JSON document: Redis does not decode
/// (and we do not escape) every entity twice. Called by its SHA1 (`EVALSHA`), loaded once.
pub(super) const COMMIT: &str = r#"
local p = ARGV[1]
local cap = tonumber(ARGV[2])
local ch = ARGV[3]
local seqs = {}
local written = {}
local n = #ARGV
-- Preconditions first: a failed one fails the whole commit before anything is written.
local i = 4
local r = 0
while i <= n do
  local t = ARGV[i]
  if t == 'req' then
    if redis.call('EXISTS', p .. 'e:' .. ARGV[i + 1] .. ':' .. ARGV[i + 2]) == 0 then
      return redis.error_reply('MAESTRO_MISSING ' .. r)
    end
    r = r + 1
    i = i + 3
  elseif t == 'new' then
    local k = p .. 'e:' .. ARGV[i + 1] .. ':' .. ARGV[i + 2]
    if redis.call('EXISTS', k) == 1 then
      return redis.error_reply('MAESTRO_EXISTS ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2])
    end
    i = i + 5
  elseif t == 'put' then
    i = i + 5
  elseif t == 'due' then
    i = i + 4
  else
    i = i + 3
  end
end
i = 4
while i <= n do
  local t = ARGV[i]
  if t == 'put' or t == 'new' then
    local c, id, o, v = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    i = i + 5
    written[c] = true
    local k = p .. 'e:' .. c .. ':' .. id
    if redis.call('EXISTS', k) == 0 then
      local ord = redis.call('INCR', p .. 'c:~order')
      redis.call('ZADD', p .. 'i:' .. c .. ':*', ord, id)
      if o ~= '' then
        redis.call('ZADD', p .. 'i:' .. c .. ':' .. o, ord, id)
        redis.call('HSET', p .. 'owner:' .. c, id, o)
      end
    end
    redis.call('SET', k, v)
  elseif t == 'del' then
    local c, id = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    written[c] = true
    local k = p .. 'e:' .. c .. ':' .. id
    if redis.call('DEL', k) == 1 then
      redis.call('ZREM', p .. 'i:' .. c .. ':*', id)
      local o = redis.call('HGET', p .. 'owner:' .. c, id)
      if o then
        redis.call('ZREM', p .. 'i:' .. c .. ':' .. o, id)
        redis.call('HDEL', p .. 'owner:' .. c, id)
      end
    end
  elseif t == 'ctr' then
    redis.call('SET', p .. 'c:' .. ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif t == 'req' then
    i = i + 3
  elseif t == 'due' then
    local k, id, at = p .. 'd:' .. ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    if at == '' then
      redis.call('ZREM', k, id)
    else
      redis.call('ZADD', k, at, id)
    end
  elseif t == 'ev' then
    local sc, b = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local seq = redis.call('INCR', p .. 'seq:' .. sc)
    redis.call('XADD', p .. 'j:' .. sc, 'MAXLEN', '~', cap, '0-' .. seq, 'e', b)
    redis.call('PUBLISH', ch, seq .. '|' .. b)
    table.insert(seqs, seq)
  else
    return redis.error_reply('unknown commit operation ' .. tostring(t))
  end
end
for c, _ in pairs(written) do
  redis.call('INCR', p .. 'v:' .. c)
end
return seqs
"#;

/// SHA1 of [`COMMIT`], for `EVALSHA`.
pub(super) fn commit_sha() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| redis::Script::new(COMMIT).get_hash().to_owned())
}

/// [`LIST`], called by its SHA1 (loaded on first use, and again after a Redis restart).
pub(super) fn list_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(LIST))
}

/// Lists a collection atomically: ids in creation order, then their values.
const LIST: &str = r#"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then
    table.insert(out, id)
    table.insert(out, v)
  end
end
return out
"#;

/// [`PAGE`], called by its SHA1 (loaded on first use, and again after a Redis restart).
pub(super) fn page_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PAGE))
}

/// One page of an index, newest first, in one round trip: `KEYS[1]` the index, `ARGV` the
/// entity key prefix, the score to start at (`+inf` or `(<score>`) and the page size. Returns
/// `id, score, value` flat, the value `false` (nil) for an id whose entity is gone.
const PAGE: &str = r#"
local page = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], '-inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #page, 2 do
  table.insert(out, page[i])
  table.insert(out, page[i + 1])
  table.insert(out, redis.call('GET', ARGV[1] .. page[i]) or false)
end
return out
"#;
