//! Socket.IO namespaces `/ui` (the desktop app) and `/mobile` (the phone), served by
//! socketioxide under `/socket.io/` on the API's port. `docs/realtime.md` is the protocol.
//!
//! How it is laid out:
//! - [`Realtime`] is what `run` creates: the tower layer for the router, and [`Realtime::bridge`],
//!   the one task that feeds every socket.
//! - `authorize` is the connect middleware: origin allowlist, local trust (the one place the
//!   credential check will go), handshake parsing and the namespace's rules. It also installs
//!   the socket's client-event handlers, because socketioxide sends the CONNECT answer before
//!   it runs the connect handler: a client that emits right after `connect` must find them.
//! - `on_connect` registers the connection with the `Hub` and starts its writer (a `Writer`).
//! - Client events (`subscribe`, `state:sync`, …) are thin: parse, check the namespace's
//!   rules, call a [`Domain`] operation, ack `{ok: true, …}` or `{ok: false, error}`.
//!
//! Why delivery does not use socketioxide's room broadcast: a socket must get each event exactly
//! once and in `seq` order, the gap before a reconnect (`lastSeq`) spliced in front of live
//! events, and nothing dropped when its transport is slow (a broadcast to a full socket buffer
//! fails silently). So the bridge reads the store's event stream (filling any lag from the
//! journal) and hands each event to every interested connection's queue; each connection has
//! a writer task that replays its gap first, then drains the queue, skipping what it already
//! sent, and waits for room in the socket's buffer instead of dropping. Rooms (`project:<id>`,
//! `session:<id>`) are still joined, so they describe each socket's interests.
//!
//! With several server instances (Redis backend), each instance's bridge sees every event once
//! through the store's bus and feeds its own sockets: no socket adapter is involved.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use maestro_protocol::{
    EventRecord, GLOBAL_SCOPE, ReplayIncomplete, ReplayRequest, ReplyInput, SendMail,
    SessionSubscription, SocketAuth, SpawnRequest, StateSyncRequest, StopSession, UpdateSession,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Sid;
use socketioxide::{ParserError, SendError, SocketError, SocketIo};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::domain::{Domain, check_id};
use crate::error::{Error, Result};
use crate::http::{auth, origin_allowed};
use crate::realtime::legacy;

/// Namespace of the desktop app: every project.
pub const UI_NAMESPACE: &str = "/ui";
/// Namespace of the phone: one project, named in the handshake.
pub const MOBILE_NAMESPACE: &str = "/mobile";

/// Events a connection may have queued before it counts as stuck and is disconnected (it
/// reconnects with `lastSeq` and gets the gap from the journal).
const QUEUE_CAPACITY: usize = 16_384;
/// Packets socketioxide buffers per socket. Above the journal's default size, so a reconnect's
/// replay fits without waiting on the transport.
const SOCKET_BUFFER: usize = 16_384;
/// Journal page size for replays (handshake gaps, `events:replay`, the bridge's catch-up).
const REPLAY_PAGE: usize = 1_000;
/// How long a writer waits for room in a socket's buffer before giving up on the client.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long shutdown waits for sockets to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most session ids one `subscribe` may name.
const MAX_SUBSCRIBE: usize = 1_000;

/// The Socket.IO side of the server; cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    hub: Arc<Hub>,
    io: SocketIo,
    layer: SocketIoLayer,
}

impl Realtime {
    /// Builds the namespaces. Writers are spawned on `tasks`; everything stops when `shutdown`
    /// is cancelled.
    pub fn new(
        domain: Domain,
        config: Arc<Config>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let cap = config.max_body_bytes;
        let (layer, io) = SocketIo::builder()
            .max_payload(u64::try_from(cap).unwrap_or(u64::MAX))
            .ws_max_message_size(cap)
            .ws_max_frame_size(cap)
            .max_buffer_size(SOCKET_BUFFER)
            // Clients send small packets (acks, client events); a 1 KiB read buffer instead of
            // 4 KiB saves 3 KB per idle socket, and larger messages still arrive in pieces.
            .ws_read_buffer_size(1024)
            .build_layer();
        let hub = Arc::new(Hub {
            domain,
            config,
            conns: Mutex::new(HashMap::new()),
            tasks,
            shutdown,
        });
        for kind in [Kind::Ui, Kind::Mobile] {
            let connect = {
                let hub = hub.clone();
                move |s: SocketRef| {
                    let hub = hub.clone();
                    async move { on_connect(hub, s) }
                }
            };
            let middleware = {
                let hub = hub.clone();
                move |s: SocketRef, TryData(auth): TryData<Value>| {
                    let hub = hub.clone();
                    async move { authorize(hub, kind, s, auth) }
                }
            };
            io.ns(kind.namespace(), connect.with(middleware));
        }
        Self { hub, io, layer }
    }

    /// The tower layer that serves `/socket.io/`.
    pub fn layer(&self) -> SocketIoLayer {
        self.layer.clone()
    }

    /// Connected sockets, both namespaces.
    pub fn connections(&self) -> usize {
        self.hub.conns.lock().expect("hub lock").len()
    }

    /// The bridge from the store's event stream to the sockets. It subscribes *now* (before the
    /// returned future is first polled), so nothing committed after this call is missed. The
    /// future runs until shutdown, then closes every socket.
    pub fn bridge(&self) -> impl Future<Output = ()> + Send + 'static {
        let hub = self.hub.clone();
        let io = self.io.clone();
        let rx = hub.domain.store.subscribe();
        let heads = initial_heads(&hub.domain);
        async move {
            let mut bridge = Bridge { hub, last: heads };
            bridge.run(rx).await;
            if tokio::time::timeout(CLOSE_GRACE, io.close()).await.is_err() {
                tracing::warn!("socket.io connections still open after the close grace");
            }
        }
    }
}

/// The head of every scope that exists, read after subscribing: the bridge forwards events
/// after these and detects gaps against them.
fn initial_heads(domain: &Domain) -> HashMap<String, u64> {
    let read = || -> Result<HashMap<String, u64>> {
        let mut r = domain.reader()?;
        let mut heads = HashMap::new();
        heads.insert(GLOBAL_SCOPE.to_owned(), r.head_seq(GLOBAL_SCOPE)?);
        for p in domain_projects(&mut *r)? {
            let head = r.head_seq(&p)?;
            heads.insert(p, head);
        }
        Ok(heads)
    };
    read().unwrap_or_else(|e| {
        // Without heads the bridge starts from 0 and the first event of each scope fills from
        // the journal: slower, still correct.
        tracing::error!(error = %e, "cannot read event heads; the bridge starts from the journal");
        HashMap::new()
    })
}

fn domain_projects(r: &mut (dyn crate::ports::Reader + Send + '_)) -> Result<Vec<String>> {
    use crate::ports::{Collection, ReaderExt};
    Ok(
        r.list::<maestro_protocol::Project>(Collection::Projects, None)?
            .into_iter()
            .map(|p| p.id)
            .collect(),
    )
}

/// Which namespace a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ui,
    Mobile,
}

impl Kind {
    fn namespace(self) -> &'static str {
        match self {
            Self::Ui => UI_NAMESPACE,
            Self::Mobile => MOBILE_NAMESPACE,
        }
    }
}

/// One connected socket's interests, shared by its writer and its client-event handlers.
struct Conn {
    kind: Kind,
    /// The handshake's project: the only one a `/mobile` connection sees.
    project: Option<String>,
    /// `None`: every event; `Some(ids)`: events not about a session, plus those about `ids`.
    sessions: Mutex<Option<HashSet<String>>>,
    /// Cancelled when the connection must go (its queue overflowed).
    kick: CancellationToken,
}

impl Conn {
    /// Whether events of `scope` reach this connection at all. `/mobile` follows its project's
    /// scope and, in the global scope, the events about its project.
    fn follows_scope(&self, scope: &str, data: Option<&Value>) -> bool {
        match self.kind {
            Kind::Ui => true,
            Kind::Mobile => {
                let mine = self.project.as_deref();
                if scope == GLOBAL_SCOPE {
                    data.is_none_or(|d| d.get("id").and_then(Value::as_str) == mine)
                } else {
                    Some(scope) == mine
                }
            }
        }
    }

    /// Whether `event` is delivered to this connection now.
    fn wants(&self, event: &EventRecord) -> bool {
        self.follows_scope(&event.scope, Some(&event.data))
            && legacy::wants(self.sessions.lock().expect("sessions lock").as_ref(), event)
    }

    /// `/mobile` may act only on its own project.
    fn check_project(&self, project: &str) -> Result<()> {
        match (self.kind, self.project.as_deref()) {
            (Kind::Mobile, Some(mine)) if mine != project => Err(Error::Forbidden(format!(
                "this connection follows project '{mine}', not '{project}'"
            ))),
            _ => Ok(()),
        }
    }
}

/// What the bridge hands a connection's writer.
enum Item {
    Event(Arc<Outgoing>),
    /// The bridge could not fill a gap of `scope` from the journal.
    Gap(ReplayIncomplete),
}

/// A live event on its way to the sockets, its envelope serialized once for all of them (with
/// thousands of sockets, serializing per socket was a large part of the fan-out's cost) — by
/// the first writer that sends it, so an event no socket wants costs nothing.
struct Outgoing {
    record: Arc<EventRecord>,
    envelope: std::sync::OnceLock<Box<RawValue>>,
}

impl Outgoing {
    fn new(record: Arc<EventRecord>) -> Arc<Self> {
        Arc::new(Self {
            record,
            envelope: std::sync::OnceLock::new(),
        })
    }

    fn envelope(&self) -> &RawValue {
        self.envelope.get_or_init(|| {
            serde_json::value::to_raw_value(&self.record.envelope()).expect("envelopes serialise")
        })
    }
}

impl std::ops::Deref for Outgoing {
    type Target = EventRecord;

    fn deref(&self) -> &EventRecord {
        &self.record
    }
}

struct Entry {
    conn: Arc<Conn>,
    tx: mpsc::Sender<Item>,
}

/// The live connections and the services their handlers call.
struct Hub {
    domain: Domain,
    config: Arc<Config>,
    conns: Mutex<HashMap<Sid, Entry>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Hub {
    fn register(&self, sid: Sid, conn: Arc<Conn>) -> mpsc::Receiver<Item> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        self.conns
            .lock()
            .expect("hub lock")
            .insert(sid, Entry { conn, tx });
        rx
    }

    fn remove(&self, sid: Sid) {
        self.conns.lock().expect("hub lock").remove(&sid);
    }

    /// Queues `item` for every connection it concerns. A connection whose queue is full is
    /// dropped and told to disconnect; it never silently misses an event.
    fn dispatch(&self, item: &Item) {
        let mut conns = self.conns.lock().expect("hub lock");
        let mut stuck = Vec::new();
        for (sid, entry) in conns.iter() {
            let follows = match item {
                Item::Event(ev) => entry.conn.follows_scope(&ev.scope, Some(&ev.data)),
                Item::Gap(gap) => entry
                    .conn
                    .follows_scope(gap.project_id.as_deref().unwrap_or(GLOBAL_SCOPE), None),
            };
            if !follows {
                continue;
            }
            let copy = match item {
                Item::Event(ev) => Item::Event(ev.clone()),
                Item::Gap(gap) => Item::Gap(gap.clone()),
            };
            if entry.tx.try_send(copy).is_err() {
                stuck.push(*sid);
            }
        }
        for sid in stuck {
            if let Some(entry) = conns.remove(&sid) {
                tracing::warn!(socket.id = %sid, "socket.io client fell too far behind; disconnecting");
                entry.conn.kick.cancel();
            }
        }
    }
}

/// The bridge's state: the last `seq` it forwarded per scope.
struct Bridge {
    hub: Arc<Hub>,
    last: HashMap<String, u64>,
}

impl Bridge {
    async fn run(&mut self, mut rx: tokio::sync::broadcast::Receiver<Arc<EventRecord>>) {
        loop {
            let received = tokio::select! {
                biased;
                _ = self.hub.shutdown.cancelled() => return,
                r = rx.recv() => r,
            };
            match received {
                Ok(event) => self.forward(event).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "socket.io bridge lagged; filling from the journal");
                    self.catch_up().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Forwards `event` unless already forwarded; a gap before it is filled from the journal.
    async fn forward(&mut self, event: Arc<EventRecord>) {
        let seen = self.last.get(&event.scope).copied().unwrap_or(0);
        if event.seq <= seen {
            return;
        }
        if event.seq > seen + 1 {
            self.fill(&event.scope, seen, Some(event.seq - 1)).await;
        }
        self.hub
            .dispatch(&Item::Event(Outgoing::new(event.clone())));
        self.last.insert(event.scope.clone(), event.seq);
    }

    /// After a lag: every scope that may have moved is read from the journal.
    async fn catch_up(&mut self) {
        let mut scopes: BTreeSet<String> = self.last.keys().cloned().collect();
        scopes.insert(GLOBAL_SCOPE.to_owned());
        match self
            .hub
            .domain
            .reader()
            .and_then(|mut r| domain_projects(&mut *r))
        {
            Ok(projects) => scopes.extend(projects),
            Err(e) => tracing::error!(error = %e, "cannot list projects for the catch-up"),
        }
        for scope in scopes {
            let after = self.last.get(&scope).copied().unwrap_or(0);
            self.fill(&scope, after, None).await;
        }
    }

    /// Forwards the journaled events of `scope` after `after` (up to `upto`). If the journal
    /// no longer has them all, the scope's connections get a gap notice and resync.
    async fn fill(&mut self, scope: &str, mut after: u64, upto: Option<u64>) {
        let store = self.hub.domain.store.clone();
        loop {
            let replay = match store.replay(scope, after, REPLAY_PAGE).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, scope, "cannot read the journal");
                    self.gap(scope, after, upto.unwrap_or(after));
                    if let Some(u) = upto {
                        self.last.insert(scope.to_owned(), u);
                    }
                    return;
                }
            };
            let first = replay.events.first().map(|e| e.seq);
            if !replay.complete || first.is_some_and(|f| f > after + 1) {
                self.gap(scope, after, replay.head);
            }
            let page = replay.events.len();
            for event in replay.events {
                if upto.is_some_and(|u| event.seq > u) {
                    return;
                }
                after = event.seq;
                self.last.insert(scope.to_owned(), after);
                self.hub
                    .dispatch(&Item::Event(Outgoing::new(Arc::new(event))));
            }
            let done =
                page < REPLAY_PAGE || after >= replay.head || upto.is_some_and(|u| after >= u);
            if done {
                if let Some(u) = upto
                    && after < u
                {
                    self.last.insert(scope.to_owned(), u);
                }
                return;
            }
        }
    }

    fn gap(&self, scope: &str, last_seq: u64, head_seq: u64) {
        tracing::warn!(
            scope,
            last_seq,
            head_seq,
            "events lost to socket.io clients; they resync"
        );
        self.hub.dispatch(&Item::Gap(ReplayIncomplete {
            recovered: false,
            project_id: (scope != GLOBAL_SCOPE).then(|| scope.to_owned()),
            head_seq,
            last_seq,
        }));
    }
}

/// A rejected handshake: the client's `connect_error` has `message: "<CODE>: <message>"`.
fn refuse(e: &Error) -> String {
    format!("{}: {}", e.code(), e.body().message)
}

/// The connect middleware (see the module docs).
fn authorize(
    hub: Arc<Hub>,
    kind: Kind,
    s: SocketRef,
    auth: std::result::Result<Value, ParserError>,
) -> std::result::Result<(), String> {
    let parts = s.req_parts();
    if let Some(origin) = parts.headers.get(axum::http::header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &hub.config));
        if !allowed {
            let shown = origin.to_str().unwrap_or("<not text>");
            tracing::warn!(
                origin = shown,
                ns = kind.namespace(),
                "socket.io origin refused"
            );
            return Err(refuse(&Error::Forbidden(format!(
                "origin '{shown}' is not allowed"
            ))));
        }
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    if !auth::local_trust(peer, &parts.headers, &hub.config) {
        return Err(refuse(&Error::Forbidden("not authorised".into())));
    }
    let handshake = auth
        .map_err(|e| Error::validation(format!("Invalid auth: {e}")))
        .and_then(parse::<SocketAuth>)
        .and_then(|a| check_handshake(&hub.domain, kind, a))
        .map_err(|e| refuse(&e))?;

    let conn = Arc::new(Conn {
        kind,
        project: handshake.project_id.clone(),
        sessions: Mutex::new(None),
        kick: CancellationToken::new(),
    });
    install_handlers(&hub, &conn, &s);
    s.extensions.insert(Accepted {
        conn,
        last_seq: handshake.last_seq,
    });
    Ok(())
}

/// What the middleware accepted, handed to [`on_connect`].
#[derive(Clone)]
struct Accepted {
    conn: Arc<Conn>,
    last_seq: Option<u64>,
}

/// The namespace's rules for the handshake.
fn check_handshake(domain: &Domain, kind: Kind, auth: SocketAuth) -> Result<SocketAuth> {
    match (&auth.project_id, kind) {
        (Some(p), _) => {
            check_id("projectId", p)?;
            domain.get_project(p)?;
        }
        (None, Kind::Mobile) => {
            return Err(Error::validation("projectId is required on /mobile"));
        }
        (None, Kind::Ui) => {
            if auth.last_seq.is_some() {
                return Err(Error::validation(
                    "lastSeq counts within a project: pass projectId with it",
                ));
            }
        }
    }
    Ok(auth)
}

/// The connect handler: the socket is connected; register it, join its rooms, start writing.
fn on_connect(hub: Arc<Hub>, s: SocketRef) {
    let Some(Accepted { conn, last_seq }) = s.extensions.get::<Accepted>() else {
        tracing::error!(socket.id = %s.id, "connected without passing the middleware");
        let _ = s.disconnect();
        return;
    };
    s.extensions.remove::<Accepted>();
    let sid = s.id;
    // Registered before the writer reads the journal: no event falls between the two.
    let rx = hub.register(sid, conn.clone());
    {
        let hub = hub.clone();
        s.on_disconnect(move |s: SocketRef| {
            hub.remove(s.id);
            async {}
        });
    }
    if !s.connected() {
        hub.remove(sid);
        return;
    }
    if let Some(p) = &conn.project {
        s.join(format!("project:{p}"));
    }
    tracing::debug!(socket.id = %sid, ns = s.ns(), project = ?conn.project, last_seq, "socket.io client connected");
    let writer = Writer {
        hub: hub.clone(),
        socket: s,
        conn,
        sent: HashMap::new(),
    };
    hub.tasks.spawn(writer.run(rx, last_seq));
}

/// A connection's writer: replays the handshake's gap, then forwards queued events, each once,
/// in order.
struct Writer {
    hub: Arc<Hub>,
    socket: SocketRef,
    conn: Arc<Conn>,
    /// The highest `seq` passed per scope; anything at or below it is a duplicate.
    sent: HashMap<String, u64>,
}

/// The socket is gone (or the server is stopping): stop writing.
struct Gone;

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Item>, last_seq: Option<u64>) {
        let result = async {
            if let (Some(after), Some(project)) = (last_seq, self.conn.project.clone()) {
                self.replay_gap(&project, after).await?;
            }
            // One stop signal for the writer's life: a fresh `cancelled()` per event registered
            // and unregistered every writer with the shared shutdown token on every event.
            let (shutdown, kick) = (self.hub.shutdown.clone(), self.conn.kick.clone());
            let stop = async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = kick.cancelled() => {}
                }
            };
            tokio::pin!(stop);
            loop {
                let item = tokio::select! {
                    _ = &mut stop => return Err(Gone),
                    item = rx.recv() => item,
                };
                match item {
                    None => return Ok(()),
                    Some(Item::Event(event)) => self.deliver(&event.record, Some(&event)).await?,
                    Some(Item::Gap(gap)) => self.emit("replay:incomplete", &gap).await?,
                }
            }
        }
        .await;
        if result.is_err() && self.conn.kick.is_cancelled() {
            let _ = self.socket.clone().disconnect();
        }
    }

    /// Sends the journaled events of `scope` after `after`, or `replay:incomplete` when the
    /// journal no longer reaches back (or `after` is ahead of the server).
    async fn replay_gap(&mut self, scope: &str, mut after: u64) -> std::result::Result<(), Gone> {
        let store = self.hub.domain.store.clone();
        loop {
            let replay = match store.replay(scope, after, REPLAY_PAGE).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, scope, "cannot read the journal for a replay");
                    let head = self.hub.domain.reader().and_then(|mut r| r.head_seq(scope));
                    return self.incomplete(scope, after, head.unwrap_or(after)).await;
                }
            };
            if !replay.complete || after > replay.head {
                return self.incomplete(scope, after, replay.head).await;
            }
            let page = replay.events.len();
            for event in &replay.events {
                after = event.seq;
                self.deliver(event, None).await?;
            }
            if page < REPLAY_PAGE || after >= replay.head {
                return Ok(());
            }
        }
    }

    async fn incomplete(
        &mut self,
        scope: &str,
        last_seq: u64,
        head_seq: u64,
    ) -> std::result::Result<(), Gone> {
        // Live events already committed are covered by the resync the client now does.
        let floor = self.sent.entry(scope.to_owned()).or_default();
        *floor = (*floor).max(head_seq);
        let notice = ReplayIncomplete {
            recovered: false,
            project_id: (scope != GLOBAL_SCOPE).then(|| scope.to_owned()),
            head_seq,
            last_seq,
        };
        self.emit("replay:incomplete", &notice).await
    }

    /// Sends `event` unless already sent or unwanted; `shared` is the same event as the bridge
    /// handed it to every socket, with its envelope serialized once.
    async fn deliver(
        &mut self,
        event: &EventRecord,
        shared: Option<&Outgoing>,
    ) -> std::result::Result<(), Gone> {
        if !self.sent.contains_key(&event.scope) {
            self.sent.insert(event.scope.clone(), 0);
        }
        let floor = self.sent.get_mut(&event.scope).expect("inserted above");
        if event.seq <= *floor {
            return Ok(());
        }
        *floor = event.seq;
        if !self.conn.wants(event) {
            return Ok(());
        }
        match shared {
            Some(out) => self.emit(&event.event, out.envelope()).await,
            None => self.emit(&event.event, &event.envelope()).await,
        }
    }

    /// Emits, waiting for room in the socket's buffer rather than dropping the event.
    async fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> std::result::Result<(), Gone> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.socket.emit(event, data) {
                Ok(()) => return Ok(()),
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    if started.elapsed() > STALL_LIMIT {
                        tracing::warn!(socket.id = %self.socket.id, "socket.io client stopped reading; disconnecting");
                        self.conn.kick.cancel();
                        return Err(Gone);
                    }
                    tokio::select! {
                        _ = self.hub.shutdown.cancelled() => return Err(Gone),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(SendError::Socket(SocketError::Closed)) => return Err(Gone),
                Err(SendError::Serialize(e)) => {
                    tracing::error!(error = %e, event, "cannot encode a socket.io event");
                    return Ok(());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client events

/// Registers every client event of the protocol on `s`, plus a fallback that answers unknown
/// events with `NOT_FOUND`.
fn install_handlers(hub: &Arc<Hub>, conn: &Arc<Conn>, s: &SocketRef) {
    on(s, hub, conn, "subscribe", |_, conn, s, data| async move {
        subscribe(&conn, &s, data)
    });
    on(s, hub, conn, "unsubscribe", |_, conn, s, data| async move {
        unsubscribe(&conn, &s, data)
    });
    on(
        s,
        hub,
        conn,
        "state:sync",
        |hub, conn, _, data| async move { state_sync(&hub, &conn, data) },
    );
    on(
        s,
        hub,
        conn,
        "events:replay",
        |hub, conn, _, data| async move { events_replay(&hub, &conn, data).await },
    );
    on(s, hub, conn, "mail:send", |hub, conn, _, data| async move {
        let req: SendMail = parse(data)?;
        conn.check_project(&req.project_id)?;
        let sent = hub.domain.send_mail(req).await?;
        Ok(json!({ "mail": sent }))
    });
    on(
        s,
        hub,
        conn,
        "session:reply-input",
        |hub, conn, _, data| async move {
            let req: ReplyInput = parse(data)?;
            if let Some(id) = &req.session_id {
                check_session_project(&hub, &conn, id)?;
            }
            to_object(&hub.domain.reply_input(req).await?)
        },
    );
    on(
        s,
        hub,
        conn,
        "session:spawn",
        |hub, conn, _, data| async move { session_spawn(&hub, &conn, data).await },
    );
    on(
        s,
        hub,
        conn,
        "session:stop",
        |hub, conn, _, data| async move {
            let req: StopSession = parse(data)?;
            let Some(id) = req.session_id else {
                return Err(Error::validation("sessionId is required"));
            };
            check_session_project(&hub, &conn, &id)?;
            let stop = UpdateSession {
                status: Some("stopped".into()),
                ..Default::default()
            };
            let session = hub.domain.update_session(id, stop).await?;
            Ok(json!({ "session": session }))
        },
    );
    s.on_fallback(|Event(name): Event, ack: AckSender| async move {
        let e = Error::not_found("Event", name);
        send_ack(ack, Err(e));
    });
}

/// Registers `handler` for `event`: its payload (first argument) is passed as JSON, its result
/// becomes the ack.
fn on<F, Fut>(s: &SocketRef, hub: &Arc<Hub>, conn: &Arc<Conn>, event: &'static str, handler: F)
where
    F: Fn(Arc<Hub>, Arc<Conn>, SocketRef, Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Value>> + Send + 'static,
{
    let (hub, conn) = (hub.clone(), conn.clone());
    s.on(
        event,
        move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
            let (hub, conn, handler) = (hub.clone(), conn.clone(), handler.clone());
            async move {
                // No argument at all reads as an empty payload.
                let data = data.unwrap_or(Value::Null);
                let result = handler(hub, conn, s, data).await;
                send_ack(ack, result);
            }
        },
    );
}

/// `{ok: true, …result}` or `{ok: false, error: {code, message, details?}}`.
fn send_ack(ack: AckSender, result: Result<Value>) {
    let body = match result {
        Ok(Value::Object(mut fields)) => {
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Ok(other) => json!({ "ok": true, "result": other }),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(error = %e, "socket.io client event failed");
            }
            let body = e.body();
            let mut error = json!({ "code": body.code, "message": body.message });
            if let Some(details) = body.details {
                error["details"] = details;
            }
            json!({ "ok": false, "error": error })
        }
    };
    if let Err(e) = ack.send(&body) {
        tracing::warn!(error = %e, "cannot send a socket.io ack");
    }
}

/// Reads a payload: absent means `{}`; anything but an object, or a field of the wrong type,
/// is a `VALIDATION_ERROR`.
fn parse<T: DeserializeOwned>(data: Value) -> Result<T> {
    let data = match data {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => data,
        _ => return Err(Error::validation("Invalid payload: expected a JSON object")),
    };
    serde_json::from_value(data).map_err(|e| Error::validation(format!("Invalid payload: {e}")))
}

fn to_object<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(format!("cannot encode: {e}")))
}

fn check_session_project(hub: &Hub, conn: &Conn, session_id: &str) -> Result<()> {
    if conn.kind == Kind::Mobile {
        let session = hub.domain.get_session(session_id)?;
        conn.check_project(&session.project_id)?;
    }
    Ok(())
}

fn session_ids(req: SessionSubscription) -> Result<Option<Vec<String>>> {
    if let Some(ids) = &req.session_ids {
        if ids.len() > MAX_SUBSCRIBE {
            return Err(Error::validation(format!(
                "at most {MAX_SUBSCRIBE} sessionIds at once"
            )));
        }
        for id in ids {
            check_id("sessionIds", id)?;
        }
    }
    Ok(req.session_ids)
}

fn subscription(conn: &Conn) -> Value {
    match conn.sessions.lock().expect("sessions lock").as_ref() {
        Some(ids) => json!({ "sessionIds": ids.iter().collect::<BTreeSet<_>>() }),
        None => json!({ "sessionIds": null }),
    }
}

/// `subscribe {sessionIds}`: from now on, events about sessions reach this socket only for
/// subscribed sessions (adds to earlier subscriptions).
fn subscribe(conn: &Conn, s: &SocketRef, data: Value) -> Result<Value> {
    let Some(ids) = session_ids(parse(data)?)? else {
        return Err(Error::validation("sessionIds is required"));
    };
    {
        let mut sessions = conn.sessions.lock().expect("sessions lock");
        let set = sessions.get_or_insert_with(HashSet::new);
        for id in &ids {
            set.insert(id.clone());
        }
    }
    s.join(
        ids.iter()
            .map(|id| format!("session:{id}"))
            .collect::<Vec<_>>(),
    );
    Ok(subscription(conn))
}

/// `unsubscribe {sessionIds?}`: drops those sessions; without `sessionIds`, drops the filter
/// (every event again).
fn unsubscribe(conn: &Conn, s: &SocketRef, data: Value) -> Result<Value> {
    let ids = session_ids(parse(data)?)?;
    let left: Vec<String> = {
        let mut sessions = conn.sessions.lock().expect("sessions lock");
        match ids {
            Some(ids) => {
                if let Some(set) = sessions.as_mut() {
                    for id in &ids {
                        set.remove(id);
                    }
                }
                ids
            }
            None => sessions.take().map(Vec::from_iter).unwrap_or_default(),
        }
    };
    s.leave(
        left.iter()
            .map(|id| format!("session:{id}"))
            .collect::<Vec<_>>(),
    );
    Ok(subscription(conn))
}

/// `state:sync {projectId?}`: one snapshot. `/mobile` always gets its project; `/ui` the
/// requested project, or all.
fn state_sync(hub: &Hub, conn: &Conn, data: Value) -> Result<Value> {
    let req: StateSyncRequest = parse(data)?;
    let project = match conn.kind {
        Kind::Mobile => {
            if let Some(p) = &req.project_id {
                conn.check_project(p)?;
            }
            conn.project.clone()
        }
        Kind::Ui => req.project_id,
    };
    to_object(&hub.domain.state_snapshot(project.as_deref())?)
}

/// `events:replay {afterSeq, projectId?, limit?}`.
async fn events_replay(hub: &Hub, conn: &Conn, data: Value) -> Result<Value> {
    let req: ReplayRequest = parse(data)?;
    let Some(after) = req.after_seq else {
        return Err(Error::validation("afterSeq is required"));
    };
    if let Some(p) = &req.project_id {
        check_id("projectId", p)?;
        conn.check_project(p)?;
        hub.domain.get_project(p)?;
    }
    let scope = req
        .project_id
        .or_else(|| conn.project.clone())
        .unwrap_or_else(|| GLOBAL_SCOPE.to_owned());
    let limit = req.limit.unwrap_or(REPLAY_PAGE).clamp(1, REPLAY_PAGE);
    let replay = hub.domain.store.replay(&scope, after, limit).await?;
    let project_id = (scope != GLOBAL_SCOPE).then_some(scope.as_str());
    if !replay.complete || after > replay.head {
        return Ok(json!({
            "recovered": false,
            "events": [],
            "headSeq": replay.head,
            "projectId": project_id,
            "hasMore": false,
        }));
    }
    let last = replay.events.last().map_or(after, |e| e.seq);
    let envelopes: Vec<_> = replay.events.iter().map(EventRecord::envelope).collect();
    Ok(json!({
        "recovered": true,
        "events": envelopes,
        "headSeq": replay.head,
        "projectId": project_id,
        "hasMore": last < replay.head,
    }))
}

/// `session:spawn`: the body of `POST /api/sessions/spawn` (errors keep its snake_case codes),
/// plus an optional `idempotencyKey` (the `Idempotency-Key` header's role).
async fn session_spawn(hub: &Hub, conn: &Conn, data: Value) -> Result<Value> {
    let mut data = data;
    let key = match data
        .as_object_mut()
        .and_then(|o| o.remove("idempotencyKey"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => return Err(Error::validation("idempotencyKey must be a string")),
    };
    let mut req: SpawnRequest = parse(data)?;
    match &req.project_id {
        Some(p) => conn.check_project(p)?,
        // On `/mobile` the connection's project is implied.
        None if conn.kind == Kind::Mobile => req.project_id = conn.project.clone(),
        None => {}
    }
    to_object(&hub.domain.spawn_session(req, key).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{Store, TxnExt, transact};

    fn conn(kind: Kind, project: Option<&str>) -> Conn {
        Conn {
            kind,
            project: project.map(str::to_owned),
            sessions: Mutex::new(None),
            kick: CancellationToken::new(),
        }
    }

    fn ev(scope: &str, data: Value, session: Option<&str>) -> EventRecord {
        EventRecord {
            scope: scope.into(),
            seq: 1,
            event: "x".into(),
            data,
            timestamp: 0,
            session_id: session.map(str::to_owned),
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
        *c.sessions.lock().unwrap() = Some(["s1".to_owned()].into());
        assert!(c.wants(&ev("p2", json!({}), None)));
        assert!(c.wants(&ev("p2", json!({}), Some("s1"))));
        assert!(!c.wants(&ev("p2", json!({}), Some("s9"))));
        assert!(c.check_project("any").is_ok());
    }

    fn store_with(dir: &std::path::Path, capacity: u64) -> (Arc<Hub>, Arc<dyn Store>) {
        let mut config = Config::for_dir(dir);
        config.journal_capacity = capacity;
        let domain = crate::open(&config, "http://localhost".into()).unwrap();
        let store = domain.store.clone();
        let hub = Arc::new(Hub {
            domain,
            config: Arc::new(config),
            conns: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        (hub, store)
    }

    async fn emit_n(store: &dyn Store, scope: &'static str, n: usize) -> Vec<EventRecord> {
        for i in 0..n {
            transact(store, move |tx| {
                tx.emit(scope, "x", &json!({ "i": i }), None);
                Ok(())
            })
            .await
            .unwrap();
        }
        store.replay(scope, 0, 10_000).await.unwrap().events
    }

    fn drain(rx: &mut mpsc::Receiver<Item>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            out.push(match item {
                Item::Event(e) => format!("{}:{}", e.scope, e.seq),
                Item::Gap(g) => format!("gap:{}>{}", g.last_seq, g.head_seq),
            });
        }
        out
    }

    #[tokio::test]
    async fn the_bridge_fills_gaps_from_the_journal_and_drops_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, store) = store_with(dir.path(), 100);
        let events = emit_n(&*store, "p", 5).await;
        let mut rx = hub.register(Sid::new(), Arc::new(conn(Kind::Ui, None)));
        let mut bridge = Bridge {
            hub: hub.clone(),
            last: HashMap::new(),
        };
        // It sees only the fifth event: the four before come from the journal first.
        bridge.forward(Arc::new(events[4].clone())).await;
        assert_eq!(drain(&mut rx), ["p:1", "p:2", "p:3", "p:4", "p:5"]);
        bridge.forward(Arc::new(events[2].clone())).await;
        bridge.forward(Arc::new(events[4].clone())).await;
        assert!(drain(&mut rx).is_empty(), "already forwarded");

        // After a lag, every scope is read from where the bridge was.
        emit_n(&*store, "p", 2).await;
        emit_n(&*store, GLOBAL_SCOPE, 1).await;
        bridge.catch_up().await;
        assert_eq!(drain(&mut rx), ["global:1", "p:6", "p:7"]);
        bridge.catch_up().await;
        assert!(drain(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn the_bridge_reports_what_the_journal_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, store) = store_with(dir.path(), 3);
        let events = emit_n(&*store, "p", 10).await;
        assert_eq!(
            events.first().map(|e| e.seq),
            Some(8),
            "the journal keeps 3"
        );
        let mut rx = hub.register(Sid::new(), Arc::new(conn(Kind::Mobile, Some("p"))));
        let mut bridge = Bridge {
            hub: hub.clone(),
            last: HashMap::new(),
        };
        bridge.forward(Arc::new(events[2].clone())).await;
        assert_eq!(drain(&mut rx), ["gap:0>10", "p:8", "p:9", "p:10"]);
    }

    #[tokio::test]
    async fn a_connection_that_stops_reading_is_dropped_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, _store) = store_with(dir.path(), 10);
        let slow = Arc::new(conn(Kind::Ui, None));
        let _rx = hub.register(Sid::new(), slow.clone());
        let event = Arc::new(ev("p", json!({}), None));
        for _ in 0..QUEUE_CAPACITY {
            hub.dispatch(&Item::Event(Outgoing::new(event.clone())));
        }
        assert!(!slow.kick.is_cancelled());
        hub.dispatch(&Item::Event(Outgoing::new(event)));
        assert!(slow.kick.is_cancelled(), "told to disconnect and resync");
        assert!(hub.conns.lock().unwrap().is_empty());
    }

    #[test]
    fn payloads() {
        let r: StopSession = parse(Value::Null).unwrap();
        assert_eq!(r.session_id, None);
        assert_eq!(
            parse::<StopSession>(json!([1])).unwrap_err().code(),
            "VALIDATION_ERROR"
        );
        assert_eq!(
            parse::<StopSession>(json!({ "sessionId": 5 }))
                .unwrap_err()
                .code(),
            "VALIDATION_ERROR"
        );
    }
}
