//! Synchronous connections: the pool, their timeouts, how Redis errors map to ours
//! (unavailable vs. storage), and running blocking I/O from async code.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Connection, RedisError};

use crate::error::{Error, Result};

const IO_TIMEOUT: Duration = Duration::from_secs(2);
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
    pub(super) client: redis::Client,
    pub(super) idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub(super) fn get(&self) -> Result<Connection> {
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

    pub(super) fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
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
