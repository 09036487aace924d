//! Transactions: the overlay base whose reads `WATCH` what they touch ([`RedisBase`]), the
//! retry loop that commits through the `COMMIT` script in `MULTI`/`EXEC`, how changes are
//! encoded for it, and the local delivery of a commit's own events.
//!
//! A transaction is first run with no connection at all ([`Inner::write_only`]): most writes
//! of an agent's day (a task, a session, a message to an id it holds) only need some entity
//! to exist or not, which the commit script checks. Such a body's changes go to Redis in one
//! script call on the shared connection, from the request's own task. A body that reads runs
//! again from the start, as a watched transaction on a pooled connection of its own.

use std::any::Any;
use std::collections::HashSet;

use maestro_protocol::EventRecord;

use super::Inner;
use super::keys::Keys;
use super::pool::{Conn, blocking, io_error};
use super::reader::{Query, scan_index_newest};
use super::scripts::{COMMIT, commit_sha};
use super::sequencer::{HOLD_LIMIT, Offer};
use super::subscriber::read_journal;
use crate::backends::overlay::{Base, Changes, Overlay, Write};
use crate::error::{Error, Result};
use crate::ports::{Collection, TxnBody};
use crate::util::now_ms;

const MAX_ATTEMPTS: usize = 200;

impl Inner {
    pub(super) fn run_transaction(&self, mut body: TxnBody) -> Result<Box<dyn Any + Send>> {
        let mut conn = self.pool.get()?;
        let result = self.attempts(&mut conn, &mut body);
        match &result {
            Err(Error::Unavailable(_)) | Err(Error::Storage(_)) => {} // connection dropped
            _ => self.pool.put(conn),
        }
        result
    }

    fn attempts(&self, conn: &mut Conn, body: &mut TxnBody) -> Result<Box<dyn Any + Send>> {
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
                    conn.unwatch_later();
                    return Err(e);
                }
            };
            let (_, changes) = overlay.into_changes();
            if changes.is_empty() {
                // Nothing to commit: the watches are cleared with the connection's next
                // request, not with a round trip now.
                conn.unwatch_later();
                return Ok(value);
            }
            let timestamp = now_ms();
            let requires = required(&changes);
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
                Err(e) => return Err(refused(e, &requires)),
            };
            let Some((seqs,)) = reply else {
                continue; // something we read changed: run the body again
            };
            self.deliver_local(conn, numbered(pending, seqs));
            return Ok(value);
        }
        Err(Error::Conflict(
            "too much contention on the same data; retry".into(),
        ))
    }

    /// Runs `body` with nothing to read. If it reads nothing (a creation that only needs its
    /// project to exist, say), nothing needs watching, and its changes are committed by one
    /// script call on the shared connection, from this task: no thread and no connection of
    /// its own. `None` when the body tried to read: it must run as a watched transaction
    /// ([`Inner::run_transaction`]), from the start.
    pub(super) async fn write_only(
        &self,
        body: &mut TxnBody,
    ) -> Option<Result<Box<dyn Any + Send>>> {
        let mut overlay = Overlay::new(NoReads { tried: false });
        // A body that panics fails its own transaction only, as on a blocking thread.
        let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut overlay)))
            .unwrap_or_else(|_| {
                Err(Error::Internal(
                    "transaction task failed: the transaction body panicked".into(),
                ))
            });
        let (base, changes) = overlay.into_changes();
        if base.tried {
            return None;
        }
        let value = match value {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        if changes.is_empty() {
            return Some(Ok(value));
        }
        Some(self.commit_shared(changes).await.map(|()| value))
    }

    /// Commits changes that depend on no read: `EVALSHA` alone (the script is atomic; with
    /// nothing watched, `MULTI`/`EXEC` would add nothing), then delivers the events.
    async fn commit_shared(&self, changes: Changes) -> Result<()> {
        let requires = required(&changes);
        let (ops, pending) = encode_ops(changes, now_ms());
        let mut commit = redis::cmd("EVALSHA");
        commit
            .arg(commit_sha())
            .arg(0)
            .arg(&self.keys.prefix)
            .arg(self.journal_capacity)
            .arg(self.keys.channel())
            .arg(ops);
        let mut answer = self.shared.query_raw::<Vec<u64>>(&commit).await?;
        if matches!(&answer, Err(e) if e.kind() == redis::ErrorKind::NoScriptError) {
            // First commit since Redis started: load the script, send the commit again.
            self.shared
                .query::<String>(redis::cmd("SCRIPT").arg("LOAD").arg(COMMIT))
                .await?;
            answer = self.shared.query_raw(&commit).await?;
        }
        let seqs = answer.map_err(|e| refused(e, &requires))?;
        self.deliver_local_async(numbered(pending, seqs)).await;
        Ok(())
    }

    /// [`Inner::deliver_local`] from a task: a gap is awaited, not blocked on, and only a
    /// gap still open after [`HOLD_LIMIT`] is filled from the journal on a blocking thread.
    async fn deliver_local_async(&self, records: Vec<EventRecord>) {
        let mut unfilled = Vec::new();
        for rec in records {
            if let Offer::Gap { .. } = self.seq.offer(&rec) {
                self.seq.hold(rec.clone());
                if !self
                    .seq
                    .wait_for_async(&rec.scope, rec.seq, HOLD_LIMIT)
                    .await
                {
                    unfilled.push(rec);
                }
            }
        }
        if unfilled.is_empty() {
            return;
        }
        let filled = blocking(|| match self.pool.get() {
            Ok(mut conn) => {
                self.fill_gaps(&mut conn, unfilled);
                self.pool.put(conn);
                Ok(())
            }
            Err(e) => Err(e),
        });
        if let Err(e) = filled {
            tracing::warn!(error = %e, "cannot fill an event gap from the journal");
        }
    }

    /// Our own commits reach our subscribers now, in order: an event whose predecessors are
    /// not delivered yet waits for them briefly (they are being delivered by the requests
    /// that committed them, or by the channel), then fills the gap from the journal.
    fn deliver_local(&self, conn: &mut Conn, records: Vec<EventRecord>) {
        for rec in records {
            if let Offer::Gap { .. } = self.seq.offer(&rec) {
                let (scope, seq) = (rec.scope.clone(), rec.seq);
                self.seq.hold(rec.clone());
                if self.seq.wait_for(&scope, seq, HOLD_LIMIT) {
                    continue;
                }
                self.fill_gaps(conn, vec![rec]);
            }
        }
    }

    /// Delivers each of `records`, whose predecessors did not come in time, after those of
    /// them the journal still has.
    fn fill_gaps(&self, conn: &mut Conn, records: Vec<EventRecord>) {
        for rec in records {
            let after = self.seq.last(&rec.scope);
            if after >= rec.seq {
                continue;
            }
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

/// The entities a commit requires, in the order the script numbers them, with the resource
/// named when one is missing.
fn required(changes: &Changes) -> Vec<(String, &'static str)> {
    changes
        .requires
        .iter()
        .map(|(_, id, resource)| (id.clone(), *resource))
        .collect()
}

/// The commit's events with the sequence numbers the script gave them.
fn numbered(pending: Vec<EventRecord>, seqs: Vec<u64>) -> Vec<EventRecord> {
    pending
        .into_iter()
        .zip(seqs)
        .map(|(mut rec, seq)| {
            rec.seq = seq;
            rec
        })
        .collect()
}

/// The error of a commit Redis answered with an error: a precondition of the script that did
/// not hold (`MAESTRO_MISSING <n>`: the n-th required entity; `MAESTRO_EXISTS`), or Redis's.
fn refused(e: redis::RedisError, requires: &[(String, &'static str)]) -> Error {
    let text = e.to_string();
    if let Some(rest) = text.split("MAESTRO_MISSING").nth(1) {
        // "MAESTRO_MISSING <n>", however the client library renders the code.
        let digits: String = rest
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return match digits.parse::<usize>().ok().and_then(|n| requires.get(n)) {
            Some((id, resource)) => Error::not_found(resource, id.as_str()),
            None => Error::Internal(format!("commit precondition failed: {e}")),
        };
    }
    if text.contains("MAESTRO_EXISTS") {
        return Error::Conflict("an entity with this id already exists; retry".into());
    }
    io_error(e)
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

/// The base of a first run that has no connection: any read marks the run as one that reads
/// (and fails, whatever the body then does with the error: the run is discarded).
struct NoReads {
    tried: bool,
}

impl NoReads {
    fn tried<T>(&mut self) -> Result<T> {
        self.tried = true;
        Err(Error::Internal(
            "a read in a transaction run without a connection".into(),
        ))
    }
}

impl Base for NoReads {
    fn get(&mut self, _: Collection, _: &str) -> Result<Option<Vec<u8>>> {
        self.tried()
    }
    fn list(&mut self, _: Collection, _: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        self.tried()
    }
    fn exists(&mut self, _: Collection, _: &str) -> Result<bool> {
        self.tried()
    }
    fn counter(&mut self, _: &str) -> Result<u64> {
        self.tried()
    }
    fn head_seq(&mut self, _: &str) -> Result<u64> {
        self.tried()
    }
    fn scan_newest(
        &mut self,
        _: Collection,
        _: &str,
        _: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.tried()
    }
}

/// Reads for a transaction: everything read is `WATCH`ed.
struct RedisBase<'a> {
    conn: &'a mut Conn,
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

impl Query for RedisBase<'_> {
    fn query<T: redis::FromRedisValue>(&mut self, keys: &[String], cmd: &redis::Cmd) -> Result<T> {
        self.watched(keys, cmd)
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
