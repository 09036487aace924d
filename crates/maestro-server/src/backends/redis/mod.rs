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
//! A transaction whose body reads nothing (it only needs entities to exist or not, which the
//! commit script checks) commits with one script call on a multiplexed async connection that
//! every request shares, from the request's own task; so is the version read of a cached
//! list ([`shared`]). Other reads and transactions use plain (synchronous) connections with
//! timeouts, from a small pool, on blocking threads; the subscription has its own async
//! connection. When Redis
//! is unreachable every operation fails fast with 503, `/ready` reports `degraded`, and the
//! subscriber reconnects with back-off, then catches up from the journal.
//!
//! Where the code lives:
//! - [`scripts`]: the Lua scripts run inside Redis (`COMMIT`, `LIST`) and their SHA1s;
//! - [`keys`]: the key layout above;
//! - [`pool`]: synchronous connections, timeouts, Redis errors as ours, `blocking`;
//! - [`shared`]: the multiplexed async connection;
//! - [`sequencer`]: in-order, once-only delivery to local subscribers (hold, gap, fill);
//! - [`txn`]: optimistic transactions — the `WATCH`ing overlay base, encoding and commit;
//! - [`subscriber`]: the channel subscription, journal reads, catch-up and gap filling;
//! - [`reader`]: reads outside transactions, and the newest-first index scan both use;
//! - [`relay`]: pub/sub for best-effort messages outside the journal (the live terminal);
//! - this file: [`RedisStore`], `open`, and the [`Store`] implementation.

mod keys;
mod pool;
mod reader;
mod relay;
mod scripts;
mod sequencer;
mod shared;
mod subscriber;
mod txn;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use maestro_protocol::EventRecord;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::relay::RedisRelay;

use self::keys::Keys;
use self::pool::{Conn, Pool, blocking, io_error};
use self::reader::RedisReader;
use self::sequencer::Sequencer;
use self::shared::Shared;
use self::subscriber::{parse_entry, subscriber};
use crate::error::{Error, Result};
use crate::ports::{Collection, Deadline, Reader, Replay, Store, TxnBody};

/// Events a subscriber may fall behind by before it must catch up from the journal (the
/// Socket.IO bridge does; waiters read again). Each slot is 32 bytes, allocated at start.
const BUS_CAPACITY: usize = 8_192;

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
    /// The multiplexed connection (reads a request awaits, commits that read nothing).
    shared: Shared,
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
        let pool = Arc::new(Pool::new(client.clone()));
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
            client.clone(),
            keys.clone(),
            pool.clone(),
            seq.clone(),
            healthy.clone(),
            stop.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                shared: Shared::new(client, pool.counter()),
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

fn warn_about_persistence(conn: &mut Conn) {
    let get = |conn: &mut Conn, key: &str| -> Option<String> {
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

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn transact_erased(&self, mut body: TxnBody) -> Result<Box<dyn Any + Send>> {
        if let Some(done) = self.inner.write_only(&mut body).await {
            return done;
        }
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

    fn render_metrics(&self) -> String {
        format!(
            "# HELP maestro_redis_round_trips_total Round trips from this server's store to Redis: a command, a pipeline, a MULTI/EXEC block or a script call each count one (the event subscription and the terminal relay are not counted).\n\
             # TYPE maestro_redis_round_trips_total counter\n\
             maestro_redis_round_trips_total {}\n",
            self.inner.pool.round_trips()
        )
    }

    async fn collection_version(&self, coll: Collection) -> Result<u64> {
        let key = self.inner.keys.version(coll);
        let v: Option<u64> = self.inner.shared.query(redis::cmd("GET").arg(&key)).await?;
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
