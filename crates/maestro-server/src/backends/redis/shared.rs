//! One multiplexed asynchronous connection, for what needs no connection of its own: a read
//! that is not part of a transaction and that a request awaits (the version of a collection),
//! and the commit of a transaction that read nothing (see `txn.rs`).
//!
//! The pool's synchronous connections cost a request two thread hand-offs (the runtime's
//! worker gives its place to another thread while it waits, then takes it back) and a
//! connection each; here the request's task just awaits, and the requests of every task go
//! out on one socket, several in one write when they come together, which Redis then answers
//! in one read. A connection that fails (Redis restarted, a timeout) is dropped and the next
//! request opens another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError};

use super::pool::{IO_TIMEOUT, io_error};
use crate::error::Result;

pub(super) struct Shared {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// The pool's counter of round trips: a request sent here counts one too.
    round_trips: Arc<AtomicU64>,
}

impl Shared {
    pub(super) fn new(client: redis::Client, round_trips: Arc<AtomicU64>) -> Self {
        Self {
            client,
            conn: Mutex::new(None),
            round_trips,
        }
    }

    /// The connection, opened if there is none.
    async fn conn(&self) -> Result<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().expect("shared connection lock").clone() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(IO_TIMEOUT)
            .set_response_timeout(IO_TIMEOUT);
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(io_error)?;
        // Two requests may both have opened one: the first kept serves both from now on.
        let mut slot = self.conn.lock().expect("shared connection lock");
        Ok(slot.get_or_insert(c).clone())
    }

    /// Sends `cmd` and awaits its answer.
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.query_raw(cmd).await?.map_err(io_error)
    }

    /// Sends `cmd` and awaits its answer, with Redis's own error for the caller to read (an
    /// error reply); the outer error is a connection that could not be opened. A connection
    /// that failed is dropped.
    pub(super) async fn query_raw<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<std::result::Result<T, RedisError>> {
        let mut c = self.conn().await?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let answer = cmd.query_async(&mut c).await;
        if let Err(e) = &answer
            && (e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error())
        {
            self.conn.lock().expect("shared connection lock").take();
        }
        Ok(answer)
    }
}
