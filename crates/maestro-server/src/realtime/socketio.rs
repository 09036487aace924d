//! Socket.IO namespaces `/ui` (the desktop app) and `/mobile` (the phone), over our own
//! Engine.IO transport ([`super::engine`]) under `/socket.io/` on the API's port.
//! `docs/realtime.md` is the protocol.
//!
//! How it is laid out:
//! - [`Realtime`] is what `run` creates: the handler for `/socket.io/` requests, and
//!   [`Realtime::bridge`], the one task that feeds every socket (plus the heartbeat).
//! - [`Hub`] handles Socket.IO packets: `connect` checks a handshake (origin allowlist, local
//!   trust — the one place the credential check will go —, the namespace's rules) and
//!   registers a [`Conn`]; client events (`subscribe`, `state:sync`, …) are thin: parse,
//!   check the namespace's rules, call a [`Domain`] operation, ack `{ok: true, …}` or
//!   `{ok: false, error}`.
//! - Delivery: the bridge reads the store's event stream (filling any lag from the journal)
//!   and offers each event to every connection. A connection that follows the event's scope
//!   and wants it gets the event's frame — encoded once per namespace for all sockets — written
//!   straight to its transport by the bridge itself ([`Session::send`]): no task is woken per
//!   socket unless its kernel buffer is full. A connection that is still replaying the gap
//!   before its handshake's `lastSeq` collects live events in a backlog instead, and sends them
//!   after the replay, skipping what the replay already sent. Nothing is dropped silently: a
//!   client that stops taking packets is disconnected and recovers with `lastSeq`.
//!
//! With several server instances (Redis backend), each instance's bridge sees every event once
//! through the store's bus and feeds its own sockets: no socket adapter is involved.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use maestro_protocol::{
    ApprovalDecideAction, CREDENTIAL_REVOKED, DecideApproval, EventRecord, GLOBAL_SCOPE,
    ReplayIncomplete, ReplayRequest, ReplyInput, SendMail, SessionSubscription, SocketAuth,
    SpawnRequest, StateSyncRequest, StopSession, UpdateSession,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{self, Engine, EngineConfig, Frame, Session};
use crate::auth::{Gate, Principal, Refusal, trust};
use crate::config::Config;
use crate::domain::{Domain, check_id};
use crate::error::{Error, Result};
use crate::realtime::legacy;

/// Namespace of the desktop app: every project.
pub const UI_NAMESPACE: &str = "/ui";
/// Namespace of the phone: one project, named in the handshake.
pub const MOBILE_NAMESPACE: &str = "/mobile";

/// Live events a connection may collect while it replays its handshake's gap.
const BACKLOG_CAPACITY: usize = engine::MAX_QUEUED;
/// Journal page size for replays (handshake gaps, `events:replay`, the bridge's catch-up).
const REPLAY_PAGE: usize = 1_000;
/// How long shutdown waits for sockets to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Below this many connections per thread, the fan-out stays on one thread.
const FANOUT_SHARD_MIN: usize = 256;

/// Threads the fan-out may use: the machine's cores.
fn fanout_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Most session ids one `subscribe` may name.
const MAX_SUBSCRIBE: usize = 1_000;

/// The Socket.IO side of the server; cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    hub: Arc<Hub>,
    engine: Arc<Engine>,
}

impl Realtime {
    /// Builds the namespaces. Replays run on `tasks`; everything stops when `shutdown` is
    /// cancelled.
    pub fn new(
        domain: Domain,
        config: Arc<Config>,
        gate: Gate,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let engine_config = EngineConfig {
            ping_interval: Duration::from_millis(config.socketio_ping_interval_ms),
            ping_timeout: Duration::from_millis(config.socketio_ping_timeout_ms),
            max_payload: config.max_body_bytes,
            max_sessions: usize::try_from(config.max_socketio_sessions).unwrap_or(usize::MAX),
            connect_timeout: Some(Duration::from_millis(config.socketio_connect_timeout_ms)),
        };
        let hub = Arc::new(Hub::new(
            domain,
            config,
            gate,
            tasks.clone(),
            shutdown.clone(),
        ));
        let engine = Engine::new(engine_config, hub.clone(), tasks, shutdown);
        Self { hub, engine }
    }

    /// Answers a request under `/socket.io/` (polling, or the WebSocket upgrade).
    pub async fn serve(&self, req: Request<Body>, peer: Option<SocketAddr>) -> Response<Body> {
        self.engine.clone().serve(req, peer).await
    }

    /// Connected sockets, both namespaces.
    pub fn connections(&self) -> usize {
        self.hub.conns.lock().expect("hub lock").len()
    }

    /// The bridge from the store's event stream to the sockets, and the transport's heartbeat.
    /// It subscribes *now* (before the returned future is first polled), so nothing committed
    /// after this call is missed. The future runs until shutdown, then closes every socket.
    pub fn bridge(&self) -> impl Future<Output = ()> + Send + 'static {
        let hub = self.hub.clone();
        let engine = self.engine.clone();
        let rx = hub.domain.store.subscribe();
        let heads = initial_heads(&hub.domain);
        async move {
            let mut bridge = Bridge {
                hub: hub.clone(),
                last: heads,
            };
            tokio::join!(bridge.run(rx), engine.clone().heartbeat());
            engine.close_all(|session| {
                let sockets = session.sockets.lock().expect("sockets lock").clone();
                for conn in sockets {
                    session.send(&Frame::text(&format!("41{},", conn.kind.namespace())));
                }
            });
            let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
            while engine.sessions() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
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

    fn of(namespace: &str) -> Option<Self> {
        match namespace {
            UI_NAMESPACE => Some(Self::Ui),
            MOBILE_NAMESPACE => Some(Self::Mobile),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One socket: a namespace connected over an Engine.IO session.
pub(super) struct Conn {
    key: u64,
    sid: Box<str>,
    kind: Kind,
    /// The handshake's project: the only one a `/mobile` connection sees.
    project: Option<String>,
    session: Arc<Session>,
    /// Who the handshake admitted; decides which client actions are allowed.
    pub(super) principal: Principal,
    state: Mutex<ConnState>,
}

struct ConnState {
    /// `None`: every event; `Some(ids)`: events not about a session, plus those about `ids`.
    sessions: Option<HashSet<String>>,
    /// While the handshake's gap is replayed: live events, sent after the replay.
    backlog: Option<Vec<Item>>,
    /// Events of this scope up to this `seq` were sent by the replay (or are covered by the
    /// resync a `replay:incomplete` asks for): skipped when they arrive live.
    floor: Option<(String, u64)>,
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
    #[cfg(test)]
    fn wants(&self, event: &EventRecord) -> bool {
        self.follows_scope(&event.scope, Some(&event.data))
            && legacy::wants(self.state.lock().unwrap().sessions.as_ref(), event)
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

    /// Emits one event to this socket (no ack).
    fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> bool {
        match event_packet(self.kind, event, data) {
            Some(packet) => self.session.send(&Frame::text(&packet)),
            None => true,
        }
    }

    /// The bridge offers `item` to this connection.
    fn offer(&self, item: &Item) {
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
                if let Some((scope, floor)) = &state.floor
                    && *scope == ev.scope
                    && ev.seq <= *floor
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
    fn go_live(&self) {
        let mut state = self.state.lock().expect("conn lock");
        let backlog = state.backlog.take().unwrap_or_default();
        for item in &backlog {
            self.deliver(&state, item);
        }
    }

    fn raise_floor(&self, scope: &str, seq: u64) {
        let mut state = self.state.lock().expect("conn lock");
        match &mut state.floor {
            Some((s, floor)) if s == scope => *floor = (*floor).max(seq),
            slot => *slot = Some((scope.to_owned(), seq)),
        }
    }
}

/// `42<ns>,["event",data]`; `None` (logged) if `data` cannot be encoded.
fn event_packet<T: Serialize + ?Sized>(kind: Kind, event: &str, data: &T) -> Option<String> {
    match serde_json::to_string(&(event, data)) {
        Ok(args) => Some(format!("42{},{args}", kind.namespace())),
        Err(e) => {
            tracing::error!(error = %e, event, "cannot encode a socket.io event");
            None
        }
    }
}

/// What the bridge offers the connections.
#[derive(Clone)]
enum Item {
    Event(Arc<Outgoing>),
    /// The bridge could not fill a gap of `scope` from the journal.
    Gap(ReplayIncomplete),
}

/// A live event on its way to the sockets, its frame encoded once per namespace for all of
/// them — by the first socket that wants it, so an event no socket wants costs nothing.
struct Outgoing {
    record: Arc<EventRecord>,
    frames: [OnceLock<Frame>; 2],
}

impl Outgoing {
    fn new(record: Arc<EventRecord>) -> Arc<Self> {
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
struct Hub {
    domain: Domain,
    config: Arc<Config>,
    gate: Gate,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_key: AtomicU64,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Hub {
    fn new(
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
            conns: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            tasks,
            shutdown,
        }
    }

    /// Registers a connection of `session`, in its replay phase (live events collect in its
    /// backlog until [`Conn::go_live`]).
    fn register(
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

    fn remove(&self, conn: &Conn) {
        self.conns.lock().expect("hub lock").remove(&conn.key);
    }

    /// Offers `item` to every connection. With many connections the work is split over the
    /// machine's cores: writing to a socket is mostly kernel time (loopback TCP even runs the
    /// receiver's side in the sender's context), and one thread would leave the other cores
    /// idle while thousands of sockets wait. Each connection is offered the item exactly once,
    /// and the next item only after this one reached every connection, so each socket still
    /// gets events in order.
    fn dispatch(&self, item: &Item) {
        if let Item::Event(out) = item
            && out.record.event == CREDENTIAL_REVOKED
        {
            self.close_revoked(&out.record);
        }
        let conns = self.conns.lock().expect("hub lock");
        let threads = fanout_threads().min(conns.len() / FANOUT_SHARD_MIN).max(1);
        if threads == 1 {
            for conn in conns.values() {
                conn.offer(item);
            }
            return;
        }
        let all: Vec<&Arc<Conn>> = conns.values().collect();
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
                        for conn in shard {
                            conn.offer(item);
                        }
                    });
                if spawned.is_err() {
                    // No thread to be had: do it here.
                    for conn in shard {
                        conn.offer(item);
                    }
                }
            }
            for conn in mine {
                conn.offer(item);
            }
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

    /// `0<ns>,<auth>`: the handshake of a namespace.
    fn connect(&self, session: &Arc<Session>, ns: &str, auth: &str) {
        let Some(kind) = Kind::of(ns) else {
            let reply = json!({ "message": "Invalid namespace" });
            session.send(&Frame::text(&format!("44{ns},{reply}")));
            return;
        };
        let existing = session
            .sockets
            .lock()
            .expect("sockets lock")
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.sid.clone());
        if let Some(sid) = existing {
            let reply = json!({ "sid": sid });
            session.send(&Frame::text(&format!("40{ns},{reply}")));
            return;
        }
        let (handshake, principal) = match self.authorize(session, kind, auth) {
            Ok(h) => h,
            Err(message) => {
                let reply = json!({ "message": message });
                session.send(&Frame::text(&format!("44{ns},{reply}")));
                return;
            }
        };
        // Registered before the replay reads the journal: no event falls between the two.
        let conn = self.register(session, kind, handshake.project_id.clone(), principal);
        if session.is_closed() {
            // Closed while the handshake ran: its `on_close` may have missed this socket.
            self.remove(&conn);
            return;
        }
        session.mark_joined();
        let reply = json!({ "sid": conn.sid });
        session.send(&Frame::text(&format!("40{ns},{reply}")));
        tracing::debug!(socket.id = %conn.sid, ns, project = ?conn.project, last_seq = handshake.last_seq, "socket.io client connected");
        match (handshake.last_seq, conn.project.clone()) {
            (Some(after), Some(project)) => {
                let store = self.domain.store.clone();
                let domain = self.domain.clone();
                self.tasks.spawn(async move {
                    replay_gap(&domain, &*store, &conn, &project, after).await;
                    conn.go_live();
                });
            }
            _ => conn.go_live(),
        }
    }

    /// The handshake's checks (see docs/realtime.md): a refusal is the `connect_error`
    /// message, `"<CODE>: <text>"`.
    fn authorize(
        &self,
        session: &Session,
        kind: Kind,
        auth: &str,
    ) -> std::result::Result<(SocketAuth, Principal), String> {
        let headers = session.headers();
        // The gate checked the Origin of the request that opened the connection; checked again
        // here, so no path to a namespace skips it.
        if let Err(refusal) = crate::auth::check_origin(headers, &self.config) {
            tracing::warn!(ns = kind.namespace(), "socket.io origin refused");
            self.gate
                .audit_refusal(&refusal, session.peer(), headers, kind.namespace());
            return Err(refuse_auth(&refusal));
        }
        let auth = if auth.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str::<Value>(auth)
                .map_err(|e| Error::validation(format!("Invalid auth: {e}")))
        };
        let auth = auth.and_then(parse::<SocketAuth>).map_err(|e| refuse(&e))?;
        let principal = self
            .gate
            .admit_socket(
                session.principal(),
                auth.token.as_deref(),
                session.peer(),
                headers,
            )
            .map_err(|r| refuse_auth(&r))?;
        check_handshake(&self.domain, kind, auth)
            .map(|a| (a, principal))
            .map_err(|e| refuse(&e))
    }

    /// `2<ns>,[<id>]["event", payload]`: runs the client event and acks its result.
    async fn on_event(&self, conn: &Arc<Conn>, ack: Option<u64>, data: &str) {
        let args: Vec<Value> = match serde_json::from_str(data) {
            Ok(args) => args,
            Err(_) => {
                tracing::debug!(socket.id = %conn.sid, "malformed socket.io event; closing");
                conn.session.close();
                return;
            }
        };
        let mut args = args.into_iter();
        let Some(Value::String(name)) = args.next() else {
            tracing::debug!(socket.id = %conn.sid, "socket.io event without a name; closing");
            conn.session.close();
            return;
        };
        // No argument at all reads as an empty payload.
        let payload = args.next().unwrap_or(Value::Null);
        let result = self.run_event(conn, &name, payload).await;
        if let Some(id) = ack {
            send_ack(conn, id, result);
        } else if let Err(e) = result
            && e.status().is_server_error()
        {
            tracing::error!(error = %e, event = name, "socket.io client event failed");
        }
    }

    async fn run_event(&self, conn: &Arc<Conn>, name: &str, data: Value) -> Result<Value> {
        let need = trust::socket_action_scope(name);
        if !conn.principal.allows(need) {
            return Err(Error::Forbidden(format!(
                "{name} needs scope '{need}'; this connection has '{}'",
                conn.principal.scope
            )));
        }
        match name {
            "subscribe" => subscribe(conn, data),
            "unsubscribe" => unsubscribe(conn, data),
            "state:sync" => state_sync(self, conn, data),
            "events:replay" => events_replay(self, conn, data).await,
            "mail:send" => {
                let req: SendMail = parse(data)?;
                conn.check_project(&req.project_id)?;
                let sent = self.domain.send_mail(req).await?;
                Ok(json!({ "mail": sent }))
            }
            "session:reply-input" => {
                let req: ReplyInput = parse(data)?;
                if let Some(id) = &req.session_id {
                    check_session_project(self, conn, id)?;
                }
                to_object(&self.domain.reply_input(req).await?)
            }
            "session:spawn" => session_spawn(self, conn, data).await,
            "approval:decide" => {
                let req: ApprovalDecideAction = parse(data)?;
                let approval = self.domain.get_approval(&req.approval_id)?;
                conn.check_project(&approval.project_id)?;
                let decide = DecideApproval {
                    decision: req.decision,
                    reason: req.reason,
                    request_id: req.request_id,
                };
                let decided = self
                    .domain
                    .decide_approval(req.approval_id, decide, conn.principal.label())
                    .await?;
                Ok(json!({ "approval": decided }))
            }
            "session:stop" => {
                let req: StopSession = parse(data)?;
                let Some(id) = req.session_id else {
                    return Err(Error::validation("sessionId is required"));
                };
                check_session_project(self, conn, &id)?;
                let stop = UpdateSession {
                    status: Some("stopped".into()),
                    ..Default::default()
                };
                let session = self.domain.update_session(id, stop).await?;
                Ok(json!({ "session": session }))
            }
            other => Err(Error::not_found("Event", other)),
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

/// A Socket.IO packet from the client: `<type>[<ns>,][<ack id>]<json>`.
struct Packet<'a> {
    kind: u8,
    ns: &'a str,
    id: Option<u64>,
    data: &'a str,
}

impl<'a> Packet<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let kind = *text.as_bytes().first()?;
        if !kind.is_ascii_digit() {
            return None;
        }
        let mut rest = &text[1..];
        let ns = if rest.starts_with('/') {
            match rest.find(',') {
                Some(i) => {
                    let ns = &rest[..i];
                    rest = &rest[i + 1..];
                    ns
                }
                None => std::mem::take(&mut rest),
            }
        } else {
            "/"
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = if digits > 0 {
            Some(rest[..digits].parse().ok()?)
        } else {
            None
        };
        Some(Self {
            kind,
            ns,
            id,
            data: &rest[digits..],
        })
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

/// Sends the journaled events of `scope` after `after` to `conn`, or `replay:incomplete` when
/// the journal no longer reaches back (or `after` is ahead of the server). Raises the
/// connection's floor so live events the replay covered are not sent twice.
async fn replay_gap(
    domain: &Domain,
    store: &dyn crate::ports::Store,
    conn: &Conn,
    scope: &str,
    mut after: u64,
) {
    loop {
        let replay = match store.replay(scope, after, REPLAY_PAGE).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, scope, "cannot read the journal for a replay");
                let head = domain.reader().and_then(|mut r| r.head_seq(scope));
                incomplete(conn, scope, after, head.unwrap_or(after));
                return;
            }
        };
        if !replay.complete || after > replay.head {
            incomplete(conn, scope, after, replay.head);
            return;
        }
        let page = replay.events.len();
        let wanted = {
            let state = conn.state.lock().expect("conn lock");
            replay
                .events
                .iter()
                .filter(|e| {
                    conn.follows_scope(&e.scope, Some(&e.data))
                        && legacy::wants(state.sessions.as_ref(), e)
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        if let Some(last) = replay.events.last() {
            after = last.seq;
        }
        let frames: Vec<Frame> = wanted
            .iter()
            .filter_map(|e| event_packet(conn.kind, &e.event, &e.envelope()))
            .map(|packet| Frame::text(&packet))
            .collect();
        if !conn.session.send_many(&frames) {
            return;
        }
        conn.raise_floor(scope, after);
        if page < REPLAY_PAGE || after >= replay.head {
            return;
        }
    }
}

fn incomplete(conn: &Conn, scope: &str, last_seq: u64, head_seq: u64) {
    // Live events already committed are covered by the resync the client now does.
    conn.raise_floor(scope, head_seq);
    let notice = ReplayIncomplete {
        recovered: false,
        project_id: (scope != GLOBAL_SCOPE).then(|| scope.to_owned()),
        head_seq,
        last_seq,
    };
    conn.emit("replay:incomplete", &notice);
}

/// A rejected handshake: the client's `connect_error` has `message: "<CODE>: <message>"`.
fn refuse(e: &Error) -> String {
    format!("{}: {}", e.code(), e.body().message)
}

/// A refused handshake's `connect_error` message, `"<CODE>: <text>"` like every other.
fn refuse_auth(r: &Refusal) -> String {
    format!("{}: {}", r.code(), r.message())
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

// ---------------------------------------------------------------------------------------------
// Client events

/// Acks `{ok: true, …result}` or `{ok: false, error: {code, message, details?}}`.
fn send_ack(conn: &Conn, id: u64, result: Result<Value>) {
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
    let packet = format!("43{},{id}{}", conn.kind.namespace(), json!([body]));
    conn.session.send(&Frame::text(&packet));
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
    match conn.state.lock().expect("conn lock").sessions.as_ref() {
        Some(ids) => json!({ "sessionIds": ids.iter().collect::<BTreeSet<_>>() }),
        None => json!({ "sessionIds": null }),
    }
}

/// `subscribe {sessionIds}`: from now on, events about sessions reach this socket only for
/// subscribed sessions (adds to earlier subscriptions).
fn subscribe(conn: &Conn, data: Value) -> Result<Value> {
    let Some(ids) = session_ids(parse(data)?)? else {
        return Err(Error::validation("sessionIds is required"));
    };
    {
        let mut state = conn.state.lock().expect("conn lock");
        let set = state.sessions.get_or_insert_with(HashSet::new);
        for id in ids {
            set.insert(id);
        }
    }
    Ok(subscription(conn))
}

/// `unsubscribe {sessionIds?}`: drops those sessions; without `sessionIds`, drops the filter
/// (every event again).
fn unsubscribe(conn: &Conn, data: Value) -> Result<Value> {
    let ids = session_ids(parse(data)?)?;
    {
        let mut state = conn.state.lock().expect("conn lock");
        match ids {
            Some(ids) => {
                if let Some(set) = state.sessions.as_mut() {
                    for id in &ids {
                        set.remove(id);
                    }
                }
            }
            None => state.sessions = None,
        }
    }
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
        c.state.lock().unwrap().sessions = Some(["s1".to_owned()].into());
        assert!(c.wants(&ev("p2", json!({}), None)));
        assert!(c.wants(&ev("p2", json!({}), Some("s1"))));
        assert!(!c.wants(&ev("p2", json!({}), Some("s9"))));
        assert!(c.check_project("any").is_ok());
    }

    #[test]
    fn packets_parse_as_socket_io_writes_them() {
        let p = Packet::parse("2/ui,12[\"subscribe\",{}]").unwrap();
        assert_eq!(
            (p.kind, p.ns, p.id, p.data),
            (b'2', "/ui", Some(12), "[\"subscribe\",{}]")
        );
        let p = Packet::parse("0/mobile,{\"projectId\":\"p\"}").unwrap();
        assert_eq!((p.kind, p.ns, p.id), (b'0', "/mobile", None));
        assert_eq!(p.data, "{\"projectId\":\"p\"}");
        let p = Packet::parse("1/ui").unwrap();
        assert_eq!((p.kind, p.ns, p.data), (b'1', "/ui", ""));
        let p = Packet::parse("2[\"x\"]").unwrap();
        assert_eq!(p.ns, "/");
        assert!(Packet::parse("").is_none());
        assert!(Packet::parse("x").is_none());
        assert!(Packet::parse("2/ui,99999999999999999999999[]").is_none());
    }

    fn store_with(dir: &std::path::Path, capacity: u64) -> (Arc<Hub>, Arc<dyn Store>) {
        let mut config = Config::for_dir(dir);
        config.journal_capacity = capacity;
        let domain = crate::open(&config, "http://localhost".into()).unwrap();
        let store = domain.store.clone();
        let config = Arc::new(config);
        let gate = Gate::new(config.clone(), domain.clone());
        let hub = Arc::new(Hub::new(
            domain,
            config,
            gate,
            TaskTracker::new(),
            CancellationToken::new(),
        ));
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

    /// What a connection's transport was given, as `scope:seq` (events) or `gap:last>head`.
    fn drain(conn: &Conn) -> Vec<String> {
        conn.session
            .take_queued()
            .into_iter()
            .map(|packet| {
                let prefix = format!("42{},", conn.kind.namespace());
                let args: Value =
                    serde_json::from_str(packet.strip_prefix(&prefix).expect("an event")).unwrap();
                let data = &args[1];
                if args[0] == "replay:incomplete" {
                    format!("gap:{}>{}", data["lastSeq"], data["headSeq"])
                } else {
                    let scope = data["projectId"].as_str().unwrap_or(GLOBAL_SCOPE);
                    format!("{scope}:{}", data["seq"])
                }
            })
            .collect()
    }

    fn live(hub: &Hub, kind: Kind, project: Option<&str>) -> Arc<Conn> {
        let conn = hub.register(
            &Session::detached(),
            kind,
            project.map(str::to_owned),
            Principal::local(),
        );
        conn.go_live();
        conn
    }

    #[tokio::test]
    async fn the_bridge_fills_gaps_from_the_journal_and_drops_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, store) = store_with(dir.path(), 100);
        let events = emit_n(&*store, "p", 5).await;
        let conn = live(&hub, Kind::Ui, None);
        let mut bridge = Bridge {
            hub: hub.clone(),
            last: HashMap::new(),
        };
        // It sees only the fifth event: the four before come from the journal first.
        bridge.forward(Arc::new(events[4].clone())).await;
        assert_eq!(drain(&conn), ["p:1", "p:2", "p:3", "p:4", "p:5"]);
        bridge.forward(Arc::new(events[2].clone())).await;
        bridge.forward(Arc::new(events[4].clone())).await;
        assert!(drain(&conn).is_empty(), "already forwarded");

        // After a lag, every scope is read from where the bridge was.
        emit_n(&*store, "p", 2).await;
        emit_n(&*store, GLOBAL_SCOPE, 1).await;
        bridge.catch_up().await;
        assert_eq!(drain(&conn), ["global:1", "p:6", "p:7"]);
        bridge.catch_up().await;
        assert!(drain(&conn).is_empty());
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
        let conn = live(&hub, Kind::Mobile, Some("p"));
        let mut bridge = Bridge {
            hub: hub.clone(),
            last: HashMap::new(),
        };
        bridge.forward(Arc::new(events[2].clone())).await;
        assert_eq!(drain(&conn), ["gap:0>10", "p:8", "p:9", "p:10"]);
    }

    #[tokio::test]
    async fn a_replay_and_live_events_meet_without_duplicates_or_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, store) = store_with(dir.path(), 100);
        let events = emit_n(&*store, "p", 6).await;
        // Registered (collecting live events) before its replay reads the journal.
        let conn = hub.register(
            &Session::detached(),
            Kind::Mobile,
            Some("p".into()),
            Principal::local(),
        );
        for e in &events[3..] {
            conn.offer(&Item::Event(Outgoing::new(Arc::new(e.clone()))));
        }
        assert!(drain(&conn).is_empty(), "nothing live before the replay");
        replay_gap(&hub.domain, &*store, &conn, "p", 2).await;
        conn.go_live();
        assert_eq!(drain(&conn), ["p:3", "p:4", "p:5", "p:6"]);
        let more = emit_n(&*store, "p", 1).await;
        conn.offer(&Item::Event(Outgoing::new(Arc::new(more[6].clone()))));
        assert_eq!(drain(&conn), ["p:7"]);
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

/// Properties of the Socket.IO packet parser: every packet socket.io-client's encoder can
/// write parses back to its parts; binary packets (with attachments), which the hub refuses,
/// parse as what they are; and no text makes it panic.
#[cfg(test)]
mod packet_props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn text(chars: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        vec(any::<char>(), chars).prop_map(|c| c.into_iter().collect())
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            text(0..12).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                vec((text(0..6), inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// What the encoder puts after the namespace: an array (events, acks) or an object
    /// (connect), never a bare scalar.
    fn payload() -> impl Strategy<Value = Option<Value>> {
        proptest::option::of(prop_oneof![
            vec(json(), 0..4).prop_map(Value::Array),
            vec((text(0..6), json()), 0..3)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ])
    }

    /// `/` or `/<name>` (a name has no comma: the comma ends it).
    fn namespace() -> impl Strategy<Value = String> {
        let name = vec(
            prop::sample::select(vec!['a', 'z', '-', '_', ':', '/', 'é', '0']),
            0..8,
        );
        prop_oneof![
            Just("/".to_owned()),
            name.prop_map(|c| format!("/{}", c.into_iter().collect::<String>())),
        ]
    }

    /// socket.io-parser's encoding: `<type>[<n>-][<ns>,][<id>][<json>]`.
    fn encode(
        kind: u8,
        attachments: Option<u8>,
        ns: &str,
        id: Option<u64>,
        data: &Option<Value>,
    ) -> String {
        let mut out = kind.to_string();
        if let Some(n) = attachments {
            out.push_str(&format!("{n}-"));
        }
        if ns != "/" {
            out.push_str(ns);
            out.push(',');
        }
        if let Some(id) = id {
            out.push_str(&id.to_string());
        }
        if let Some(data) = data {
            out.push_str(&data.to_string());
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn parses_what_the_client_encodes(
            kind in 0u8..=4,
            ns in namespace(),
            id in proptest::option::of(any::<u64>()),
            data in payload(),
        ) {
            let packet = encode(kind, None, &ns, id, &data);
            let parsed = Packet::parse(&packet).expect("a packet");
            prop_assert_eq!(parsed.kind, b'0' + kind);
            prop_assert_eq!(parsed.ns, ns.as_str());
            prop_assert_eq!(parsed.id, id);
            let want = data.map(|d| d.to_string()).unwrap_or_default();
            prop_assert_eq!(parsed.data, want.as_str());
        }

        /// Binary events and acks parse as types 5 and 6, which the hub refuses (closing the
        /// connection): Maestro's payloads are JSON.
        #[test]
        fn binary_packets_parse_as_binary(
            kind in 5u8..=6,
            attachments in 0u8..=20,
            ns in namespace(),
            id in proptest::option::of(any::<u64>()),
            data in payload(),
        ) {
            let packet = encode(kind, Some(attachments), &ns, id, &data);
            let parsed = Packet::parse(&packet).expect("a packet");
            prop_assert_eq!(parsed.kind, b'0' + kind);
        }

        #[test]
        fn any_text_parses_or_is_refused(
            prefix in text(0..4),
            kind in 0u8..=9,
            ns in namespace(),
            id in proptest::option::of(any::<u64>()),
            data in payload(),
            noise in text(0..24),
        ) {
            for t in [
                format!("{prefix}{}", encode(kind, None, &ns, id, &data)),
                noise.clone(),
                format!("{kind}{noise}"),
                format!("{kind}/{noise}"),
            ] {
                if let Some(p) = Packet::parse(&t) {
                    prop_assert!(p.kind.is_ascii_digit());
                    prop_assert!(p.ns == "/" || t[1..].starts_with(p.ns));
                    prop_assert!(t.ends_with(p.data));
                }
            }
        }
    }
}
