//! The local backend: one redb file, group commit, in-process event bus.
//!
//! All writes go through one writer thread. It takes a batch of waiting transactions, runs
//! each against an overlay on top of a single redb write transaction, and commits the batch
//! with one fsync. A transaction whose body fails leaves nothing behind (its overlay is
//! dropped); a failed commit fails every transaction of the batch. Only after the commit is
//! durable are the batch's events published and the callers answered, so an acknowledged
//! write survives a crash and no subscriber ever sees an event that was not committed.
//!
//! Layout (all in one file):
//! - `entities`: `(collection, id)` → JSON
//! - `entity_meta`: `(collection, id)` → `(creation order, owner)`
//! - `entity_index`: `(collection, owner, order)` → id; owner `""` indexes the whole collection
//! - `counters`: `"order"` and `"seq:<scope>"` → u64
//! - `journal`: `(scope, seq)` → event JSON, the last `journal_capacity` events per scope
//! - `deadlines`: `(index, due, id)` → `()`, and `deadline_of`: `(index, id)` → due, the
//!   deadline indexes ([`Store::due`] reads a range of the first)

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use async_trait::async_trait;
use maestro_protocol::EventRecord;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::overlay::{Base, Changes, Overlay, Write};
use crate::error::{Error, Result};
use crate::ports::{Collection, Deadline, Reader, Replay, Store, TxnBody};
use crate::util::now_ms;

const ENTITIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entities");
const META: TableDefinition<(&str, &str), (u64, &str)> = TableDefinition::new("entity_meta");
const INDEX: TableDefinition<(&str, &str, u64), &str> = TableDefinition::new("entity_index");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const JOURNAL: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("journal");
const DEADLINES: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("deadlines");
const DEADLINE_OF: TableDefinition<(&str, &str), i64> = TableDefinition::new("deadline_of");

/// Most transactions committed together.
const MAX_BATCH: usize = 1024;
/// Events a subscriber may fall behind by before it must catch up from the journal (the
/// Socket.IO bridge does; waiters read again). Each slot is 32 bytes, allocated at start.
const BUS_CAPACITY: usize = 8_192;

struct Job {
    body: TxnBody,
    reply: oneshot::Sender<Result<Box<dyn Any + Send>>>,
}

enum Msg {
    Job(Job),
    Close,
}

/// Per collection, how many committed batches wrote to it ([`Store::collection_version`]).
type Versions = [AtomicU64; Collection::ALL.len()];

/// The redb-backed store.
pub struct LocalStore {
    /// `None` once closed: the file is released at `close`, even while something still holds
    /// the store, so a new server can open it at once.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    versions: Arc<Versions>,
    jobs: mpsc::UnboundedSender<Msg>,
    bus: broadcast::Sender<Arc<EventRecord>>,
    writer: std::sync::Mutex<Option<thread::JoinHandle<()>>>,
}

impl LocalStore {
    /// The open database, or 503 once the store is closed.
    fn db(&self) -> Result<Arc<Database>> {
        self.db
            .read()
            .expect("db lock")
            .clone()
            .ok_or_else(|| Error::Unavailable("the store is shutting down".into()))
    }

    /// Opens (or creates) `maestro.redb` in `dir` and starts the writer thread.
    pub fn open(dir: &Path, journal_capacity: u64) -> Result<Self> {
        crate::util::files::create_private_dir(dir)
            .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        // Created 0600 before redb opens it (redb would create it 0644), and narrowed if an
        // older version left it readable.
        let path = dir.join("maestro.redb");
        crate::util::files::ensure_private_file(&path)
            .map_err(|e| Error::Storage(format!("cannot create {}: {e}", path.display())))?;
        let db = Database::create(path)?;
        let wtx = db.begin_write()?;
        wtx.open_table(ENTITIES)?;
        wtx.open_table(META)?;
        wtx.open_table(INDEX)?;
        wtx.open_table(COUNTERS)?;
        wtx.open_table(JOURNAL)?;
        wtx.open_table(DEADLINES)?;
        wtx.open_table(DEADLINE_OF)?;
        wtx.commit()?;

        let db = Arc::new(db);
        let versions: Arc<Versions> = Arc::new(Default::default());
        let (jobs, rx) = mpsc::unbounded_channel();
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        let writer = {
            let db = db.clone();
            let bus = bus.clone();
            let versions = versions.clone();
            thread::Builder::new()
                .name("maestro-writer".into())
                .spawn(move || writer_loop(&db, &versions, rx, &bus, journal_capacity.max(1)))
                .map_err(|e| Error::Internal(format!("cannot start writer thread: {e}")))?
        };
        Ok(Self {
            db: std::sync::RwLock::new(Some(db)),
            versions,
            jobs,
            bus,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }
}

#[async_trait]
impl Store for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn transact_erased(&self, body: TxnBody) -> Result<Box<dyn Any + Send>> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Msg::Job(Job { body, reply }))
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the store is shutting down".into()))?
    }

    fn reader(&self) -> Result<Box<dyn Reader + Send + '_>> {
        Ok(Box::new(LocalReader {
            rtx: self.db()?.begin_read()?,
        }))
    }

    async fn collection_version(&self, coll: Collection) -> Result<u64> {
        Ok(self.versions[coll as usize].load(Ordering::Acquire))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.bus.subscribe()
    }

    fn due(&self, index: Deadline, now: i64, limit: usize) -> Result<Vec<String>> {
        let rtx = self.db()?.begin_read()?;
        let table = rtx.open_table(DEADLINES)?;
        let name = index.name();
        let mut out = Vec::new();
        for entry in table.range((name, i64::MIN, "")..(name, now.saturating_add(1), ""))? {
            if out.len() >= limit {
                break;
            }
            let (key, _) = entry?;
            out.push(key.value().2.to_owned());
        }
        Ok(out)
    }

    async fn replay(&self, scope: &str, after: u64, limit: usize) -> Result<Replay> {
        let rtx = self.db()?.begin_read()?;
        let head = rtx
            .open_table(COUNTERS)?
            .get(seq_key(scope).as_str())?
            .map(|v| v.value())
            .unwrap_or(0);
        let journal = rtx.open_table(JOURNAL)?;
        let mut events = Vec::new();
        let mut first_seen = None;
        for entry in journal.range((scope, after.saturating_add(1))..=(scope, u64::MAX))? {
            let (key, value) = entry?;
            first_seen.get_or_insert(key.value().1);
            if events.len() >= limit {
                break;
            }
            events.push(
                serde_json::from_slice(value.value())
                    .map_err(|e| Error::Storage(format!("corrupt journal entry: {e}")))?,
            );
        }
        let complete = after >= head || first_seen == Some(after + 1);
        Ok(Replay {
            events,
            complete,
            head,
        })
    }

    async fn ready(&self) -> bool {
        !self.jobs.is_closed()
    }

    async fn close(&self) {
        let handle = self.writer.lock().expect("writer lock").take();
        if let Some(handle) = handle {
            // The writer finishes what is queued before the marker, then stops; later
            // transactions fail with 503 instead of hanging.
            let _ = self.jobs.send(Msg::Close);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        self.db.write().expect("db lock").take();
    }
}

fn seq_key(scope: &str) -> String {
    format!("seq:{scope}")
}

/// The writer thread: batch, run, commit, publish, answer.
fn writer_loop(
    db: &Database,
    versions: &Versions,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    bus: &broadcast::Sender<Arc<EventRecord>>,
    journal_capacity: u64,
) {
    let mut closing = false;
    while !closing {
        let Some(Msg::Job(first)) = rx.blocking_recv() else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        run_batch(db, versions, batch, bus, journal_capacity);
    }
    // Anything still queued is answered with an error, never left hanging.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Job(job) = msg {
            let _ = job
                .reply
                .send(Err(Error::Unavailable("the store is shutting down".into())));
        }
    }
}

fn run_batch(
    db: &Database,
    versions: &Versions,
    batch: Vec<Job>,
    bus: &broadcast::Sender<Arc<EventRecord>>,
    journal_capacity: u64,
) {
    let mut outcomes: Vec<(oneshot::Sender<_>, Result<Box<dyn Any + Send>>)> =
        Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    // Bit `c` set: the batch wrote to collection `c`.
    let mut written = 0u32;
    let committed = (|| -> Result<()> {
        let mut wtx = db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        {
            let mut tables = Tables::open(&wtx)?;
            for mut job in batch.into_iter() {
                let mut overlay = Overlay::new(&mut tables);
                // A body that panics (a bug) fails its own request with 500; its writes were
                // only in the overlay, so the batch and the writer thread carry on.
                let body = &mut job.body;
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut overlay)))
                        .unwrap_or_else(|panic| {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| (*s).to_owned())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            Err(Error::Internal(format!(
                                "transaction body panicked: {what}"
                            )))
                        });
                let result = match result {
                    Ok(value) => {
                        let (tables, changes) = overlay.into_changes();
                        for (coll, _, _) in &changes.writes {
                            written |= 1 << *coll as u32;
                        }
                        apply(tables, changes, journal_capacity).map(|evs| {
                            events.extend(evs);
                            value
                        })
                    }
                    Err(e) => Err(e),
                };
                // A storage failure while applying poisons the whole redb transaction.
                if let Err(Error::Storage(msg)) = &result {
                    let msg = msg.clone();
                    outcomes.push((job.reply, result));
                    return Err(Error::Storage(msg));
                }
                outcomes.push((job.reply, result));
            }
        }
        wtx.commit()?;
        Ok(())
    })();

    match committed {
        Ok(()) => {
            // Visible to readers now; caches keyed on the version see the change before
            // anyone is told about it.
            for coll in Collection::ALL {
                if written & (1 << coll as u32) != 0 {
                    versions[coll as usize].fetch_add(1, Ordering::Release);
                }
            }
            for event in events {
                let _ = bus.send(Arc::new(event));
            }
            for (reply, result) in outcomes {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "commit failed; failing the batch");
            for (reply, _) in outcomes {
                let _ = reply.send(Err(Error::Storage(e.to_string())));
            }
        }
    }
}

struct Tables<'t> {
    entities: Table<'t, (&'static str, &'static str), &'static [u8]>,
    meta: Table<'t, (&'static str, &'static str), (u64, &'static str)>,
    index: Table<'t, (&'static str, &'static str, u64), &'static str>,
    counters: Table<'t, &'static str, u64>,
    journal: Table<'t, (&'static str, u64), &'static [u8]>,
    deadlines: Table<'t, (&'static str, i64, &'static str), ()>,
    deadline_of: Table<'t, (&'static str, &'static str), i64>,
}

impl<'t> Tables<'t> {
    fn open(wtx: &'t WriteTransaction) -> Result<Self> {
        Ok(Self {
            entities: wtx.open_table(ENTITIES)?,
            meta: wtx.open_table(META)?,
            index: wtx.open_table(INDEX)?,
            counters: wtx.open_table(COUNTERS)?,
            journal: wtx.open_table(JOURNAL)?,
            deadlines: wtx.open_table(DEADLINES)?,
            deadline_of: wtx.open_table(DEADLINE_OF)?,
        })
    }

    fn bump(&mut self, key: &str) -> Result<u64> {
        let next = self.counters.get(key)?.map(|v| v.value()).unwrap_or(0) + 1;
        self.counters.insert(key, next)?;
        Ok(next)
    }
}

impl Base for &mut Tables<'_> {
    fn get(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .entities
            .get((coll.name(), id))?
            .map(|v| v.value().to_vec()))
    }

    fn list(&mut self, coll: Collection, owner: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        let name = coll.name();
        let owner = owner.unwrap_or("");
        let mut out = Vec::new();
        for entry in self
            .index
            .range((name, owner, 0)..=(name, owner, u64::MAX))?
        {
            let (_, id) = entry?;
            let id = id.value().to_owned();
            if let Some(v) = self.entities.get((name, id.as_str()))? {
                let bytes = v.value().to_vec();
                out.push((id, bytes));
            }
        }
        Ok(out)
    }

    fn exists(&mut self, coll: Collection, id: &str) -> Result<bool> {
        Ok(self.meta.get((coll.name(), id))?.is_some())
    }

    fn counter(&mut self, name: &str) -> Result<u64> {
        Ok(self
            .counters
            .get(format!("user:{name}").as_str())?
            .map_or(0, |v| v.value()))
    }

    fn head_seq(&mut self, scope: &str) -> Result<u64> {
        Ok(self
            .counters
            .get(seq_key(scope).as_str())?
            .map_or(0, |v| v.value()))
    }

    fn scan_newest(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        scan_newest(&self.index, &self.entities, coll, owner, visit)
    }
}

/// Walks `owner`'s index of `coll` backwards (newest first), visiting each entity until
/// `visit` says stop.
fn scan_newest(
    index: &impl ReadableTable<(&'static str, &'static str, u64), &'static str>,
    entities: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    coll: Collection,
    owner: &str,
    visit: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
) -> Result<()> {
    let name = coll.name();
    for entry in index
        .range((name, owner, 0)..=(name, owner, u64::MAX))?
        .rev()
    {
        let (_, id) = entry?;
        let id = id.value();
        if let Some(v) = entities.get((name, id))?
            && !visit(id, v.value())?
        {
            break;
        }
    }
    Ok(())
}

/// Writes a transaction's changes into the redb transaction and journals its events.
fn apply(
    tables: &mut Tables<'_>,
    changes: Changes,
    journal_capacity: u64,
) -> Result<Vec<EventRecord>> {
    // Preconditions first: a failed one fails the transaction before any of it is written
    // (the batch's redb transaction goes on with the other jobs).
    for (coll, id, resource) in &changes.requires {
        if tables.meta.get((coll.name(), id.as_str()))?.is_none() {
            return Err(Error::not_found(resource, id.as_str()));
        }
    }
    for (coll, id, write) in &changes.writes {
        if let Write::Put { fresh: true, .. } = write
            && tables.meta.get((coll.name(), id.as_str()))?.is_some()
        {
            return Err(Error::Conflict(format!(
                "{} '{id}' already exists; retry",
                coll.name()
            )));
        }
    }
    for (name, value) in changes.counters {
        tables
            .counters
            .insert(format!("user:{name}").as_str(), value)?;
    }
    for (coll, id, write) in changes.writes {
        let (coll, id) = (coll.name(), id.as_str());
        let existing = tables.meta.get((coll, id))?.map(|m| {
            let (ord, owner) = m.value();
            (ord, owner.to_owned())
        });
        match (write, existing) {
            (Write::Put { value, .. }, Some(_)) => {
                tables.entities.insert((coll, id), value.as_slice())?;
            }
            (Write::Put { owner, value, .. }, None) => {
                let ord = tables.bump("order")?;
                let owner = owner.unwrap_or_default();
                tables.meta.insert((coll, id), (ord, owner.as_str()))?;
                tables.index.insert((coll, "", ord), id)?;
                if !owner.is_empty() {
                    tables.index.insert((coll, owner.as_str(), ord), id)?;
                }
                tables.entities.insert((coll, id), value.as_slice())?;
            }
            (Write::Delete, Some((ord, owner))) => {
                tables.meta.remove((coll, id))?;
                tables.index.remove((coll, "", ord))?;
                if !owner.is_empty() {
                    tables.index.remove((coll, owner.as_str(), ord))?;
                }
                tables.entities.remove((coll, id))?;
            }
            (Write::Delete, None) => {}
        }
    }

    for (index, id, due) in changes.deadlines {
        let (name, id) = (index.name(), id.as_str());
        let old = tables.deadline_of.get((name, id))?.map(|v| v.value());
        if let Some(old) = old {
            tables.deadlines.remove((name, old, id))?;
        }
        match due {
            Some(due) => {
                tables.deadlines.insert((name, due, id), ())?;
                tables.deadline_of.insert((name, id), due)?;
            }
            None if old.is_some() => {
                tables.deadline_of.remove((name, id))?;
            }
            None => {}
        }
    }

    let mut records = Vec::with_capacity(changes.events.len());
    let timestamp = now_ms();
    for ev in changes.events {
        let seq = tables.bump(&seq_key(&ev.scope))?;
        let record = EventRecord {
            scope: ev.scope,
            seq,
            event: ev.event,
            data: ev.data,
            timestamp,
            session_id: ev.session_id,
        };
        let bytes = serde_json::to_vec(&record).expect("events serialise");
        tables
            .journal
            .insert((record.scope.as_str(), seq), bytes.as_slice())?;
        if seq > journal_capacity {
            tables
                .journal
                .remove((record.scope.as_str(), seq - journal_capacity))?;
        }
        records.push(record);
    }
    Ok(records)
}

/// Snapshot reads on a redb read transaction.
struct LocalReader {
    rtx: ReadTransaction,
}

impl Reader for LocalReader {
    fn head_seq(&mut self, scope: &str) -> Result<u64> {
        let counters = self.rtx.open_table(COUNTERS)?;
        Ok(counters
            .get(seq_key(scope).as_str())?
            .map_or(0, |v| v.value()))
    }

    fn get_raw(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        let table = self.rtx.open_table(ENTITIES)?;
        Ok(table.get((coll.name(), id))?.map(|v| v.value().to_vec()))
    }

    fn list_entries_raw(
        &mut self,
        coll: Collection,
        owner: Option<&str>,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let name = coll.name();
        let owner = owner.unwrap_or("");
        let index = self.rtx.open_table(INDEX)?;
        let entities = self.rtx.open_table(ENTITIES)?;
        let mut out = Vec::new();
        for entry in index.range((name, owner, 0)..=(name, owner, u64::MAX))? {
            let (_, id) = entry?;
            if let Some(v) = entities.get((name, id.value()))? {
                out.push((id.value().to_owned(), v.value().to_vec()));
            }
        }
        Ok(out)
    }

    fn scan_newest_raw(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        let index = self.rtx.open_table(INDEX)?;
        let entities = self.rtx.open_table(ENTITIES)?;
        scan_newest(&index, &entities, coll, owner, &mut |_, bytes| visit(bytes))
    }
}
