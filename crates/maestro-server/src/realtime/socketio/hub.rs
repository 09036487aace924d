//! The live connections ([`Hub`], one [`Conn`] per socket) and the fan-out of events to them:
//! which connection follows which scope and sessions, its replay backlog, and routing each
//! Socket.IO packet from a client to the handshake or the client events.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use maestro_protocol::{CREDENTIAL_REVOKED, EventRecord, GLOBAL_SCOPE, ReplayIncomplete};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Kind;
use super::codec::{Packet, event_packet};
use crate::auth::{Gate, Principal};
use crate::config::Config;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::realtime::engine::{self, Frame, Session};
use crate::realtime::legacy;

/// Live events a connection may collect while it replays its handshake's gap.
const BACKLOG_CAPACITY: usize = engine::MAX_QUEUED;
/// Below this many connections per thread, the fan-out stays on one thread. Measured on two
/// cores (docs/performance.md, issue 24): at 1,000 sockets a second thread cost more CPU per
/// socket and did not bring the last socket's latency down; from about 5,000 it does. At the
/// 7-8 µs per socket measured there, one thread sends to 4,000 sockets in about 30 ms, and
/// the cores it leaves free are the agents'.
const FANOUT_SHARD_MIN: usize = 2_048;
/// Connections the fan-out reads ahead of writing to them ([`offer_all`]).
const WARM_BATCH: usize = 16;

/// Threads the fan-out may use: the machine's cores.
fn fanout_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One socket: a namespace connected over an Engine.IO session.
pub(in crate::realtime) struct Conn {
    key: u64,
    pub(super) sid: Box<str>,
    pub(super) kind: Kind,
    /// The handshake's project: the only one a `/mobile` connection sees.
    pub(super) project: Option<String>,
    pub(super) session: Arc<Session>,
    /// Who the handshake admitted; decides which client actions are allowed.
    pub(in crate::realtime) principal: Principal,
    pub(super) state: Mutex<ConnState>,
}

pub(super) struct ConnState {
    /// `None`: every event; `Some(ids)`: events not about a session, plus those about `ids`.
    pub(super) sessions: Option<HashSet<String>>,
    /// While the handshake's gap is replayed: live events, sent after the replay.
    backlog: Option<Vec<Item>>,
    /// Events of this scope up to this `seq` were sent by the replay (or are covered by the
    /// resync a `replay:incomplete` asks for): skipped when they arrive live.
    floor: Option<(String, u64)>,
}

impl Conn {
    /// Whether events of `scope` reach this connection at all. `/mobile` follows its project's
    /// scope and, in the global scope, the events about its project.
    pub(super) fn follows_scope(&self, scope: &str, data: Option<&Value>) -> bool {
        match self.kind {
            Kind::Ui => true,
            Kind::Mobile => {
                let mine = self.project.as_deref();
                if scope == GLOBAL_SCOPE {
                    // Its project's events, and the runners' (the machines serve every project).
                    data.is_none_or(|d| {
                        let id = d.get("id").and_then(Value::as_str);
                        id == mine || id.is_some_and(|id| id.starts_with("run_"))
                    })
                } else {
                    Some(scope) == mine
                }
            }
        }
    }

    /// Reads what [`Conn::offer`] will read first (this connection and its session), without
    /// locking or changing anything; see [`offer_all`].
    fn warm(&self) -> usize {
        self.kind as usize ^ usize::from(self.state.is_poisoned()) ^ self.session.warm()
    }

    /// Whether `event` is delivered to this connection now.
    #[cfg(test)]
    fn wants(&self, event: &EventRecord) -> bool {
        self.follows_scope(&event.scope, Some(&event.data))
            && legacy::wants(self.state.lock().unwrap().sessions.as_ref(), event)
    }

    /// `/mobile` may act only on its own project.
    pub(super) fn check_project(&self, project: &str) -> Result<()> {
        match (self.kind, self.project.as_deref()) {
            (Kind::Mobile, Some(mine)) if mine != project => Err(Error::Forbidden(format!(
                "this connection follows project '{mine}', not '{project}'"
            ))),
            _ => Ok(()),
        }
    }

    /// Emits one event to this socket (no ack).
    pub(super) fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> bool {
        match event_packet(self.kind, event, data) {
            Some(packet) => self.session.send(&Frame::text(&packet)),
            None => true,
        }
    }

    /// The bridge offers `item` to this connection.
    pub(super) fn offer(&self, item: &Item) {
        let follows = match item {
            Item::Event(ev) => self.follows_scope(&ev.scope, Some(&ev.data)),
            Item::Gap(gap) => {
                self.follows_scope(gap.project_id.as_deref().unwrap_or(GLOBAL_SCOPE), None)
            }
        };
        if !follows {
            return;
        }
        let mut state = self.state.lock().expect("conn lock");
        if let Some(backlog) = state.backlog.as_mut() {
            backlog.push(item.clone());
            if backlog.len() > BACKLOG_CAPACITY {
                drop(state);
                tracing::warn!(socket.id = %self.sid, "socket.io client fell too far behind during its replay; disconnecting");
                self.session.close();
            }
            return;
        }
        self.deliver(&state, item);
    }

    /// Sends a live item, unless the replay covered it or the socket does not want it.
    fn deliver(&self, state: &ConnState, item: &Item) {
        match item {
            Item::Event(ev) => {
                // The number first: comparing the scopes reads another allocation, for every
                // socket that reconnected with a `lastSeq`.
                if let Some((scope, floor)) = &state.floor
                    && ev.seq <= *floor
                    && *scope == ev.scope
                {
                    return;
                }
                if legacy::wants(state.sessions.as_ref(), &ev.record) {
                    self.session.send(ev.frame(self.kind));
                }
            }
            Item::Gap(gap) => {
                self.emit("replay:incomplete", gap);
            }
        }
    }

    /// Ends the replay phase: the backlog goes out (minus what the replay sent), then live
    /// events flow straight through.
    pub(super) fn go_live(&self) {
        let mut state = self.state.lock().expect("conn lock");
        let backlog = state.backlog.take().unwrap_or_default();
        for item in &backlog {
            self.deliver(&state, item);
        }
    }

    pub(super) fn raise_floor(&self, scope: &str, seq: u64) {
        let mut state = self.state.lock().expect("conn lock");
        match &mut state.floor {
            Some((s, floor)) if s == scope => *floor = (*floor).max(seq),
            slot => *slot = Some((scope.to_owned(), seq)),
        }
    }
}

/// Offers `item` to `conns` in order, [`WARM_BATCH`] at a time: each batch's connections and
/// sessions are read first, all together, then written to. Each socket's first read is a cache
/// miss (thousands of sockets do not fit in the cache); read one after the other between
/// system calls, each miss waits alone, while reads that do not depend on each other overlap.
fn offer_all(conns: &[&Arc<Conn>], item: &Item) {
    for batch in conns.chunks(WARM_BATCH) {
        std::hint::black_box(batch.iter().fold(0, |seen, conn| seen ^ conn.warm()));
        for conn in batch {
            conn.offer(item);
        }
    }
}

/// What the bridge offers the connections.
#[derive(Clone)]
pub(super) enum Item {
    Event(Arc<Outgoing>),
    /// The bridge could not fill a gap of `scope` from the journal.
    Gap(ReplayIncomplete),
}

/// A live event on its way to the sockets, its frame encoded once per namespace for all of
/// them — by the first socket that wants it, so an event no socket wants costs nothing.
pub(super) struct Outgoing {
    record: Arc<EventRecord>,
    frames: [OnceLock<Frame>; 2],
}

impl Outgoing {
    pub(super) fn new(record: Arc<EventRecord>) -> Arc<Self> {
        Arc::new(Self {
            record,
            frames: [OnceLock::new(), OnceLock::new()],
        })
    }

    fn frame(&self, kind: Kind) -> &Frame {
        self.frames[kind.index()].get_or_init(|| {
            let packet = event_packet(kind, &self.record.event, &self.record.envelope())
                .expect("envelopes serialise");
            Frame::text(&packet)
        })
    }
}

impl std::ops::Deref for Outgoing {
    type Target = EventRecord;

    fn deref(&self) -> &EventRecord {
        &self.record
    }
}

/// The live connections and the services their handlers call.
pub(super) struct Hub {
    pub(super) domain: Domain,
    pub(super) config: Arc<Config>,
    pub(super) gate: Gate,
    /// By key, so in the order they connected: see [`Hub::dispatch`].
    pub(super) conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_key: AtomicU64,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
}

impl Hub {
    pub(super) fn new(
        domain: Domain,
        config: Arc<Config>,
        gate: Gate,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            domain,
            config,
            gate,
            conns: Mutex::new(BTreeMap::new()),
            next_key: AtomicU64::new(1),
            tasks,
            shutdown,
        }
    }

    /// Registers a connection of `session`, in its replay phase (live events collect in its
    /// backlog until [`Conn::go_live`]).
    pub(super) fn register(
        &self,
        session: &Arc<Session>,
        kind: Kind,
        project: Option<String>,
        principal: Principal,
    ) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            key: self.next_key.fetch_add(1, Ordering::Relaxed),
            sid: engine::new_sid(),
            kind,
            project,
            session: session.clone(),
            principal,
            state: Mutex::new(ConnState {
                sessions: None,
                backlog: Some(Vec::new()),
                floor: None,
            }),
        });
        self.conns
            .lock()
            .expect("hub lock")
            .insert(conn.key, conn.clone());
        session
            .sockets
            .lock()
            .expect("sockets lock")
            .push(conn.clone());
        conn
    }

    /// A credential was revoked (on any server): the Engine.IO connections it opened close at
    /// once, before the event itself is fanned out.
    fn close_revoked(&self, record: &EventRecord) {
        let Some(id) = record.data.get("id").and_then(Value::as_str) else {
            return;
        };
        let sessions: Vec<Arc<Session>> = self
            .conns
            .lock()
            .expect("hub lock")
            .values()
            .filter(|c| c.principal.id.as_deref() == Some(id))
            .map(|c| c.session.clone())
            .collect();
        for session in sessions {
            tracing::info!(target: "maestro::audit", event = "socket_closed_on_revocation", credential.id = id);
            session.close();
        }
    }

    pub(super) fn remove(&self, conn: &Conn) {
        self.conns.lock().expect("hub lock").remove(&conn.key);
    }

    /// Offers `item` to every connection, oldest first: sockets that connected one after the
    /// other have neighbouring descriptors and kernel objects, so the sends' reads of them
    /// share cache lines and pages more often than in hash order. With many thousands of
    /// connections the work is split over the machine's cores ([`FANOUT_SHARD_MIN`]): writing
    /// to a socket is mostly kernel time (loopback TCP even runs the receiver's side in the
    /// sender's context), and one thread would leave the other cores idle while the sockets
    /// wait. Each connection is offered the item exactly once, and the next item only after
    /// this one reached every connection, so each socket still gets events in order.
    pub(super) fn dispatch(&self, item: &Item) {
        if let Item::Event(out) = item
            && out.record.event == CREDENTIAL_REVOKED
        {
            self.close_revoked(&out.record);
        }
        let conns = self.conns.lock().expect("hub lock");
        let all: Vec<&Arc<Conn>> = conns.values().collect();
        let threads = fanout_threads().min(all.len() / FANOUT_SHARD_MIN).max(1);
        if threads == 1 {
            offer_all(&all, item);
            return;
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        std::thread::scope(|scope| {
            let mut shards = all.chunks(all.len().div_ceil(threads));
            let mine = shards.next().unwrap_or_default();
            for shard in shards {
                let runtime = runtime.clone();
                let spawned = std::thread::Builder::new()
                    .name("maestro-fanout".into())
                    .spawn_scoped(scope, move || {
                        // Flushers for full sockets are spawned on the server's runtime.
                        let _runtime = runtime.as_ref().map(|r| r.enter());
                        offer_all(shard, item);
                    });
                if spawned.is_err() {
                    // No thread to be had: do it here.
                    offer_all(shard, item);
                }
            }
            offer_all(mine, item);
        });
    }

    /// A Socket.IO packet from a client.
    async fn on_packet(&self, session: &Arc<Session>, text: &str) {
        let Some(packet) = Packet::parse(text) else {
            tracing::debug!(
                session = session.id(),
                "malformed socket.io packet; closing"
            );
            session.close();
            return;
        };
        match packet.kind {
            b'0' => self.connect(session, packet.ns, packet.data),
            b'1' => {
                let gone = {
                    let mut sockets = session.sockets.lock().expect("sockets lock");
                    let at = sockets.iter().position(|c| c.kind.namespace() == packet.ns);
                    at.map(|i| sockets.remove(i))
                };
                if let Some(conn) = gone {
                    self.remove(&conn);
                }
            }
            b'2' => {
                let conn = session
                    .sockets
                    .lock()
                    .expect("sockets lock")
                    .iter()
                    .find(|c| c.kind.namespace() == packet.ns)
                    .cloned();
                let Some(conn) = conn else {
                    tracing::debug!(
                        ns = packet.ns,
                        "event for a namespace that is not connected"
                    );
                    return;
                };
                self.on_event(&conn, packet.id, packet.data).await;
            }
            // Acks of server emits: the server asks for none.
            b'3' => {}
            _ => {
                tracing::debug!(
                    session = session.id(),
                    "binary socket.io packets are not supported; closing"
                );
                session.close();
            }
        }
    }
}

impl engine::Handler for Hub {
    fn on_message<'a>(
        &'a self,
        session: &'a Arc<Session>,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.on_packet(session, text))
    }

    fn on_close(&self, session: &Arc<Session>) {
        let sockets = std::mem::take(&mut *session.sockets.lock().expect("sockets lock"));
        for conn in sockets {
            self.remove(&conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::socketio::testing::{drain, ev, live, store_with};
    use serde_json::json;

    fn conn(kind: Kind, project: Option<&str>) -> Conn {
        Conn {
            key: 0,
            sid: engine::new_sid(),
            kind,
            project: project.map(str::to_owned),
            session: Session::detached(),
            principal: Principal::local(),
            state: Mutex::new(ConnState {
                sessions: None,
                backlog: None,
                floor: None,
            }),
        }
    }

    #[test]
    fn mobile_sees_its_project_only() {
        let c = conn(Kind::Mobile, Some("p1"));
        assert!(c.wants(&ev("p1", json!({}), None)));
        assert!(c.wants(&ev("p1", json!({}), Some("s1"))));
        assert!(!c.wants(&ev("p2", json!({}), None)));
        assert!(c.wants(&ev(GLOBAL_SCOPE, json!({ "id": "p1" }), None)));
        assert!(!c.wants(&ev(GLOBAL_SCOPE, json!({ "id": "p2" }), None)));
        assert!(c.wants(&ev(GLOBAL_SCOPE, json!({ "id": "run_0123abcd" }), None)));
        assert!(
            c.follows_scope(GLOBAL_SCOPE, None),
            "gap notices of the global scope"
        );
        assert!(c.check_project("p1").is_ok());
        assert_eq!(c.check_project("p2").unwrap_err().code(), "FORBIDDEN");
    }

    #[test]
    fn ui_sees_everything_or_its_sessions() {
        let c = conn(Kind::Ui, None);
        assert!(c.wants(&ev("p2", json!({}), Some("s9"))));
        c.state.lock().unwrap().sessions = Some(["s1".to_owned()].into());
        assert!(c.wants(&ev("p2", json!({}), None)));
        assert!(c.wants(&ev("p2", json!({}), Some("s1"))));
        assert!(!c.wants(&ev("p2", json!({}), Some("s9"))));
        assert!(c.check_project("any").is_ok());
    }

    #[test]
    fn a_fan_out_over_threads_gives_every_connection_each_event_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, _store) = store_with(dir.path(), 10);
        // Enough connections for every core to take a shard (one thread on a one-core machine).
        let conns: Vec<Arc<Conn>> = (0..FANOUT_SHARD_MIN * fanout_threads().max(2) + 3)
            .map(|_| live(&hub, Kind::Ui, None))
            .collect();
        for seq in 1..=3 {
            let event = EventRecord {
                seq,
                ..ev("p", json!({}), None)
            };
            hub.dispatch(&Item::Event(Outgoing::new(Arc::new(event))));
        }
        for conn in &conns {
            assert_eq!(drain(conn), ["p:1", "p:2", "p:3"]);
        }
    }

    #[tokio::test]
    async fn a_connection_that_stops_reading_is_dropped_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, _store) = store_with(dir.path(), 10);
        let slow = live(&hub, Kind::Ui, None);
        let event = Arc::new(ev("p", json!({}), None));
        for _ in 0..engine::MAX_QUEUED {
            hub.dispatch(&Item::Event(Outgoing::new(event.clone())));
        }
        assert!(!slow.session.is_closed());
        hub.dispatch(&Item::Event(Outgoing::new(event)));
        assert!(slow.session.is_closed(), "told to disconnect and resync");
    }
}
