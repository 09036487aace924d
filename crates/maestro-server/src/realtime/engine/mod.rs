//! Engine.IO v4, the transport under Socket.IO: sessions over HTTP long-polling and WebSocket,
//! the upgrade from one to the other, and the heartbeat.
//!
//! The part that matters for speed is [`Session::send`]. A packet is framed once (a
//! server's WebSocket frames are not masked, so one event's bytes are the same for every
//! socket) and written straight to the socket ([`socket::Socket`]) by whoever sends it — the
//! fan-out, an ack, the heartbeat — with one non-blocking `send`, without waking a task per
//! socket. Only when the kernel's buffer is full does the rest go into the session's queue,
//! drained by a short-lived flusher task that waits for the socket to become writable. An idle
//! WebSocket session costs its reader task (a small read buffer and the decoder) and this
//! struct.
//!
//! Protocol (what `socket.io-client` 3.x/4.x speaks):
//! - handshake: `GET /socket.io/?EIO=4&transport=polling` answers `0{"sid",…}`; or a WebSocket
//!   to `?EIO=4&transport=websocket` gets the same open packet as its first message.
//! - polling: `GET …&sid=` waits for packets (joined by `\x1e`); `POST …&sid=` carries the
//!   client's packets and is answered `ok`.
//! - upgrade: a WebSocket with `sid=` sends `2probe` (answered `3probe`), the client pauses
//!   polling (a waiting `GET` is answered with a noop `6`), then sends `5`; from then on
//!   everything, including what was still queued for polling, goes over the WebSocket.
//! - heartbeat: the server sends `2` every `ping_interval`; a session that does not answer `3`
//!   within `ping_timeout` is closed.
//! - binary messages (a binary frame, or `b<base64>` over polling) go to
//!   [`Handler::on_binary`], which by default refuses them: Maestro's payloads are JSON.
//!
//! The parts, by what makes them change:
//! - this file: the sessions table, admission, the handshake and the routing of requests and
//!   packets;
//! - [`session`]: one session's state and its writer (the direct write, the queue and the
//!   flusher), and closing;
//! - [`polling`]: long-polling `GET`s and `POST`s;
//! - [`websocket`]: the WebSocket handshake, the upgrade probe and the reader;
//! - [`heartbeat`]: pings, timeouts and shutdown.
//!
//! `tests/conformance/engine.io-protocol` (run by `cargo xtask test` against
//! `examples/conformance.rs`) is the protocol's official test suite.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::socketio::Conn;
use super::ws::{self, Incoming};
use crate::auth::per_address::{Hold, PerAddress};
use crate::auth::{Principal, trust};
use maestro_protocol::CallerKind;

mod heartbeat;
mod polling;
mod session;
mod socket;
#[cfg(test)]
mod tests;
mod websocket;

pub use session::MAX_QUEUED;
use socket::Socket;

/// Request headers kept for the session's life: what decides whether the client is trusted.
const KEPT_HEADERS: [&str; 7] = [
    "origin",
    // With the origin: a page's origin is allowed when it is the server's own (its `Host`).
    "host",
    "authorization",
    "cf-access-jwt-assertion",
    "cf-connecting-ip",
    "x-forwarded-for",
    "x-real-ip",
];

#[derive(Debug, Clone)]

pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest message (WebSocket) or request body (polling) the client may send.
    pub max_payload: usize,
    /// Most sessions open at once; a handshake beyond it gets 503.
    pub max_sessions: usize,
    /// Most sessions one client address other than this machine may hold; a handshake
    /// beyond it gets 429. Sessions without a credential also leave the last eighth of
    /// `max_sessions` to those with one (see [`Engine::admit_new`]).
    pub max_sessions_per_address: usize,
    /// A session that has not been [joined](Session::mark_joined) this long after it opened
    /// is closed (Socket.IO's `connectTimeout`: a client that never connects a namespace).
    /// `None`: no deadline.
    pub connect_timeout: Option<Duration>,
}

/// One Engine.IO packet, ready for either transport: the bytes of its WebSocket text frame,
/// whose tail (after the header) is the packet as polling sends it.
#[derive(Clone)]
pub struct Frame {
    bytes: Bytes,
    header: usize,
    /// A binary message's polling form (`b` and its base64), which is not the frame's tail.
    polling: Option<Bytes>,
}

impl Frame {
    pub fn text(packet: &str) -> Self {
        Self {
            bytes: ws::frame(ws::OP_TEXT, packet.as_bytes()),
            header: ws::header_len(packet.len()),
            polling: None,
        }
    }

    /// A binary message: a binary frame on a WebSocket, `b<base64>` over polling. Maestro's
    /// own namespaces send none (every payload is JSON); the protocol has them.
    pub fn binary(data: &[u8]) -> Self {
        Self {
            bytes: ws::frame(ws::OP_BINARY, data),
            header: ws::header_len(data.len()),
            polling: Some(Bytes::from(format!("b{}", BASE64.encode(data)))),
        }
    }

    /// The packet as a polling response carries it.
    fn polling_form(&self) -> Bytes {
        match &self.polling {
            Some(p) => p.clone(),
            None => self.bytes.slice(self.header..),
        }
    }

    #[cfg(test)]
    fn payload(&self) -> Bytes {
        self.bytes.slice(self.header..)
    }
}

/// What sits above the transport (Socket.IO).
pub trait Handler: Send + Sync + 'static {
    /// A message packet (`4…`) from the client; `text` is what follows the `4`. Messages of
    /// one session are handled one at a time, in order.
    fn on_message<'a>(
        &'a self,
        session: &'a Arc<Session>,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

    /// The session has ended (called once).
    fn on_close(&self, session: &Arc<Session>);

    /// A session has opened (before its open packet is sent). Nothing by default.
    fn on_open(&self, session: &Arc<Session>) {
        let _ = session;
    }

    /// A binary message (a WebSocket binary frame, or a polling `b<base64>` packet). By
    /// default binary messages are refused: the session closes (WebSocket close code 1003),
    /// which is what Maestro's namespaces want (every payload they take is JSON).
    fn on_binary<'a>(
        &'a self,
        session: &'a Arc<Session>,
        data: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = data;
        tracing::debug!(session = %session.id, "binary messages are not supported; closing");
        session.close_with(ws::CLOSE_UNSUPPORTED);
        Box::pin(std::future::ready(()))
    }
}

/// The sessions, the request handler for `/socket.io/` and the heartbeat.
pub struct Engine {
    config: EngineConfig,
    handler: Arc<dyn Handler>,
    sessions: Mutex<HashMap<Box<str>, Arc<Session>>>,
    /// Polling sessions the client closed (`1`) while no `GET` was waiting, with when they
    /// closed. The client's last `GET` may still be on its way (it sends it alongside the
    /// `POST` that closes): that `GET` gets the noop it would have had, not "Session ID
    /// unknown". Kept for `ping_interval + ping_timeout` at most.
    closed_by_client: Mutex<HashMap<Box<str>, u64>>,
    epoch: Instant,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Sessions held per client address ([`EngineConfig::max_sessions_per_address`]).
    per_address: PerAddress,
}

/// One client's connection, whichever transport carries it.
pub struct Session {
    id: Box<str>,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    out: Mutex<Out>,
    /// Woken when a polling `GET` may have something to answer.
    wake_poll: Notify,
    closed: CancellationToken,
    finished: AtomicBool,
    /// When the outstanding ping was sent (ms since the engine's epoch); 0: none.
    ping_sent: AtomicU64,
    next_ping: AtomicU64,
    /// Serializes the handling of incoming messages (polling `POST`s may overlap).
    inbox: tokio::sync::Mutex<()>,
    /// The Socket.IO namespaces connected over this session.
    pub(super) sockets: Mutex<Vec<Arc<Conn>>>,
    /// Who the auth gate admitted the opening request as, if it carried a credential (or was
    /// local); set once, when the session opens.
    principal: std::sync::OnceLock<Principal>,
    /// When the session opened (ms since the engine's epoch).
    opened: u64,
    /// The handler took the session on (see [`EngineConfig::connect_timeout`]).
    joined: AtomicBool,
    /// The session's share of its client address's sessions; given back when it finishes.
    hold: Mutex<Option<Hold>>,
    /// Where flushers run, so that shutdown waits for them.
    tasks: TaskTracker,
}

struct Out {
    transport: Transport,
    /// WebSocket: frames (the first possibly partly written) that the kernel did not take
    /// yet. Polling: packets not yet fetched.
    queue: VecDeque<Bytes>,
    /// WebSocket: a flusher task owns writing until the queue is empty.
    flushing: bool,
    /// Polling: a `GET` is waiting.
    polling: bool,
    /// Polling: a WebSocket probe was answered; waiting `GET`s get a noop.
    upgrading: bool,
    /// Polling: a WebSocket asked to take the session over; another one is refused.
    probing: bool,
    /// The client closed the session (`1`): a waiting `GET` ends with a noop, not a close.
    client_closed: bool,
    /// A `GET` was answered with that noop.
    close_answered: bool,
}

enum Transport {
    Polling,
    WebSocket(Arc<Socket>),
    Closed,
}

/// Engine.IO's error answers: `400 {"code", "message"}`.
fn refuse(status: StatusCode, code: u8, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "code": code, "message": message }).to_string(),
        ))
        .expect("a valid response")
}

fn text(body: impl Into<Body>, content_type: &'static str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.into())
        .expect("a valid response")
}

struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

fn query(q: Option<&str>) -> Query<'_> {
    let mut out = Query {
        eio: None,
        transport: None,
        sid: None,
    };
    for pair in q.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EIO" => out.eio = Some(v),
            "transport" => out.transport = Some(v),
            "sid" => out.sid = Some(v),
            _ => {}
        }
    }
    out
}

/// A random id (Engine.IO session, Socket.IO socket): 20 URL-safe characters, 120 bits.
pub fn new_sid() -> Box<str> {
    let mut bytes = [0u8; 15];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: still unique, if guessable.
        for b in &mut bytes {
            *b = fastrand::u8(..);
        }
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = String::with_capacity(20);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            id.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    id.into_boxed_str()
}

fn kept_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in KEPT_HEADERS {
        for value in headers.get_all(name) {
            // An owned copy: a borrowed value would keep the connection's read buffer alive.
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                kept.append(HeaderName::from_static(name), v);
            }
        }
    }
    kept
}

impl Engine {
    pub fn new(
        config: EngineConfig,
        handler: Arc<dyn Handler>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            per_address: PerAddress::new(config.max_sessions_per_address),
            config,
            handler,
            sessions: Mutex::new(HashMap::new()),
            closed_by_client: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            tasks,
            shutdown,
        })
    }

    fn now(&self) -> u64 {
        // Never 0: 0 means "no ping outstanding".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn interval_ms(&self) -> u64 {
        self.config.ping_interval.as_millis() as u64
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.lock().expect("engine lock").len()
    }

    /// The open sessions, as of now.
    fn snapshot(&self) -> Vec<Arc<Session>> {
        let sessions = self.sessions.lock().expect("engine lock");
        sessions.values().cloned().collect()
    }

    /// The open session `sid`. A session whose ping is overdue is closed here, not at the
    /// heartbeat's next look: a client that comes back after `ping_timeout` finds it gone, as
    /// the protocol says.
    fn lookup(&self, sid: &str) -> Option<Arc<Session>> {
        let session = self
            .sessions
            .lock()
            .expect("engine lock")
            .get(sid)
            .cloned()?;
        if self.ping_overdue(&session, self.now()) {
            tracing::debug!(session = %session.id, "no pong within the ping timeout; closing");
            self.finish(&session);
            return None;
        }
        Some(session)
    }

    /// Whether a new session may open for this client; `Ok` carries the share of its address
    /// it then holds. A client on this machine (admitted as local) is bounded by the total
    /// only. Any other is bounded by its address's share too, and one without a credential
    /// also leaves the last eighth of the total to clients with one, so strangers cannot
    /// take every session from the owner's phone.
    fn admit_new(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        principal: Option<&Principal>,
    ) -> Result<Option<Hold>, (StatusCode, &'static str)> {
        let open = self.sessions.lock().expect("engine lock").len();
        let max = self.config.max_sessions;
        if open >= max {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "Too many sessions"));
        }
        if principal.is_some_and(|p| p.kind == CallerKind::Local) {
            return Ok(None);
        }
        if principal.is_none() && open + max / 8 >= max {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "Too many sessions"));
        }
        let Some(addr) = trust::client_address(peer, headers) else {
            return Ok(None);
        };
        match self.per_address.try_hold(addr) {
            Some(hold) => Ok(Some(hold)),
            None => Err((
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sessions from this address",
            )),
        }
    }

    fn open_session(
        &self,
        peer: Option<SocketAddr>,
        principal: Option<Principal>,
        hold: Option<Hold>,
        headers: HeaderMap,
        transport: Transport,
    ) -> Arc<Session> {
        // The first ping comes after half to all of the interval, at random: clients that
        // connected together (a fleet starting, phones back from a tunnel) are not all pinged,
        // and do not all answer, in the same instant ever after. It is due a tick before the
        // interval ends, so it leaves within the interval: the client waits no longer than
        // `ping_interval + ping_timeout` for it.
        let half = self.interval_ms() / 2;
        let tick = self.tick().as_millis() as u64;
        let first_ping = self.now() + half + fastrand::u64(0..=half.saturating_sub(tick));
        let session = Session::new(
            peer,
            headers,
            transport,
            first_ping,
            self.now(),
            self.tasks.clone(),
        );
        if let Some(p) = principal {
            let _ = session.principal.set(p);
        }
        *session.hold.lock().expect("session lock") = hold;
        self.sessions
            .lock()
            .expect("engine lock")
            .insert(session.id.clone(), session.clone());
        self.handler.on_open(&session);
        session
    }

    fn open_packet(&self, sid: &str, upgrades: &[&str]) -> String {
        let open = json!({
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": self.config.ping_interval.as_millis() as u64,
            "pingTimeout": self.config.ping_timeout.as_millis() as u64,
            "maxPayload": self.config.max_payload,
        });
        format!("0{open}")
    }

    /// If the client closed `session` while no `GET` of its was waiting, remembers that the
    /// `GET` it may have sent alongside is owed a noop.
    fn remember_client_close(&self, session: &Session) {
        let out = session.out.lock().expect("session lock");
        if out.client_closed && !out.polling && !out.close_answered {
            drop(out);
            self.closed_by_client
                .lock()
                .expect("engine lock")
                .insert(session.id.clone(), self.now());
        }
    }

    /// Whether `sid` was closed by its client and its last `GET` is still owed a noop (once).
    fn take_closed_by_client(&self, sid: &str) -> bool {
        self.closed_by_client
            .lock()
            .expect("engine lock")
            .remove(sid)
            .is_some()
    }

    /// Removes a closed session and tells the handler (once).
    fn finish(&self, session: &Arc<Session>) {
        session.close();
        if session.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        self.sessions
            .lock()
            .expect("engine lock")
            .remove(&session.id);
        session.hold.lock().expect("session lock").take();
        self.handler.on_close(session);
    }

    /// Answers a request under `/socket.io/`.
    pub async fn serve(
        self: Arc<Self>,
        req: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Response<Body> {
        let q = query(req.uri().query());
        if q.eio != Some("4") {
            return refuse(StatusCode::BAD_REQUEST, 5, "Unsupported protocol version");
        }
        let sid = q.sid.map(str::to_owned);
        match (q.transport, req.method()) {
            (Some("polling"), &Method::GET) => match sid {
                None => {
                    let principal = req.extensions().get::<Principal>().cloned();
                    let hold = match self.admit_new(peer, req.headers(), principal.as_ref()) {
                        Ok(hold) => hold,
                        Err((status, why)) => return refuse(status, 3, why),
                    };
                    let session = self.open_session(
                        peer,
                        principal,
                        hold,
                        kept_headers(req.headers()),
                        Transport::Polling,
                    );
                    let open = self.open_packet(&session.id, &["websocket"]);
                    tracing::debug!(session = %session.id, "engine.io session opened (polling)");
                    text(open, "text/plain; charset=UTF-8")
                }
                Some(sid) => match self.lookup(&sid) {
                    Some(session) => self.poll(session).await,
                    None if self.take_closed_by_client(&sid) => {
                        text("6", "text/plain; charset=UTF-8")
                    }
                    None => refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
                },
            },
            (Some("polling"), &Method::POST) => match sid.map(|s| self.lookup(&s)) {
                Some(Some(session)) => self.post(session, req.into_body()).await,
                Some(None) => refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
                // A handshake is a GET.
                None => refuse(StatusCode::BAD_REQUEST, 2, "Bad handshake method"),
            },
            (Some("polling"), _) => refuse(StatusCode::BAD_REQUEST, 2, "Bad handshake method"),
            (Some("websocket"), &Method::GET) => self.upgrade(req, peer, sid),
            (Some("websocket"), _) => refuse(StatusCode::BAD_REQUEST, 2, "Bad handshake method"),
            _ => refuse(StatusCode::BAD_REQUEST, 0, "Transport unknown"),
        }
    }

    /// One Engine.IO packet from the client, over either transport; `false` (and the session
    /// closed) if it is not a packet at all.
    async fn on_packet(&self, session: &Arc<Session>, packet: &str) -> bool {
        match packet.as_bytes().first() {
            Some(b'4') => self.handler.on_message(session, &packet[1..]).await,
            Some(b'3') => session.pong(self.now(), self.interval_ms()),
            Some(b'2') => {
                session.send(&Frame::text(&format!("3{}", &packet[1..])));
            }
            Some(b'1') => session.close_by_client(),
            Some(b'6') | Some(b'5') => {}
            Some(b'b') => match BASE64.decode(&packet[1..]) {
                Ok(data) => self.handler.on_binary(session, data.into()).await,
                Err(_) => {
                    tracing::debug!(session = %session.id, "binary packet is not base64; closing");
                    session.close();
                    return false;
                }
            },
            _ => {
                tracing::debug!(session = %session.id, "unknown engine.io packet; closing");
                session.close();
                return false;
            }
        }
        true
    }
}
