//! Synchronous connections: the pool, their timeouts, the count of round trips made on them,
//! how Redis errors map to ours (unavailable vs. storage), and running blocking I/O from async
//! code.
//!
//! Every command the store sends goes through a pooled [`Conn`] or the shared connection
//! (`shared.rs`), which count into the same counter, so it counts every round trip the store
//! makes (`maestro_redis_round_trips_total`): a single command, a pipeline, a `MULTI`/`EXEC`
//! block and a script call each count one — what a request waits for is the number of times
//! it crosses to Redis and back, not the number of commands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Cmd, Connection, ConnectionLike, RedisError, RedisResult, Value};

use crate::error::{Error, Result};

pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept. Above the 50 concurrent requests a busy server sees, so a burst does
/// not open and close a connection per request.
const POOL_SIZE: usize = 64;

pub(super) fn io_error(e: RedisError) -> Error {
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

/// A few synchronous connections, reused; a broken one is dropped, not returned.
pub(super) struct Pool {
    client: redis::Client,
    idle: Mutex<Vec<Conn>>,
    /// Round trips made on this pool's connections, shared with each of them.
    round_trips: Arc<AtomicU64>,
}

impl Pool {
    pub(super) fn new(client: redis::Client) -> Self {
        Self {
            client,
            idle: Mutex::new(Vec::new()),
            round_trips: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(super) fn get(&self) -> Result<Conn> {
        if let Some(c) = self.idle.lock().expect("pool lock").pop() {
            return Ok(c);
        }
        let conn = self
            .client
            .get_connection_with_timeout(IO_TIMEOUT)
            .map_err(io_error)?;
        conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(io_error)?;
        conn.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_error)?;
        Ok(Conn {
            conn,
            round_trips: self.round_trips.clone(),
            unwatch: false,
        })
    }

    pub(super) fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
    }

    /// The counter of round trips, for requests sent elsewhere that count with the pool's.
    pub(super) fn counter(&self) -> Arc<AtomicU64> {
        self.round_trips.clone()
    }

    /// Round trips made so far on this pool's connections.
    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

/// A pooled connection that counts its round trips: each request sent and answered (one
/// command, or a pipeline or `MULTI`/`EXEC` block sent at once) adds one. The counter is
/// cloned once when the connection is opened, so counting costs one relaxed add.
///
/// A transaction that wrote nothing leaves its keys watched; rather than a round trip of its
/// own, the `UNWATCH` goes out in front of the next request on the connection
/// ([`Conn::unwatch_later`]), which is always before the next transaction's first `WATCH`.
pub(super) struct Conn {
    conn: Connection,
    round_trips: Arc<AtomicU64>,
    /// An `UNWATCH` is owed before the next request.
    unwatch: bool,
}

/// `UNWATCH`, encoded.
const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";

impl Conn {
    fn count(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Clears this connection's watches with its next request.
    pub(super) fn unwatch_later(&mut self) {
        self.unwatch = true;
    }

    /// `cmd` with the owed `UNWATCH` in front, and how many replies that adds.
    fn with_unwatch<'a>(&mut self, cmd: &'a [u8]) -> (std::borrow::Cow<'a, [u8]>, usize) {
        if std::mem::take(&mut self.unwatch) {
            let mut both = Vec::with_capacity(UNWATCH.len() + cmd.len());
            both.extend_from_slice(UNWATCH);
            both.extend_from_slice(cmd);
            (both.into(), 1)
        } else {
            (cmd.into(), 0)
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.count();
        match self.with_unwatch(cmd) {
            (cmd, 0) => self.conn.req_packed_command(&cmd),
            (both, skip) => {
                let mut replies = self.conn.req_packed_commands(&both, skip, 1)?;
                replies
                    .pop()
                    .ok_or_else(|| RedisError::from((redis::ErrorKind::ResponseError, "no reply")))
            }
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.count();
        let (cmd, skip) = self.with_unwatch(cmd);
        self.conn.req_packed_commands(&cmd, offset + skip, count)
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        if self.unwatch {
            return self.req_packed_command(&cmd.get_packed_command());
        }
        // A command sent without waiting for an answer is not a round trip.
        if !cmd.is_no_response() {
            self.count();
        }
        self.conn.req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn supports_pipelining(&self) -> bool {
        self.conn.supports_pipelining()
    }

    fn check_connection(&mut self) -> bool {
        if self.unwatch {
            return matches!(
                self.req_packed_command(b"*1\r\n$4\r\nPING\r\n"),
                Ok(Value::SimpleString(ref s)) if s == "PONG"
            );
        }
        self.count();
        self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}

/// Runs blocking Redis I/O from async code without stalling the runtime's other tasks.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
