//! The Redis backend: all state in one Redis, shared by any number of servers.
//!
//! Layout (every key starts with the configured prefix, `maestro:` by default):
//! - `e:<collection>:<id>` — an entity's JSON;
//! - `i:<collection>:*` and `i:<collection>:<owner>` — sorted sets of ids by creation order;
//!   `owner:<collection>` — hash id → owner, to unindex on delete;
//! - `c:<name>` — counters (`c:~order` orders creations);
//! - `seq:<scope>` — the last event sequence number of a scope;
//! - `v:<collection>` — bumped by every commit that writes the collection (read caches);
//! - `j:<scope>` — the event journal, a Stream with ids `0-<seq>` and approximate MAXLEN;
//! - channel `events` — every committed event as `<seq>|<json>`.
//!
//! Transactions are optimistic: the body runs against an overlay whose reads `WATCH` the keys
//! they touch; the changes are applied by one Lua script (`EVALSHA`) inside `MULTI`/`EXEC`,
//! which also numbers, journals and publishes the events. If anything read has changed, `EXEC`
//! aborts and the body runs again on fresh data — no read-modify-write ever spans two round
//! trips unguarded. What a body only needs to exist (`Txn::require`) or not to exist
//! (`Txn::insert`) is not read at all: the script checks it before writing anything, so a task
//! creation is a single round trip.
//!
//! Delivery: each server subscribes to the channel and passes events to its local subscribers
//! through a [`Sequencer`] that delivers each scope's events once, in order, filling any hole
//! (a missed message, a reconnect) from the journal. A server's own commits go through the same
//! sequencer right after `EXEC`, so its clients see them before the HTTP response (an event
//! whose predecessors are still on their way waits for them briefly, see [`Sequencer`]).
//!
//! Blocking reads and transactions use plain (synchronous) connections with timeouts, from a
//! small pool, on blocking threads; the subscription has its own async connection. When Redis
//! is unreachable every operation fails fast with 503, `/ready` reports `degraded`, and the
//! subscriber reconnects with back-off, then catches up from the journal.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use maestro_protocol::EventRecord;
use redis::{Connection, RedisError, Value as RValue};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::overlay::{Base, Changes, Overlay, Write};
use crate::error::{Error, Result};
use crate::ports::{Collection, Deadline, Reader, Replay, Store, TxnBody};
use crate::util::now_ms;

const BUS_CAPACITY: usize = 65_536;
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_ATTEMPTS: usize = 200;
/// Idle connections kept. Above the 50 concurrent requests a busy server sees, so a burst does
/// not open and close a connection per request.
const POOL_SIZE: usize = 64;

/// Applies one transaction's changes; returns the sequence numbers given to its events.
///
/// `ARGV`: prefix, journal capacity, channel, then the operations, flat: `put <collection>
/// <id> <owner or ''> <json>`, `new` (as `put`, but the entity must not exist: the commit
/// fails with `MAESTRO_EXISTS` and writes nothing if it does), `req <collection> <id>` (the
/// entity must exist, else `MAESTRO_MISSING <n>` for the n-th `req`), `del <collection> <id>`, `ctr <name> <value>`, `ev <scope>
/// <event json>`, `due <index> <id> <ms or ''>` (sets or clears a deadline: a sorted set per
/// index, scored by the due time). Flat arguments rather than one JSON document: Redis does not decode
/// (and we do not escape) every entity twice. Called by its SHA1 (`EVALSHA`), loaded once.
const COMMIT: &str = r#"
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
fn commit_sha() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| redis::Script::new(COMMIT).get_hash().to_owned())
}

/// [`LIST`], called by its SHA1 (loaded on first use, and again after a Redis restart).
fn list_script() -> &'static redis::Script {
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

fn io_error(e: RedisError) -> Error {
    use redis::ErrorKind as K;
    let transient = matches!(
        e.kind(),
        K::BusyLoadingError | K::TryAgain | K::MasterDown | K::ReadOnly | K::ClusterDown
    );
    if transient
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
    {
        Error::Unavailable(format!("redis: {e}"))
    } else {
        Error::Storage(format!("redis: {e}"))
    }
}

/// Key layout, shared by every part of the backend.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn entity(&self, coll: Collection, id: &str) -> String {
        format!("{}e:{}:{id}", self.prefix, coll.name())
    }
    fn entity_prefix(&self, coll: Collection) -> String {
        format!("{}e:{}:", self.prefix, coll.name())
    }
    fn index(&self, coll: Collection, owner: Option<&str>) -> String {
        format!("{}i:{}:{}", self.prefix, coll.name(), owner.unwrap_or("*"))
    }
    fn counter(&self, name: &str) -> String {
        format!("{}c:{name}", self.prefix)
    }
    fn version(&self, coll: Collection) -> String {
        format!("{}v:{}", self.prefix, coll.name())
    }
    fn seq(&self, scope: &str) -> String {
        format!("{}seq:{scope}", self.prefix)
    }
    fn journal(&self, scope: &str) -> String {
        format!("{}j:{scope}", self.prefix)
    }
    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
    fn deadlines(&self, index: Deadline) -> String {
        format!("{}d:{}", self.prefix, index.name())
    }
}

/// A few synchronous connections, reused; a broken one is dropped, not returned.
struct Pool {
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn get(&self) -> Result<Connection> {
        if let Some(c) = self.idle.lock().expect("pool lock").pop() {
            return Ok(c);
        }
        let conn = self
            .client
            .get_connection_with_timeout(IO_TIMEOUT)
            .map_err(io_error)?;
        conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_error)?;
        conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_error)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
    }
}

/// Runs blocking Redis I/O from async code without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Hands each scope's events to local subscribers once, in order, without holes.
///
/// Concurrent commits of one scope finish in any order, so a server's own event `n` often
/// arrives here before `n - 1` (committed a moment earlier by another request, or by another
/// server). Such an event is held ([`Sequencer::hold`]) and goes out as soon as its
/// predecessor does; only a hole that stays open longer than [`HOLD_LIMIT`] is filled from the
/// journal. Reading the journal at once, as this did before, cost an extra round trip on most
/// commits under load.
struct Sequencer {
    state: Mutex<SeqState>,
    /// Notified whenever an event is delivered.
    delivered: Condvar,
    bus: broadcast::Sender<Arc<EventRecord>>,
}

#[derive(Default)]
struct SeqState {
    last: HashMap<String, u64>,
    /// Events that arrived ahead of their predecessors, per scope, by `seq`.
    held: HashMap<String, BTreeMap<u64, EventRecord>>,
}

/// How long a server's own event may wait for the events before it before the journal is read.
const HOLD_LIMIT: Duration = Duration::from_millis(20);

enum Offer {
    Delivered,
    Duplicate,
    /// Events after `after` are missing before this one.
    Gap {
        after: u64,
    },
}

impl SeqState {
    /// Delivers `rec` (the next of its scope), then any held events that now follow.
    fn deliver(&mut self, bus: &broadcast::Sender<Arc<EventRecord>>, rec: EventRecord) {
        let scope = rec.scope.clone();
        let mut next = rec.seq + 1;
        self.last.insert(scope.clone(), rec.seq);
        let _ = bus.send(Arc::new(rec));
        if let Some(held) = self.held.get_mut(&scope) {
            while let Some(entry) = held.first_entry() {
                if *entry.key() < next {
                    entry.remove();
                } else if *entry.key() == next {
                    let rec = entry.remove();
                    self.last.insert(scope.clone(), rec.seq);
                    let _ = bus.send(Arc::new(rec));
                    next += 1;
                } else {
                    break;
                }
            }
            if held.is_empty() {
                self.held.remove(&scope);
            }
        }
    }
}

impl Sequencer {
    fn new(bus: broadcast::Sender<Arc<EventRecord>>) -> Self {
        Self {
            state: Mutex::new(SeqState::default()),
            delivered: Condvar::new(),
            bus,
        }
    }

    fn offer(&self, rec: &EventRecord) -> Offer {
        let mut st = self.state.lock().expect("sequencer lock");
        let seen = st.last.get(&rec.scope).copied().unwrap_or(0);
        if rec.seq <= seen {
            Offer::Duplicate
        } else if rec.seq == seen + 1 {
            st.deliver(&self.bus, rec.clone());
            drop(st);
            self.delivered.notify_all();
            Offer::Delivered
        } else {
            Offer::Gap { after: seen }
        }
    }

    /// Keeps `rec` until the events before it are delivered (then it goes out with them).
    fn hold(&self, rec: EventRecord) {
        let mut st = self.state.lock().expect("sequencer lock");
        let seen = st.last.get(&rec.scope).copied().unwrap_or(0);
        if rec.seq > seen {
            st.held
                .entry(rec.scope.clone())
                .or_default()
                .insert(rec.seq, rec);
        }
    }

    /// Waits (blocking) until `scope` has delivered up to `seq`, at most `limit`; whether it has.
    fn wait_for(&self, scope: &str, seq: u64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut st = self.state.lock().expect("sequencer lock");
        loop {
            if st.last.get(scope).copied().unwrap_or(0) >= seq {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .delivered
                .wait_timeout(st, left)
                .expect("sequencer lock")
                .0;
        }
    }

    /// Delivers `recs` (consecutive, from the journal) after a gap; if the journal no longer
    /// reaches back, skips ahead so delivery goes on (clients see the jump in `seq`).
    fn fill(&self, recs: Vec<EventRecord>) {
        let mut st = self.state.lock().expect("sequencer lock");
        for rec in recs {
            let seen = st.last.get(&rec.scope).copied().unwrap_or(0);
            if rec.seq <= seen {
                continue;
            }
            if rec.seq > seen + 1 {
                tracing::warn!(scope = %rec.scope, from = seen + 1, to = rec.seq - 1, "events no longer in the journal were skipped");
            }
            st.deliver(&self.bus, rec);
        }
        drop(st);
        self.delivered.notify_all();
    }

    fn baseline(&self, heads: HashMap<String, u64>) {
        let mut st = self.state.lock().expect("sequencer lock");
        for (scope, head) in heads {
            st.last.entry(scope).or_insert(head);
        }
    }

    /// The last `seq` delivered in `scope`.
    fn last(&self, scope: &str) -> u64 {
        let st = self.state.lock().expect("sequencer lock");
        st.last.get(scope).copied().unwrap_or(0)
    }

    /// Whether no scope has been seen yet (the first catch-up after start).
    fn is_new(&self) -> bool {
        self.state.lock().expect("sequencer lock").last.is_empty()
    }
}

/// The Redis-backed store.
pub struct RedisStore {
    inner: Arc<Inner>,
    stop: CancellationToken,
    /// The subscriber task: `close` stops it and waits for it.
    tasks: TaskTracker,
}

/// What blocking transactions and reads share.
struct Inner {
    keys: Keys,
    pool: Arc<Pool>,
    seq: Arc<Sequencer>,
    journal_capacity: u64,
    healthy: Arc<AtomicBool>,
}

impl RedisStore {
    /// Connects (or keeps trying, if Redis is down), checks persistence, starts the subscriber.
    pub fn open(url: &str, prefix: &str, journal_capacity: u64) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Storage(format!("invalid REDIS_URL: {e}")))?;
        let keys = Keys {
            prefix: prefix.to_owned(),
        };
        let pool = Arc::new(Pool {
            client: client.clone(),
            idle: Mutex::new(Vec::new()),
        });
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        let seq = Arc::new(Sequencer::new(bus));
        let healthy = Arc::new(AtomicBool::new(false));
        match blocking(|| pool.get()) {
            Ok(mut conn) => {
                warn_about_persistence(&mut conn);
                healthy.store(true, Ordering::Relaxed);
                pool.put(conn);
            }
            Err(e) => {
                tracing::warn!(error = %e, "Redis is not reachable yet; serving degraded until it is")
            }
        }
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(subscriber(
            client,
            keys.clone(),
            pool.clone(),
            seq.clone(),
            healthy.clone(),
            stop.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                pool,
                seq,
                journal_capacity: journal_capacity.max(1),
                healthy,
            }),
            stop,
            tasks,
        })
    }
}

impl Inner {
    fn run_transaction(&self, mut body: TxnBody) -> Result<Box<dyn Any + Send>> {
        let mut conn = self.pool.get()?;
        let result = self.attempts(&mut conn, &mut body);
        match &result {
            Err(Error::Unavailable(_)) | Err(Error::Storage(_)) => {} // connection dropped
            _ => self.pool.put(conn),
        }
        result
    }

    fn attempts(&self, conn: &mut Connection, body: &mut TxnBody) -> Result<Box<dyn Any + Send>> {
        for _ in 0..MAX_ATTEMPTS {
            let base = RedisBase {
                conn: &mut *conn,
                keys: &self.keys,
                watched: HashSet::new(),
            };
            let mut overlay = Overlay::new(base);
            let value = match body(&mut overlay) {
                Ok(v) => v,
                Err(e) => {
                    let _ = redis::cmd("UNWATCH").exec(conn);
                    return Err(e);
                }
            };
            let (_, changes) = overlay.into_changes();
            if changes.is_empty() {
                redis::cmd("UNWATCH").exec(conn).map_err(io_error)?;
                return Ok(value);
            }
            let timestamp = now_ms();
            let requires: Vec<(String, &'static str)> = changes
                .requires
                .iter()
                .map(|(_, id, resource)| (id.clone(), *resource))
                .collect();
            let (ops, pending) = encode_ops(changes, timestamp);
            let reply: Option<(Vec<u64>,)> = match redis::pipe()
                .atomic()
                .cmd("EVALSHA")
                .arg(commit_sha())
                .arg(0)
                .arg(&self.keys.prefix)
                .arg(self.journal_capacity)
                .arg(self.keys.channel())
                .arg(ops)
                .query(conn)
            {
                Ok(reply) => reply,
                // First commit since Redis started: load the script, run the body again.
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(COMMIT)
                        .exec(conn)
                        .map_err(io_error)?;
                    continue;
                }
                Err(e) if e.to_string().contains("MAESTRO_MISSING") => {
                    // "MAESTRO_MISSING <n>", however the client library renders the code.
                    let text = e.to_string();
                    let n: Option<usize> = text.split("MAESTRO_MISSING").nth(1).and_then(|rest| {
                        let digits: String = rest
                            .trim_start_matches(|c: char| !c.is_ascii_digit())
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        digits.parse().ok()
                    });
                    return Err(match n.and_then(|n| requires.get(n)) {
                        Some((id, resource)) => Error::not_found(resource, id.as_str()),
                        None => Error::Internal(format!("commit precondition failed: {e}")),
                    });
                }
                Err(e) if e.to_string().contains("MAESTRO_EXISTS") => {
                    return Err(Error::Conflict(
                        "an entity with this id already exists; retry".into(),
                    ));
                }
                Err(e) => return Err(io_error(e)),
            };
            let Some((seqs,)) = reply else {
                continue; // something we read changed: run the body again
            };
            let records: Vec<EventRecord> = pending
                .into_iter()
                .zip(seqs)
                .map(|(mut rec, seq)| {
                    rec.seq = seq;
                    rec
                })
                .collect();
            self.deliver_local(conn, records);
            return Ok(value);
        }
        Err(Error::Conflict(
            "too much contention on the same data; retry".into(),
        ))
    }

    /// Our own commits reach our subscribers now, in order: an event whose predecessors are
    /// not delivered yet waits for them briefly (they are being delivered by the requests
    /// that committed them, or by the channel), then fills the gap from the journal.
    fn deliver_local(&self, conn: &mut Connection, records: Vec<EventRecord>) {
        for rec in records {
            if let Offer::Gap { .. } = self.seq.offer(&rec) {
                let (scope, seq) = (rec.scope.clone(), rec.seq);
                self.seq.hold(rec.clone());
                if self.seq.wait_for(&scope, seq, HOLD_LIMIT) {
                    continue;
                }
                let after = self.seq.last(&scope);
                match read_journal(conn, &self.keys, &rec.scope, after, rec.seq - 1) {
                    Ok(mut gap) => {
                        gap.push(rec);
                        self.seq.fill(gap);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fill an event gap from the journal");
                        self.seq.fill(vec![rec]);
                    }
                }
            }
        }
    }
}

fn warn_about_persistence(conn: &mut Connection) {
    let get = |conn: &mut Connection, key: &str| -> Option<String> {
        let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(key).query(conn).ok()?;
        v.get(1).cloned()
    };
    let aof = get(conn, "appendonly");
    let fsync = get(conn, "appendfsync");
    match (aof.as_deref(), fsync.as_deref()) {
        (Some("yes"), Some("always")) => {
            tracing::info!("Redis persistence: AOF with appendfsync always")
        }
        (Some("yes"), f) => {
            tracing::warn!(appendfsync = ?f, "Redis AOF is on but not fsynced on every write: the last second of acknowledged writes can be lost if Redis crashes")
        }
        (Some(_), _) => tracing::warn!(
            "Redis has appendonly off: acknowledged writes can be lost if Redis restarts (set appendonly yes, appendfsync always)"
        ),
        (None, _) => tracing::warn!(
            "cannot read Redis persistence settings (CONFIG GET refused); make sure AOF is on"
        ),
    }
}

/// Turns changes into the commit script's arguments (see [`COMMIT`]), and the events to
/// number.
fn encode_ops(changes: Changes, timestamp: i64) -> (Vec<Vec<u8>>, Vec<EventRecord>) {
    let mut ops: Vec<Vec<u8>> = Vec::new();
    for (coll, id, _) in changes.requires {
        ops.extend([
            b"req".to_vec(),
            coll.name().as_bytes().to_vec(),
            id.into_bytes(),
        ]);
    }
    for (name, value) in changes.counters {
        ops.extend([
            b"ctr".to_vec(),
            name.into_bytes(),
            value.to_string().into_bytes(),
        ]);
    }
    for (coll, id, write) in changes.writes {
        let coll = coll.name().as_bytes().to_vec();
        match write {
            Write::Put {
                owner,
                value,
                fresh,
            } => ops.extend([
                if fresh {
                    b"new".to_vec()
                } else {
                    b"put".to_vec()
                },
                coll,
                id.into_bytes(),
                owner.unwrap_or_default().into_bytes(),
                value,
            ]),
            Write::Delete => ops.extend([b"del".to_vec(), coll, id.into_bytes()]),
        }
    }
    for (index, id, due) in changes.deadlines {
        ops.extend([
            b"due".to_vec(),
            index.name().as_bytes().to_vec(),
            id.into_bytes(),
            due.map(|d| d.to_string().into_bytes()).unwrap_or_default(),
        ]);
    }
    let mut pending = Vec::with_capacity(changes.events.len());
    for ev in changes.events {
        let rec = EventRecord {
            scope: ev.scope,
            seq: 0,
            event: ev.event,
            data: ev.data,
            timestamp,
            session_id: ev.session_id,
        };
        let body = serde_json::to_vec(&rec).expect("events serialise");
        ops.extend([b"ev".to_vec(), rec.scope.clone().into_bytes(), body]);
        pending.push(rec);
    }
    (ops, pending)
}

/// `(after, upto]` of a scope's journal.
fn read_journal(
    conn: &mut Connection,
    keys: &Keys,
    scope: &str,
    after: u64,
    upto: u64,
) -> Result<Vec<EventRecord>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys.journal(scope))
        .arg(format!("0-{}", after + 1))
        .arg(format!("0-{upto}"))
        .query(conn)
        .map_err(io_error)?;
    entries
        .into_iter()
        .map(|(id, fields)| parse_entry(&id, &fields))
        .collect()
}

fn parse_entry(id: &str, fields: &[(String, String)]) -> Result<EventRecord> {
    let seq: u64 = id
        .strip_prefix("0-")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Storage(format!("unexpected journal id {id}")))?;
    let body = fields
        .iter()
        .find(|(k, _)| k == "e")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Error::Storage("journal entry without body".into()))?;
    let mut rec: EventRecord = serde_json::from_str(body)
        .map_err(|e| Error::Storage(format!("corrupt journal entry: {e}")))?;
    rec.seq = seq;
    Ok(rec)
}

/// The channel subscriber: reconnects forever, catches up from the journal after each (re)connect.
async fn subscriber(
    client: redis::Client,
    keys: Keys,
    pool: Arc<Pool>,
    seq: Arc<Sequencer>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.get_async_pubsub() => r,
        };
        let mut pubsub = match connected {
            Ok(p) => p,
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                tracing::debug!(error = %e, "redis subscriber cannot connect; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = pubsub.subscribe(keys.channel()).await {
            tracing::debug!(error = %e, "redis subscribe failed; retrying");
            continue;
        }
        backoff = Duration::from_millis(50);
        healthy.store(true, Ordering::Relaxed);
        // Subscribed: now anything missed while we were away is in the journal.
        let catch_up = {
            let (pool, keys, seq) = (pool.clone(), keys.clone(), seq.clone());
            tokio::task::spawn_blocking(move || catch_up(&pool, &keys, &seq)).await
        };
        if let Ok(Err(e)) | Err(e) = catch_up.map_err(|e| Error::Internal(e.to_string())) {
            // Going on would deliver new events past the ones not caught up: try again.
            healthy.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, "catching up from the journal failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        tracing::info!("subscribed to the Redis event channel");
        let mut messages = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(msg) = msg else { break };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Some(rec) = parse_message(&payload) else {
                tracing::warn!("malformed event message on the Redis channel");
                continue;
            };
            if let Offer::Gap { after } = seq.offer(&rec) {
                let (pool, keys, seq) = (pool.clone(), keys.clone(), seq.clone());
                let filled = tokio::task::spawn_blocking(move || {
                    let scope = rec.scope.clone();
                    let upto = rec.seq - 1;
                    fill_gap(&seq, rec, GAP_READ_ATTEMPTS, || {
                        let mut c = pool.get()?;
                        let r = read_journal(&mut c, &keys, &scope, after, upto);
                        if r.is_ok() {
                            pool.put(c);
                        }
                        r
                    })
                })
                .await;
                if !matches!(filled, Ok(true)) {
                    // Nothing past the hole was delivered: resubscribing catches up from the
                    // journal, in order, before anything new.
                    tracing::warn!("cannot read the journal to fill a gap; resubscribing");
                    break;
                }
            }
        }
        healthy.store(false, Ordering::Relaxed);
        tracing::warn!("lost the Redis event channel; reconnecting");
    }
}

/// Journal reads tried before a gap is left to the resubscription's catch-up.
const GAP_READ_ATTEMPTS: u32 = 3;

/// Delivers the events before `rec` that the channel skipped (read with `read`, retried), then
/// `rec`. If the journal cannot be read, `rec` is held, not delivered — nothing goes out past a
/// hole — and `false` tells the caller to resubscribe and catch up.
fn fill_gap(
    seq: &Sequencer,
    rec: EventRecord,
    attempts: u32,
    mut read: impl FnMut() -> Result<Vec<EventRecord>>,
) -> bool {
    for attempt in 0..attempts {
        match read() {
            Ok(mut gap) => {
                gap.push(rec);
                seq.fill(gap);
                return true;
            }
            Err(e) => {
                tracing::debug!(error = %e, attempt, "journal read for a gap failed");
                if attempt + 1 < attempts {
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
            }
        }
    }
    seq.hold(rec);
    false
}

fn parse_message(payload: &str) -> Option<EventRecord> {
    let (seq, body) = payload.split_once('|')?;
    let mut rec: EventRecord = serde_json::from_str(body).ok()?;
    rec.seq = seq.parse().ok()?;
    Some(rec)
}

/// Delivers every event after what each scope last delivered; scopes never seen start at the
/// head they have now (their history predates this server).
fn catch_up(pool: &Pool, keys: &Keys, seq: &Sequencer) -> Result<()> {
    let mut conn = pool.get()?;
    let mut heads = HashMap::new();
    let pattern = format!("{}seq:*", keys.prefix);
    // SCAN, not KEYS: never block Redis on a big keyspace.
    let mut scopes: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .map_err(io_error)?;
        scopes.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    scopes.sort();
    scopes.dedup();
    for key in scopes {
        let head: u64 = redis::cmd("GET")
            .arg(&key)
            .query(&mut conn)
            .map_err(io_error)?;
        let scope = key
            .trim_start_matches(&format!("{}seq:", keys.prefix))
            .to_owned();
        heads.insert(scope, head);
    }
    let first_time = seq.is_new();
    if first_time {
        seq.baseline(heads.clone());
    }
    for (scope, head) in heads {
        let after = seq.last(&scope);
        if head > after {
            let recs = read_journal(&mut conn, keys, &scope, after, head)?;
            seq.fill(recs);
        }
    }
    pool.put(conn);
    Ok(())
}

/// Reads for a transaction: everything read is `WATCH`ed.
struct RedisBase<'a> {
    conn: &'a mut Connection,
    keys: &'a Keys,
    watched: HashSet<String>,
}

impl RedisBase<'_> {
    /// Runs `cmd`, first watching those of `keys` not yet watched, in the same round trip
    /// (`WATCH` applies before the command runs, so the read is still guarded). Half the round
    /// trips of a transaction's reads are saved this way.
    fn watched<T: redis::FromRedisValue>(
        &mut self,
        keys: &[String],
        cmd: &redis::Cmd,
    ) -> Result<T> {
        let new: Vec<&String> = keys.iter().filter(|k| !self.watched.contains(*k)).collect();
        if new.is_empty() {
            return cmd.query(self.conn).map_err(io_error);
        }
        let (value,): (T,) = redis::pipe()
            .cmd("WATCH")
            .arg(&new)
            .ignore()
            .add_command(cmd.clone())
            .query(self.conn)
            .map_err(io_error)?;
        for k in new {
            self.watched.insert(k.clone());
        }
        Ok(value)
    }
}

/// A connection to run a read on: a transaction's (which `WATCH`es the keys it names) or a
/// plain one.
trait Query {
    fn query<T: redis::FromRedisValue>(&mut self, keys: &[String], cmd: &redis::Cmd) -> Result<T>;
}

impl Query for RedisBase<'_> {
    fn query<T: redis::FromRedisValue>(&mut self, keys: &[String], cmd: &redis::Cmd) -> Result<T> {
        self.watched(keys, cmd)
    }
}

impl Query for Connection {
    fn query<T: redis::FromRedisValue>(&mut self, _: &[String], cmd: &redis::Cmd) -> Result<T> {
        cmd.query(self).map_err(io_error)
    }
}

/// Walks `owner`'s index of `coll` newest first, a page at a time (4 ids, doubling up to
/// 512), visiting each entity until `visit` says stop. Each page starts below the lowest
/// score seen so far, so an id added or removed between pages is neither visited twice nor
/// makes the scan skip one: new ids are above the scan, removed ones simply absent.
fn scan_index_newest(
    q: &mut impl Query,
    keys: &Keys,
    coll: Collection,
    owner: &str,
    visit: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
) -> Result<()> {
    let index = keys.index(coll, Some(owner));
    let mut below = "+inf".to_owned();
    let mut size = 4;
    loop {
        // The index itself is not watched: every write that creates an entity changes it, and
        // what it creates lies above the scan (see `Reader::scan_newest_raw`). The entities
        // read are watched.
        let page: Vec<(String, u64)> = q.query(
            &[],
            redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&below)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(size),
        )?;
        let Some((_, lowest)) = page.last() else {
            return Ok(());
        };
        below = format!("({lowest}");
        let entity_keys: Vec<String> = page.iter().map(|(id, _)| keys.entity(coll, id)).collect();
        let values: Vec<Option<Vec<u8>>> =
            q.query(&entity_keys, redis::cmd("MGET").arg(&entity_keys))?;
        for ((id, _), value) in page.iter().zip(values) {
            if let Some(v) = value
                && !visit(id, &v)?
            {
                return Ok(());
            }
        }
        if page.len() < size {
            return Ok(());
        }
        size = (size * 2).min(512);
    }
}

impl Base for RedisBase<'_> {
    fn get(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        let key = self.keys.entity(coll, id);
        self.watched(std::slice::from_ref(&key), redis::cmd("GET").arg(&key))
    }

    fn list(&mut self, coll: Collection, owner: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        let index = self.keys.index(coll, owner);
        let ids: Vec<String> = self.watched(
            std::slice::from_ref(&index),
            redis::cmd("ZRANGE").arg(&index).arg(0).arg(-1),
        )?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let entity_keys: Vec<String> = ids.iter().map(|id| self.keys.entity(coll, id)).collect();
        let values: Vec<Option<Vec<u8>>> =
            self.watched(&entity_keys, redis::cmd("MGET").arg(&entity_keys))?;
        Ok(ids
            .into_iter()
            .zip(values)
            .filter_map(|(id, v)| v.map(|v| (id, v)))
            .collect())
    }

    fn exists(&mut self, coll: Collection, id: &str) -> Result<bool> {
        let key = self.keys.entity(coll, id);
        self.watched(std::slice::from_ref(&key), redis::cmd("EXISTS").arg(&key))
    }

    fn counter(&mut self, name: &str) -> Result<u64> {
        let key = self.keys.counter(name);
        let v: Option<u64> =
            self.watched(std::slice::from_ref(&key), redis::cmd("GET").arg(&key))?;
        Ok(v.unwrap_or(0))
    }

    fn head_seq(&mut self, scope: &str) -> Result<u64> {
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.keys.seq(scope))
            .query(self.conn)
            .map_err(io_error)?;
        Ok(v.unwrap_or(0))
    }

    fn scan_newest(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let keys = self.keys;
        scan_index_newest(self, keys, coll, owner, visit)
    }
}

/// Reads outside transactions, on a pooled connection.
struct RedisReader<'a> {
    store: &'a Inner,
    conn: Option<Connection>,
}

impl RedisReader<'_> {
    fn with<T>(&mut self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => blocking(|| self.store.pool.get())?,
        };
        let r = blocking(|| f(&mut conn));
        if !matches!(r, Err(Error::Unavailable(_)) | Err(Error::Storage(_))) {
            self.conn = Some(conn);
        }
        r
    }
}

impl Drop for RedisReader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.store.pool.put(c);
        }
    }
}

impl Reader for RedisReader<'_> {
    fn get_raw(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        let key = self.store.keys.entity(coll, id);
        self.with(|c| redis::cmd("GET").arg(&key).query(c).map_err(io_error))
    }

    fn list_entries_raw(
        &mut self,
        coll: Collection,
        owner: Option<&str>,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let index = self.store.keys.index(coll, owner);
        let prefix = self.store.keys.entity_prefix(coll);
        let flat: Vec<RValue> = self.with(|c| {
            list_script()
                .key(&index)
                .arg(&prefix)
                .invoke(c)
                .map_err(io_error)
        })?;
        Ok(flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [RValue::BulkString(id), RValue::BulkString(v)] => {
                    Some((String::from_utf8_lossy(id).into_owned(), v.clone()))
                }
                _ => None,
            })
            .collect())
    }

    fn head_seq(&mut self, scope: &str) -> Result<u64> {
        let key = self.store.keys.seq(scope);
        let v: Option<u64> =
            self.with(|c| redis::cmd("GET").arg(&key).query(c).map_err(io_error))?;
        Ok(v.unwrap_or(0))
    }

    fn scan_newest_raw(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        let store = self.store;
        self.with(|c| scan_index_newest(c, &store.keys, coll, owner, &mut |_, b| visit(b)))
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn transact_erased(&self, body: TxnBody) -> Result<Box<dyn Any + Send>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.run_transaction(body))
            .await
            .map_err(|e| Error::Internal(format!("transaction task failed: {e}")))?
    }

    fn due(&self, index: Deadline, now: i64, limit: usize) -> Result<Vec<String>> {
        let key = self.inner.keys.deadlines(index);
        let mut conn = blocking(|| self.inner.pool.get())?;
        let ids: Vec<String> = blocking(|| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query(&mut conn)
                .map_err(io_error)
        })?;
        self.inner.pool.put(conn);
        Ok(ids)
    }

    fn reader(&self) -> Result<Box<dyn Reader + Send + '_>> {
        Ok(Box::new(RedisReader {
            store: &self.inner,
            conn: None,
        }))
    }

    fn collection_version(&self, coll: Collection) -> Result<u64> {
        let key = self.inner.keys.version(coll);
        let mut reader = RedisReader {
            store: &self.inner,
            conn: None,
        };
        let v: Option<u64> =
            reader.with(|c| redis::cmd("GET").arg(&key).query(c).map_err(io_error))?;
        Ok(v.unwrap_or(0))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.inner.seq.bus.subscribe()
    }

    async fn replay(&self, scope: &str, after: u64, limit: usize) -> Result<Replay> {
        let (pool, keys, scope) = (
            self.inner.pool.clone(),
            self.inner.keys.clone(),
            scope.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            let head: Option<u64> = redis::cmd("GET")
                .arg(keys.seq(&scope))
                .query(&mut conn)
                .map_err(io_error)?;
            let head = head.unwrap_or(0);
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(keys.journal(&scope))
                .arg(format!("0-{}", after.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(limit.max(1))
                .query(&mut conn)
                .map_err(io_error)?;
            pool.put(conn);
            let events: Vec<EventRecord> = entries
                .iter()
                .map(|(id, f)| parse_entry(id, f))
                .collect::<Result<_>>()?;
            let complete = after >= head || events.first().is_some_and(|e| e.seq == after + 1);
            let events = if limit == 0 { Vec::new() } else { events };
            Ok(Replay {
                events,
                complete,
                head,
            })
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }

    async fn ready(&self) -> bool {
        let pool = self.inner.pool.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().ok()?;
            let pong: String = redis::cmd("PING").query(&mut conn).ok()?;
            pool.put(conn);
            Some(pong == "PONG")
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
        ok && self.inner.healthy.load(Ordering::Relaxed)
    }

    async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(2), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the Redis subscriber did not stop within 2 s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scope: &str, seq: u64) -> EventRecord {
        EventRecord {
            scope: scope.into(),
            seq,
            event: "x".into(),
            data: serde_json::Value::Null,
            timestamp: 0,
            session_id: None,
        }
    }

    fn drain(rx: &mut broadcast::Receiver<Arc<EventRecord>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(format!("{}:{}", e.scope, e.seq));
        }
        out
    }

    #[test]
    fn held_events_go_out_after_their_predecessors_once_and_in_order() {
        let (bus, mut rx) = broadcast::channel(64);
        let seq = Sequencer::new(bus);
        assert!(matches!(seq.offer(&rec("p", 1)), Offer::Delivered));
        // 3 and 4 finish before 2: held, not delivered, not read from anywhere.
        for n in [4, 3] {
            assert!(matches!(seq.offer(&rec("p", n)), Offer::Gap { after: 1 }));
            seq.hold(rec("p", n));
        }
        assert!(!seq.wait_for("p", 3, Duration::from_millis(1)));
        assert_eq!(drain(&mut rx), ["p:1"]);
        assert!(
            matches!(seq.offer(&rec("q", 1)), Offer::Delivered),
            "scopes are apart"
        );
        assert!(matches!(seq.offer(&rec("p", 2)), Offer::Delivered));
        assert!(seq.wait_for("p", 4, Duration::ZERO));
        assert_eq!(drain(&mut rx), ["q:1", "p:2", "p:3", "p:4"]);
        // The channel brings them again: duplicates.
        for n in 2..=4 {
            assert!(matches!(seq.offer(&rec("p", n)), Offer::Duplicate));
        }
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn a_gap_whose_journal_read_fails_delivers_nothing_past_the_hole() {
        let (bus, mut rx) = broadcast::channel(64);
        let seq = Sequencer::new(bus);
        assert!(matches!(seq.offer(&rec("p", 1)), Offer::Delivered));
        drain(&mut rx);
        // The channel skipped 2; reading it fails every time: 3 is not delivered.
        let mut tries = 0;
        let filled = fill_gap(&seq, rec("p", 3), 3, || {
            tries += 1;
            Err(Error::Unavailable("journal down".into()))
        });
        assert!(!filled);
        assert_eq!(tries, 3);
        assert!(drain(&mut rx).is_empty(), "nothing past the hole");
        // The catch-up after resubscribing brings 2; 3 (held) follows, once.
        seq.fill(vec![rec("p", 2), rec("p", 3)]);
        assert_eq!(drain(&mut rx), ["p:2", "p:3"]);
        // A read that fails once, then works, fills the gap.
        let mut tries = 0;
        let filled = fill_gap(&seq, rec("p", 5), 3, || {
            tries += 1;
            if tries == 1 {
                Err(Error::Unavailable("blip".into()))
            } else {
                Ok(vec![rec("p", 4)])
            }
        });
        assert!(filled);
        assert_eq!(drain(&mut rx), ["p:4", "p:5"]);
    }

    #[test]
    fn a_hole_filled_from_the_journal_releases_what_was_held() {
        let (bus, mut rx) = broadcast::channel(64);
        let seq = Sequencer::new(bus);
        seq.hold(rec("p", 3));
        seq.hold(rec("p", 5));
        seq.fill(vec![rec("p", 1), rec("p", 2)]);
        assert_eq!(drain(&mut rx), ["p:1", "p:2", "p:3"], "5 still waits for 4");
        // A waiter elsewhere is woken by the delivery of what it waits for.
        let seq = Arc::new(seq);
        let waiter = {
            let seq = seq.clone();
            std::thread::spawn(move || seq.wait_for("p", 5, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(seq.offer(&rec("p", 4)), Offer::Delivered));
        assert!(waiter.join().unwrap());
        assert_eq!(drain(&mut rx), ["p:4", "p:5"]);
    }
}
