//! Ports: what the domain needs from a backend, and nothing about how it is done.
//!
//! A backend offers three things:
//! - snapshot reads ([`Reader`]);
//! - atomic transactions ([`Store::transact`]): a closure reads and writes entities and emits
//!   events through a [`Txn`]; its writes and its events (with their sequence numbers) become
//!   durable together, or — if the closure returns an error or the commit fails — not at all;
//! - the event stream: live delivery ([`Store::subscribe`]) and the journal ([`Store::replay`]).
//!
//! The closure is synchronous and may be run more than once (`FnMut`): a backend with
//! optimistic concurrency (Redis `WATCH`) re-runs it on conflict, and the local backend runs
//! many of them inside one group-committed redb transaction. So a closure must compute
//! everything from what it reads through the `Txn` and the values it captured, and have no
//! side effects outside it.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use maestro_protocol::EventRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::{Error, Result};

/// The kinds of stored entity. Each has its own key space and a per-owner index (owner =
/// project id) that lists members in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    Projects,
    Tasks,
    Sessions,
    Mail,
    TeamMembers,
    Orderings,
    /// Per-session mail read cursors.
    MailCursors,
    /// Answers remembered for idempotency keys.
    Idempotency,
    /// Heartbeat state per session.
    Presence,
    /// Task leases (one record per task, kept after release for its fencing token).
    Claims,
    /// API tokens and paired devices (hashes of their secrets, never the secrets).
    Credentials,
    /// Pending single-use pairing codes (hashed), deleted when used, burned or expired.
    Pairings,
    /// The server's VAPID key pair for Web Push (one record, made on first start).
    VapidKeys,
    /// Browsers' Web Push subscriptions, owned by the device (or token) that made them.
    PushSubscriptions,
    /// Which notify events were already pushed, per event scope (exactly-once sending).
    PushSent,
    /// Tool approval requests, owned by their session.
    Approvals,
    /// One marker per pending approval, owned by its project.
    PendingApprovals,
    /// `allow_session` answers, matched by later identical requests of the session.
    ApprovalRules,
    /// Runners (hosts of agents), global.
    Runners,
    /// Spawns waiting for a runner, one per session, owned by the machine that must run them.
    LaunchQueue,
    /// The fingerprint of the key credential hashes are made with (one record; the key itself
    /// stays in `DATA_DIR`).
    HashKey,
    /// The latest changes summary of a session's work tree, owned by its project.
    Changes,
    /// Diffs reported by the host of a session on another machine, owned by the session.
    ChangeDiffs,
    /// Review comments on a session's diffs, owned by the session.
    ReviewComments,
    /// Per device (or token, or `local`): notification settings, the last event numbers
    /// delivered, the coalescing groups and the last delivery time.
    PushDevices,
    /// Per device: until when its app said it is on screen (`client:visibility`).
    PushVisible,
    /// One record per session's transcript: its last and first `seq`, the file followed.
    TranscriptState,
    /// A session's transcript entries, in pages of a fixed number of entries.
    TranscriptPages,
}

impl Collection {
    /// Every collection.
    pub const ALL: [Collection; 28] = [
        Self::Projects,
        Self::Tasks,
        Self::Sessions,
        Self::Mail,
        Self::TeamMembers,
        Self::Orderings,
        Self::MailCursors,
        Self::Idempotency,
        Self::Presence,
        Self::Claims,
        Self::Credentials,
        Self::Pairings,
        Self::VapidKeys,
        Self::PushSubscriptions,
        Self::PushSent,
        Self::Approvals,
        Self::PendingApprovals,
        Self::ApprovalRules,
        Self::Runners,
        Self::LaunchQueue,
        Self::HashKey,
        Self::Changes,
        Self::ChangeDiffs,
        Self::ReviewComments,
        Self::PushDevices,
        Self::PushVisible,
        Self::TranscriptState,
        Self::TranscriptPages,
    ];

    /// Stable name used in storage keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Projects => "projects",
            Self::Tasks => "tasks",
            Self::Sessions => "sessions",
            Self::Mail => "mail",
            Self::TeamMembers => "team_members",
            Self::Orderings => "orderings",
            Self::MailCursors => "mail_cursors",
            Self::Idempotency => "idempotency",
            Self::Presence => "presence",
            Self::Claims => "claims",
            Self::Credentials => "credentials",
            Self::Pairings => "pairings",
            Self::VapidKeys => "vapid_keys",
            Self::PushSubscriptions => "push_subscriptions",
            Self::PushSent => "push_sent",
            Self::Approvals => "approvals",
            Self::PendingApprovals => "pending_approvals",
            Self::ApprovalRules => "approval_rules",
            Self::Runners => "runners",
            Self::LaunchQueue => "launch_queue",
            Self::HashKey => "hash_key",
            Self::Changes => "changes",
            Self::ChangeDiffs => "change_diffs",
            Self::ReviewComments => "review_comments",
            Self::PushDevices => "push_devices",
            Self::PushVisible => "push_visible",
            Self::TranscriptState => "transcript_state",
            Self::TranscriptPages => "transcript_pages",
        }
    }
}

/// Deadline indexes: ids ordered by when something about them is due, so a sweep reads only
/// what is due ([`Store::due`]) instead of every record. An id has at most one deadline per
/// index; transactions set or clear it ([`Txn::schedule`]) together with the record it is
/// about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// A session whose agent stops beating: when it counts as gone.
    PresenceExpiry,
    /// A beating session that makes no progress: when it counts as stalled.
    PresenceStall,
    /// A held task lease: when it lapses.
    ClaimExpiry,
    /// A remembered idempotent answer: when it is forgotten.
    Idempotency,
    /// A runner that stops beating: when it counts as offline.
    RunnerExpiry,
    /// A device with coalesced notifications waiting: when the next one is due.
    PushFlush,
}

impl Deadline {
    pub const ALL: [Deadline; 6] = [
        Self::PresenceExpiry,
        Self::PresenceStall,
        Self::ClaimExpiry,
        Self::Idempotency,
        Self::RunnerExpiry,
        Self::PushFlush,
    ];

    /// Stable name used in storage keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::PresenceExpiry => "presence_expiry",
            Self::PresenceStall => "presence_stall",
            Self::ClaimExpiry => "claim_expiry",
            Self::Idempotency => "idempotency",
            Self::RunnerExpiry => "runner_expiry",
            Self::PushFlush => "push_flush",
        }
    }
}

/// Snapshot reads.
pub trait Reader {
    /// The raw JSON of one entity.
    fn get_raw(&mut self, coll: Collection, id: &str) -> Result<Option<Vec<u8>>>;
    /// All entities of `coll` (or those owned by `owner`), in creation order.
    fn list_raw(&mut self, coll: Collection, owner: Option<&str>) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .list_entries_raw(coll, owner)?
            .into_iter()
            .map(|(_, value)| value)
            .collect())
    }
    /// [`Reader::list_raw`] with each entity's id, for records whose value does not hold it.
    fn list_entries_raw(
        &mut self,
        coll: Collection,
        owner: Option<&str>,
    ) -> Result<Vec<(String, Vec<u8>)>>;
    /// The latest event sequence number of `scope` (0 if none), as of this snapshot. A
    /// snapshot plus its heads is a consistent starting point for replay.
    fn head_seq(&mut self, scope: &str) -> Result<u64>;
    /// `owner`'s entities of `coll`, newest first, each passed to `visit` until it returns
    /// `false`. It reads only what it visits (plus at most a page), whatever the collection's
    /// size: "everything after a cursor" over entities created in cursor order costs what lies
    /// after the cursor. In a transaction it sees the transaction's own writes, and the commit
    /// fails (and the body runs again) if an entity it visited changed meanwhile; an entity
    /// created meanwhile does not fail it (it is newer than anything visited, as if created
    /// after this transaction). A body that must see the very newest entity must also read
    /// something every creator writes, such as the counter that numbers them.
    fn scan_newest_raw(
        &mut self,
        coll: Collection,
        owner: &str,
        visit: &mut dyn FnMut(&[u8]) -> Result<bool>,
    ) -> Result<()>;
}

/// An event emitted inside a transaction; the backend gives it its sequence number.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub scope: String,
    pub event: String,
    pub data: Value,
    pub session_id: Option<String>,
}

/// A transaction: reads see the transaction's own earlier writes.
pub trait Txn: Reader {
    /// Inserts or replaces an entity. `owner` is used only when the entity is new.
    fn put_raw(&mut self, coll: Collection, id: &str, owner: Option<&str>, value: Vec<u8>);
    /// Inserts a new entity without reading first: the commit checks, atomically, that no
    /// entity has this id, and fails the transaction with `CONFLICT` if one has. For freshly
    /// generated ids, where a collision is next to impossible but must never overwrite: it
    /// saves the read (a round trip on Redis).
    fn insert_raw(&mut self, coll: Collection, id: &str, owner: Option<&str>, value: Vec<u8>);
    /// The commit happens only if this entity exists in the store (as it was before this
    /// transaction), checked atomically with the writes; otherwise the transaction fails with
    /// `NOT_FOUND` for `resource` and writes nothing. For an entity the body only needs to
    /// exist: it saves the read (a round trip on Redis).
    fn require(&mut self, coll: Collection, id: &str, resource: &'static str);
    /// Removes an entity (no-op if absent).
    fn delete(&mut self, coll: Collection, id: &str);
    /// Queues an event; it is journaled with the writes and delivered after the commit.
    fn emit_raw(&mut self, event: PendingEvent);
    /// Increments the named counter and returns its new value (the first call returns 1).
    /// Counters only grow, even across restarts.
    fn next_counter(&mut self, name: &str) -> Result<u64>;
    /// Sets (`Some(due)`, epoch ms) or clears (`None`) the deadline of `id` in `index`,
    /// committed with the transaction's other writes. The last call for an id wins.
    fn schedule(&mut self, index: Deadline, id: &str, due: Option<i64>);
}

/// Typed conveniences over [`Reader`].
pub trait ReaderExt: Reader {
    fn get<T: DeserializeOwned>(&mut self, coll: Collection, id: &str) -> Result<Option<T>> {
        self.get_raw(coll, id)?
            .map(|b| decode(coll, &b))
            .transpose()
    }

    fn list<T: DeserializeOwned>(
        &mut self,
        coll: Collection,
        owner: Option<&str>,
    ) -> Result<Vec<T>> {
        self.list_raw(coll, owner)?
            .iter()
            .map(|b| decode(coll, b))
            .collect()
    }

    /// [`Reader::list_entries_raw`], decoded.
    fn entries<T: DeserializeOwned>(
        &mut self,
        coll: Collection,
        owner: Option<&str>,
    ) -> Result<Vec<(String, T)>> {
        self.list_entries_raw(coll, owner)?
            .into_iter()
            .map(|(id, b)| Ok((id, decode(coll, &b)?)))
            .collect()
    }

    /// `owner`'s newest entities of `coll` for as long as `keep` accepts them (the scan stops
    /// at the first it refuses), oldest first. See [`Reader::scan_newest_raw`].
    fn newest_while<T: DeserializeOwned>(
        &mut self,
        coll: Collection,
        owner: &str,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.scan_newest_raw(coll, owner, &mut |bytes| {
            let value: T = decode(coll, bytes)?;
            let kept = keep(&value);
            if kept {
                out.push(value);
            }
            Ok(kept)
        })?;
        out.reverse();
        Ok(out)
    }
}
impl<R: Reader + ?Sized> ReaderExt for R {}

/// Typed conveniences over [`Txn`].
pub trait TxnExt: Txn {
    fn put<T: Serialize>(&mut self, coll: Collection, id: &str, owner: Option<&str>, value: &T) {
        let bytes = serde_json::to_vec(value).expect("entities serialise");
        self.put_raw(coll, id, owner, bytes);
    }

    /// [`Txn::insert_raw`] of a serialisable entity.
    fn insert<T: Serialize>(&mut self, coll: Collection, id: &str, owner: Option<&str>, value: &T) {
        let bytes = serde_json::to_vec(value).expect("entities serialise");
        self.insert_raw(coll, id, owner, bytes);
    }

    /// Emits `event` with a serialisable payload into `scope`.
    fn emit<T: Serialize>(&mut self, scope: &str, event: &str, data: &T, session_id: Option<&str>) {
        self.emit_raw(PendingEvent {
            scope: scope.to_owned(),
            event: event.to_owned(),
            data: serde_json::to_value(data).expect("events serialise"),
            session_id: session_id.map(str::to_owned),
        });
    }
}
impl<T: Txn + ?Sized> TxnExt for T {}

fn decode<T: DeserializeOwned>(coll: Collection, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Storage(format!("corrupt {} record: {e}", coll.name())))
}

/// A type-erased transaction body.
pub type TxnBody = Box<dyn FnMut(&mut dyn Txn) -> Result<Box<dyn Any + Send>> + Send>;

/// The answer to a replay request.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Events after the requested seq, in order.
    pub events: Vec<EventRecord>,
    /// False when the journal no longer reaches back to the requested seq.
    pub complete: bool,
    /// The latest seq of the scope.
    pub head: u64,
}

/// A storage backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name for `/ready` and logs.
    fn backend(&self) -> &'static str;

    /// The backend's own counters, as Prometheus text for `/metrics` (empty when it has none).
    fn render_metrics(&self) -> String {
        String::new()
    }

    /// Runs `body` atomically; returns its value once the transaction is durable and its events
    /// have been handed to every live subscriber.
    async fn transact_erased(&self, body: TxnBody) -> Result<Box<dyn Any + Send>>;

    /// A consistent snapshot for reads.
    fn reader(&self) -> Result<Box<dyn Reader + Send + '_>>;

    /// A number that changes whenever an entity of `coll` is written, by any server sharing
    /// the store, no later than the write is acknowledged. Read *before* taking a snapshot, it
    /// tells whether something computed from an earlier snapshot is still current (read
    /// caches).
    async fn collection_version(&self, coll: Collection) -> Result<u64>;

    /// Live events from every writer, in commit order.
    fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>>;

    /// Ids whose deadline in `index` is at or before `now`, earliest first, at most `limit`.
    /// Costs what is due, whatever the index's size.
    fn due(&self, index: Deadline, now: i64, limit: usize) -> Result<Vec<String>>;

    /// Journaled events of `scope` with `seq > after`, at most `limit`.
    async fn replay(&self, scope: &str, after: u64, limit: usize) -> Result<Replay>;

    /// Whether the backend is currently able to serve.
    async fn ready(&self) -> bool;

    /// Flushes and stops background work.
    async fn close(&self);
}

/// Typed front of [`Store::transact_erased`].
pub async fn transact<T, F>(store: &dyn Store, mut body: F) -> Result<T>
where
    T: Send + 'static,
    F: FnMut(&mut dyn Txn) -> Result<T> + Send + 'static,
{
    let out = store
        .transact_erased(Box::new(move |tx| {
            body(tx).map(|v| Box::new(v) as Box<dyn Any + Send>)
        }))
        .await?;
    out.downcast::<T>()
        .map(|b| *b)
        .map_err(|_| Error::Internal("transaction returned an unexpected type".into()))
}

/// Best-effort messages between the servers sharing a backend, outside the event journal: the
/// live terminal's bytes and its control messages. Nothing is stored or replayed, delivery may
/// skip messages (a subscriber then sees [`Popped::Lagged`](crate::queue::Popped::Lagged)), and
/// `publish` never waits, so a slow backend never slows an agent down. Messages from one
/// publisher on one channel arrive in the order they were published, this server's own
/// subscribers included.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    /// Sends `payload` to every subscriber of `channel`, on every server; drops it when the
    /// outgoing queue is full or the backend is unreachable.
    fn publish(&self, channel: &str, payload: bytes::Bytes);

    /// Receives what is published on `channel` from now on (once the backend confirmed, or
    /// after a short bound when it cannot), until the subscription is dropped.
    async fn subscribe(&self, channel: &str) -> RelaySubscription;
}

/// Messages of one channel, bytes-bounded; unsubscribes when dropped.
pub struct RelaySubscription {
    queue: Arc<crate::queue::ByteQueue<bytes::Bytes>>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl RelaySubscription {
    /// A subscription reading `queue`; `on_drop` unsubscribes.
    pub fn new(
        queue: Arc<crate::queue::ByteQueue<bytes::Bytes>>,
        on_drop: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            queue,
            on_drop: Some(Box::new(on_drop)),
        }
    }

    /// The next message, or `Lagged` after some were lost; `None` when the relay stopped.
    pub async fn next(&mut self) -> Option<crate::queue::Popped<bytes::Bytes>> {
        self.queue.pop().await
    }
}

impl Drop for RelaySubscription {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}
