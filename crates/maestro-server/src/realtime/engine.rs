//! Engine.IO v4, the transport under Socket.IO: sessions over HTTP long-polling and WebSocket,
//! the upgrade from one to the other, and the heartbeat.
//!
//! The part that matters for speed is [`Session::send`]. A packet is framed once (a
//! server's WebSocket frames are not masked, so one event's bytes are the same for every
//! socket) and written straight to the socket's `TcpStream` by whoever sends it — the
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

/// Frames (WebSocket) or packets (polling) a session may have waiting before the client
/// counts as gone: it is disconnected and recovers with `lastSeq` when it reconnects.
pub const MAX_QUEUED: usize = 16_384;
/// How long a WebSocket may accept nothing while frames wait, before the session is closed.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How often the heartbeat looks at the sessions, at most: a short `ping_interval` or
/// `ping_timeout` makes it look more often (see [`Engine::tick`]).
const TICK: Duration = Duration::from_millis(250);
/// Polling packets are separated by this byte.
const SEPARATOR: u8 = 0x1e;
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
    WebSocket(Arc<TcpStream>),
    Closed,
}

/// One write attempt that never waits: `Ok(None)` means the socket has no room now.
fn try_write(stream: &TcpStream, bytes: &[u8]) -> io::Result<Option<usize>> {
    match stream.try_write(bytes) {
        Ok(0) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

impl Session {
    fn new(
        peer: Option<SocketAddr>,
        headers: HeaderMap,
        transport: Transport,
        first_ping: u64,
        opened: u64,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Session {
            id: new_sid(),
            peer,
            headers,
            out: Mutex::new(Out {
                transport,
                queue: VecDeque::new(),
                flushing: false,
                polling: false,
                upgrading: false,
                probing: false,
                client_closed: false,
                close_answered: false,
            }),
            wake_poll: Notify::new(),
            // Not a child of the shutdown token: shutdown closes sessions itself, after the
            // goodbyes (`Engine::close_all`).
            closed: CancellationToken::new(),
            finished: AtomicBool::new(false),
            ping_sent: AtomicU64::new(0),
            next_ping: AtomicU64::new(first_ping),
            inbox: tokio::sync::Mutex::new(()),
            sockets: Mutex::new(Vec::new()),
            principal: std::sync::OnceLock::new(),
            opened,
            joined: AtomicBool::new(false),
            hold: Mutex::new(None),
            tasks,
        })
    }

    /// The handler has taken this session on (a Socket.IO namespace connected): the
    /// [connect timeout](EngineConfig::connect_timeout) no longer applies.
    pub fn mark_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// The Engine.IO session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The peer's address, as the TCP connection of the handshake saw it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The handshake request's headers that decide trust (Origin and the credential headers).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.get()
    }

    /// Whether this session acts for the credential `id`.
    pub fn is_credential(&self, id: &str) -> bool {
        self.principal()
            .is_some_and(|p| p.id.as_deref() == Some(id))
            || self
                .sockets
                .lock()
                .expect("sockets lock")
                .iter()
                .any(|c| c.principal.id.as_deref() == Some(id))
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Sends one packet; `false` if the session is closed (or closes now because the client
    /// stopped taking packets).
    pub fn send(self: &Arc<Self>, frame: &Frame) -> bool {
        self.send_bytes(frame.bytes.clone(), frame.polling_form())
    }

    /// Sends several packets, in order, as one write on a WebSocket (a replay of a thousand
    /// events is one system call, not a thousand).
    pub fn send_many(self: &Arc<Self>, frames: &[Frame]) -> bool {
        let websocket = matches!(
            self.out.lock().expect("session lock").transport,
            Transport::WebSocket(_)
        );
        if !websocket {
            return frames.iter().all(|f| self.send(f));
        }
        let mut all = BytesMut::with_capacity(frames.iter().map(|f| f.bytes.len()).sum());
        for f in frames {
            all.extend_from_slice(&f.bytes);
        }
        // Only the whole is written from here on: a session that changed transport meanwhile
        // can only have closed (a WebSocket is never downgraded).
        let all = all.freeze();
        self.send_bytes(all.clone(), all)
    }

    /// Sends `bytes` on a WebSocket, or queues `polling` for a polling `GET`.
    fn send_bytes(self: &Arc<Self>, bytes: Bytes, polling: Bytes) -> bool {
        let mut out = self.out.lock().expect("session lock");
        let is_polling = matches!(out.transport, Transport::Polling);
        // A WebSocket with nothing waiting is written to right here.
        let idle_socket = match &out.transport {
            Transport::Closed => return false,
            Transport::Polling => None,
            Transport::WebSocket(stream) => {
                (out.queue.is_empty() && !out.flushing).then_some(stream)
            }
        };
        let mut flusher = None;
        let rest = match idle_socket.map(|stream| (stream, try_write(stream, &bytes))) {
            None if is_polling => polling,
            None => bytes,
            Some((_, Ok(Some(n)))) if n == bytes.len() => return true,
            // The kernel took part or none of it: the rest waits for a flusher.
            Some((stream, Ok(written))) => {
                flusher = Some(stream.clone());
                bytes.slice(written.unwrap_or(0)..)
            }
            Some((_, Err(e))) => {
                drop(out);
                tracing::debug!(session = %self.id, error = %e, "websocket write failed");
                self.close();
                return false;
            }
        };
        out.queue.push_back(rest);
        out.flushing |= flusher.is_some();
        if out.queue.len() > MAX_QUEUED {
            drop(out);
            self.overflow();
            return false;
        }
        drop(out);
        if is_polling {
            self.wake_poll.notify_one();
        }
        if let Some(stream) = flusher {
            self.tasks.spawn(self.clone().flush(stream));
        }
        true
    }

    fn overflow(&self) {
        tracing::warn!(session = %self.id, "client stopped taking packets; disconnecting (it recovers with lastSeq)");
        self.close();
    }

    /// Writes the queue as the socket takes it; ends when the queue is empty. A socket that
    /// takes nothing for [`STALL_LIMIT`] is closed.
    async fn flush(self: Arc<Self>, stream: Arc<TcpStream>) {
        loop {
            {
                let mut guard = self.out.lock().expect("session lock");
                let out = &mut *guard;
                if !matches!(out.transport, Transport::WebSocket(_)) {
                    return;
                }
                loop {
                    if out.queue.is_empty() {
                        out.flushing = false;
                        return;
                    }
                    let slices: Vec<IoSlice<'_>> =
                        out.queue.iter().take(64).map(|b| IoSlice::new(b)).collect();
                    match stream.try_write_vectored(&slices) {
                        Ok(0) => {
                            drop(guard);
                            self.close();
                            return;
                        }
                        Ok(mut n) => {
                            while n > 0 {
                                let front = out.queue.front_mut().expect("written from it");
                                if n >= front.len() {
                                    n -= front.len();
                                    out.queue.pop_front();
                                } else {
                                    *front = front.slice(n..);
                                    n = 0;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            drop(guard);
                            tracing::debug!(session = %self.id, error = %e, "websocket write failed");
                            self.close();
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.closed.cancelled() => return,
                ready = tokio::time::timeout(STALL_LIMIT, stream.writable()) => match ready {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        self.close();
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(session = %self.id, "client accepted nothing for {STALL_LIMIT:?}; disconnecting");
                        self.close();
                        return;
                    }
                },
            }
        }
    }

    /// Closes the session: a WebSocket gets a close frame (if nothing is still queued in
    /// front of it); a waiting polling `GET` gets what is queued and the close packet.
    pub fn close(&self) {
        self.close_with(ws::CLOSE_NORMAL);
    }

    fn close_with(&self, code: u16) {
        let mut out = self.out.lock().expect("session lock");
        let previous = std::mem::replace(&mut out.transport, Transport::Closed);
        if let Transport::WebSocket(stream) = previous {
            if out.queue.is_empty() && !out.flushing {
                let _ = try_write(&stream, &ws::close_frame(code));
            }
            out.queue.clear();
        }
        drop(out);
        self.closed.cancel();
        self.wake_poll.notify_one();
    }

    fn pong(&self, now: u64, interval: u64) {
        self.ping_sent.store(0, Ordering::Relaxed);
        self.next_ping.store(now + interval, Ordering::Relaxed);
    }

    /// A WebSocket probe was answered: waiting polls end with a noop so the client can pause.
    fn begin_upgrade(&self) -> bool {
        let mut out = self.out.lock().expect("session lock");
        if !matches!(out.transport, Transport::Polling) {
            return false;
        }
        out.upgrading = true;
        drop(out);
        self.wake_poll.notify_one();
        true
    }

    fn abort_upgrade(&self) {
        let mut out = self.out.lock().expect("session lock");
        out.upgrading = false;
        out.probing = false;
    }

    /// The client sent `1`. A waiting polling `GET` ends with a noop: the client knows, and the
    /// reference server answers so.
    fn close_by_client(&self) {
        self.out.lock().expect("session lock").client_closed = true;
        self.close();
    }

    /// The client sent `5`: the WebSocket carries the session from now on, starting with
    /// whatever was still queued for polling.
    fn switch_to_websocket(self: &Arc<Self>, stream: Arc<TcpStream>) -> bool {
        let mut out = self.out.lock().expect("session lock");
        if !matches!(out.transport, Transport::Polling) {
            return false;
        }
        let pending: Vec<Bytes> = out
            .queue
            .drain(..)
            .map(|packet| match packet.strip_prefix(b"b") {
                // Only `Frame::binary` queues a packet starting with `b`: valid base64.
                Some(b64) => ws::frame(ws::OP_BINARY, &BASE64.decode(b64).unwrap_or_default()),
                None => ws::frame(ws::OP_TEXT, &packet),
            })
            .collect();
        out.transport = Transport::WebSocket(stream.clone());
        out.upgrading = false;
        let start_flusher = !pending.is_empty();
        out.queue.extend(pending);
        if start_flusher {
            out.flushing = true;
        }
        drop(out);
        if start_flusher {
            self.tasks.spawn(self.clone().flush(stream));
        }
        self.wake_poll.notify_one();
        true
    }

    /// Takes everything queued for a polling `GET`, as its body.
    fn drain_polling(out: &mut Out, closing: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for packet in out.queue.drain(..) {
            if !body.is_empty() {
                body.push(SEPARATOR);
            }
            body.extend_from_slice(&packet);
        }
        if closing {
            if !body.is_empty() {
                body.push(SEPARATOR);
            }
            body.push(b'1');
        }
        body
    }
}

/// Resets a session's "a `GET` is waiting" mark when the request ends, even when the client
/// goes away mid-wait.
struct PollGuard<'a>(&'a Session);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.out.lock().expect("session lock").polling = false;
    }
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

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
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

    /// How often the heartbeat looks at the sessions: [`TICK`], or an eighth of a shorter
    /// `ping_interval` or `ping_timeout`, so that pings leave, and silent clients are dropped,
    /// within an eighth of either of when they are due.
    fn tick(&self) -> Duration {
        TICK.min(self.config.ping_interval / 8)
            .min(self.config.ping_timeout / 8)
            .max(Duration::from_millis(1))
    }

    /// Whether `session` let its ping go unanswered for longer than `ping_timeout`.
    fn ping_overdue(&self, session: &Session, now: u64) -> bool {
        let sent = session.ping_sent.load(Ordering::Relaxed);
        sent != 0 && now.saturating_sub(sent) > self.config.ping_timeout.as_millis() as u64
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

    /// A polling `GET`: answers at once with what is queued, else waits for packets.
    async fn poll(&self, session: Arc<Session>) -> Response<Body> {
        {
            let mut out = session.out.lock().expect("session lock");
            if out.polling {
                drop(out);
                tracing::debug!(session = %session.id, "overlapping polls; closing");
                self.finish(&session);
                return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
            }
            if matches!(out.transport, Transport::WebSocket(_)) {
                return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
            }
            out.polling = true;
        }
        let _guard = PollGuard(&session);
        let deadline = tokio::time::sleep(self.config.ping_interval + self.config.ping_timeout);
        tokio::pin!(deadline);
        loop {
            let notified = session.wake_poll.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut out = session.out.lock().expect("session lock");
                match out.transport {
                    Transport::Closed if out.client_closed => {
                        out.close_answered = true;
                        drop(out);
                        self.finish(&session);
                        return text("6", "text/plain; charset=UTF-8");
                    }
                    Transport::Closed => {
                        let body = Session::drain_polling(&mut out, true);
                        drop(out);
                        self.finish(&session);
                        return text(body, "text/plain; charset=UTF-8");
                    }
                    // Upgraded while this request waited.
                    Transport::WebSocket(_) => return text("6", "text/plain; charset=UTF-8"),
                    Transport::Polling => {}
                }
                if !out.queue.is_empty() {
                    let body = Session::drain_polling(&mut out, false);
                    return text(body, "text/plain; charset=UTF-8");
                }
                if out.upgrading {
                    return text("6", "text/plain; charset=UTF-8");
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = &mut deadline => return text("6", "text/plain; charset=UTF-8"),
            }
        }
    }

    /// A polling `POST`: the client's packets, handled in order.
    async fn post(&self, session: Arc<Session>, body: Body) -> Response<Body> {
        let bytes = match axum::body::to_bytes(body, self.config.max_payload).await {
            Ok(b) => b,
            Err(_) => {
                tracing::debug!(session = %session.id, "polling payload too large; closing");
                self.finish(&session);
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, 3, "Payload too large");
            }
        };
        let Ok(body) = std::str::from_utf8(&bytes) else {
            self.finish(&session);
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        };
        if session.is_closed() {
            return refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown");
        }
        let _inbox = session.inbox.lock().await;
        let mut valid = true;
        for packet in body.split(SEPARATOR as char) {
            if session.is_closed() {
                break;
            }
            valid = self.on_packet(&session, packet).await;
            if !valid {
                break;
            }
        }
        if session.is_closed() {
            self.remember_client_close(&session);
            self.finish(&session);
        }
        if !valid {
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        }
        text("ok", "text/html")
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

    /// A WebSocket handshake: a new session (no `sid`) or the upgrade of a polling one.
    fn upgrade(
        self: Arc<Self>,
        mut req: Request<Body>,
        peer: Option<SocketAddr>,
        sid: Option<String>,
    ) -> Response<Body> {
        let headers = req.headers();
        let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let valid = header_has(headers, header::CONNECTION, "upgrade")
            && header_has(headers, header::UPGRADE, "websocket")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        let Some(key) = key.filter(|_| valid) else {
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        };
        // Answer 101 only for a connection this server can take over: one hyper can hand back
        // (an HTTP/1 connection of ours), and room for a new session.
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_none()
        {
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        }
        let principal = req.extensions().get::<Principal>().cloned();
        let hold = match sid {
            None => match self.admit_new(peer, req.headers(), principal.as_ref()) {
                Ok(hold) => hold,
                Err((status, why)) => return refuse(status, 3, why),
            },
            Some(_) => None,
        };
        // A WebSocket for a session that already has one, or is being taken over by one, is
        // accepted and closed at once (the client sees a close, as from the reference server).
        let mut taken = false;
        let existing = match sid {
            None => None,
            Some(sid) => match self.lookup(&sid) {
                Some(s) => {
                    let mut out = s.out.lock().expect("session lock");
                    if matches!(out.transport, Transport::Polling) && !out.probing {
                        out.probing = true;
                        drop(out);
                        Some(s)
                    } else {
                        taken = true;
                        None
                    }
                }
                None => return refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
            },
        };
        let kept = kept_headers(req.headers());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let engine = self.clone();
        self.tasks.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    if let Some(session) = &existing {
                        session.abort_upgrade();
                    }
                    return;
                }
            };
            // `run` serves connections with hyper's HTTP/1 builder over `TokioIo<TcpStream>`, so
            // this is the socket itself (plus any bytes hyper read past the request).
            let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => parts,
                Err(_) => {
                    tracing::error!("websocket upgrade on a connection that is not plain TCP");
                    if let Some(session) = &existing {
                        session.abort_upgrade();
                    }
                    return;
                }
            };
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            let stream = Arc::new(io.into_inner());
            let buf = BytesMut::from(&read_buf[..]);
            // `read_buf` is a slice of hyper's read buffer (several KB): keeping it for the
            // socket's life would keep that buffer alive too.
            drop(read_buf);
            if taken {
                let _ = write_all(&stream, &ws::close_frame(ws::CLOSE_NORMAL)).await;
                return;
            }
            match existing {
                Some(session) => engine.run_upgrade(session, stream, buf).await,
                None => {
                    let session = engine.open_session(
                        peer,
                        principal,
                        hold,
                        kept,
                        Transport::WebSocket(stream.clone()),
                    );
                    tracing::debug!(session = %session.id, "engine.io session opened (websocket)");
                    session.send(&Frame::text(&engine.open_packet(&session.id, &[])));
                    engine.read_websocket(&session, &stream, buf).await;
                    engine.finish(&session);
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, ws::accept_key(key.as_bytes()))
            .body(Body::empty())
            .expect("a valid response")
    }

    /// The probe phase of an upgrade, then (after `5`) the session's reader.
    async fn run_upgrade(&self, session: Arc<Session>, stream: Arc<TcpStream>, mut buf: BytesMut) {
        let mut decoder = ws::Decoder::new(self.config.max_payload);
        let mut need = 0;
        let upgraded = 'probe: loop {
            loop {
                match decoder.next(&mut buf, &mut need) {
                    Ok(Some(Incoming::Text(t))) if t == "2probe" => {
                        if !session.begin_upgrade()
                            || write_all(&stream, &Frame::text("3probe").bytes)
                                .await
                                .is_err()
                        {
                            break 'probe false;
                        }
                    }
                    Ok(Some(Incoming::Text(t))) if t == "5" => {
                        break 'probe session.switch_to_websocket(stream.clone());
                    }
                    Ok(Some(Incoming::Ping(p))) => {
                        if write_all(&stream, &ws::frame(ws::OP_PONG, &p))
                            .await
                            .is_err()
                        {
                            break 'probe false;
                        }
                    }
                    Ok(Some(Incoming::Pong)) => {}
                    Ok(Some(_)) | Err(_) => break 'probe false,
                    Ok(None) => break,
                }
            }
            tokio::select! {
                _ = session.closed.cancelled() => break false,
                r = read_more(&stream, &mut buf, need) => if !r { break false },
            }
        };
        if !upgraded {
            session.abort_upgrade();
            return;
        }
        tracing::debug!(session = %session.id, "engine.io session upgraded to websocket");
        self.read_websocket(&session, &stream, buf).await;
        self.finish(&session);
    }

    /// Reads the session's WebSocket until it closes (either side).
    async fn read_websocket(&self, session: &Arc<Session>, stream: &TcpStream, mut buf: BytesMut) {
        let mut decoder = ws::Decoder::new(self.config.max_payload);
        let mut need = 0;
        loop {
            loop {
                match decoder.next(&mut buf, &mut need) {
                    Ok(Some(Incoming::Text(t))) => {
                        let _inbox = session.inbox.lock().await;
                        self.on_packet(session, &t).await;
                        if session.is_closed() {
                            return;
                        }
                    }
                    Ok(Some(Incoming::Binary(data))) => {
                        let _inbox = session.inbox.lock().await;
                        self.handler.on_binary(session, data.into()).await;
                        if session.is_closed() {
                            return;
                        }
                    }
                    Ok(Some(Incoming::Ping(p))) => {
                        let pong = ws::frame(ws::OP_PONG, &p);
                        session.send_bytes(pong.clone(), pong);
                    }
                    Ok(Some(Incoming::Pong)) => {}
                    Ok(Some(Incoming::Close)) => {
                        session.close();
                        return;
                    }
                    Ok(None) => break,
                    Err(v) => {
                        tracing::debug!(session = %session.id, reason = v.reason, "websocket protocol error; closing");
                        session.close_with(v.code);
                        return;
                    }
                }
            }
            if buf.is_empty() && buf.capacity() > 4096 {
                // A large message came and went; do not keep its buffer for an idle socket.
                buf = BytesMut::new();
            }
            tokio::select! {
                _ = session.closed.cancelled() => return,
                r = read_more(stream, &mut buf, need) => if !r {
                    session.close_with(ws::CLOSE_GOING_AWAY);
                    return;
                },
            }
        }
    }

    /// The heartbeat: pings each session every `ping_interval`, closes those that did not
    /// answer within `ping_timeout`, and removes sessions closed by other means. Runs until
    /// shutdown.
    pub async fn heartbeat(self: Arc<Self>) {
        let ping = Frame::text("2");
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let grace = self.interval_ms() + self.config.ping_timeout.as_millis() as u64;
            let now = self.now();
            self.closed_by_client
                .lock()
                .expect("engine lock")
                .retain(|_, at| now.saturating_sub(*at) <= grace);
            let connect_timeout = self.config.connect_timeout.map(|t| t.as_millis() as u64);
            for session in self.snapshot() {
                if session.is_closed() {
                    self.finish(&session);
                    continue;
                }
                let now = self.now();
                if let Some(limit) = connect_timeout
                    && !session.joined.load(Ordering::Relaxed)
                    && now.saturating_sub(session.opened) > limit
                {
                    tracing::debug!(session = %session.id, "no namespace joined within the connect timeout; closing");
                    self.finish(&session);
                    continue;
                }
                if session.ping_sent.load(Ordering::Relaxed) != 0 {
                    if self.ping_overdue(&session, now) {
                        tracing::debug!(session = %session.id, "no pong within the ping timeout; closing");
                        self.finish(&session);
                    }
                } else if now >= session.next_ping.load(Ordering::Relaxed) {
                    session.ping_sent.store(now, Ordering::Relaxed);
                    session.send(&ping);
                }
            }
        }
    }

    /// Closes every session (shutdown), after `last` has had a chance to queue goodbyes.
    pub fn close_all(&self, last: impl Fn(&Arc<Session>)) {
        for session in self.snapshot() {
            last(&session);
            self.finish(&session);
        }
    }
}

/// Reads what the socket has into `buf` (making room for `need` bytes); `false` when the
/// connection is gone. Cancel-safe: nothing is read unless it returns.
async fn read_more(stream: &TcpStream, buf: &mut BytesMut, need: usize) -> bool {
    let want = need.saturating_sub(buf.len()).max(512);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        match stream.try_read_buf(buf) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return false,
        }
    }
}

/// Writes all of `bytes` (during the upgrade probe, before the session owns the stream).
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
impl Session {
    /// A polling session outside any engine: what is sent collects in its queue.
    pub(super) fn detached() -> Arc<Self> {
        Session::new(
            None,
            HeaderMap::new(),
            Transport::Polling,
            0,
            0,
            TaskTracker::new(),
        )
    }

    /// The packets queued so far, taken.
    pub(super) fn take_queued(&self) -> Vec<String> {
        let mut out = self.out.lock().unwrap();
        out.queue
            .drain(..)
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_sids() {
        let q = query(Some("EIO=4&transport=polling&t=Nx1&sid=abc"));
        assert_eq!(
            (q.eio, q.transport, q.sid),
            (Some("4"), Some("polling"), Some("abc"))
        );
        let q = query(None);
        assert!(q.eio.is_none() && q.sid.is_none());
        let a = new_sid();
        assert_eq!(a.len(), 20);
        assert_ne!(a, new_sid());
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn frames_serve_both_transports() {
        let f = Frame::text("42/ui,[\"x\"]");
        assert_eq!(&f.payload()[..], b"42/ui,[\"x\"]");
        assert_eq!(f.bytes[0], 0x81);
    }

    #[test]
    fn only_trust_headers_are_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, "http://localhost:5173".parse().unwrap());
        h.insert(header::USER_AGENT, "x".parse().unwrap());
        let kept = kept_headers(&h);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[header::ORIGIN], "http://localhost:5173");
    }

    /// Echoes messages, text and binary (what the conformance server does).
    struct Echo;

    impl Handler for Echo {
        fn on_message<'a>(
            &'a self,
            session: &'a Arc<Session>,
            text: &'a str,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
            session.send(&Frame::text(&format!("4{text}")));
            Box::pin(std::future::ready(()))
        }

        fn on_binary<'a>(
            &'a self,
            session: &'a Arc<Session>,
            data: Bytes,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
            session.send(&Frame::binary(&data));
            Box::pin(std::future::ready(()))
        }

        fn on_close(&self, _: &Arc<Session>) {}
    }

    /// Takes only text, like Maestro's namespaces.
    struct TextOnly;

    impl Handler for TextOnly {
        fn on_message<'a>(
            &'a self,
            _: &'a Arc<Session>,
            _: &'a str,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
            Box::pin(std::future::ready(()))
        }

        fn on_close(&self, _: &Arc<Session>) {}
    }

    fn engine(handler: Arc<dyn Handler>, interval_ms: u64, timeout_ms: u64) -> Arc<Engine> {
        let config = EngineConfig {
            ping_interval: Duration::from_millis(interval_ms),
            ping_timeout: Duration::from_millis(timeout_ms),
            max_payload: 1_000_000,
            max_sessions: 1_000,
            max_sessions_per_address: 1_000,
            connect_timeout: None,
        };
        Engine::new(
            config,
            handler,
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }

    /// One polling request straight to the engine: status and body.
    async fn polling(
        engine: &Arc<Engine>,
        sid: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, String) {
        let mut uri = "/socket.io/?EIO=4&transport=polling".to_owned();
        if let Some(sid) = sid {
            uri.push_str(&format!("&sid={sid}"));
        }
        let req = Request::builder()
            .method(if body.is_some() { "POST" } else { "GET" })
            .uri(uri)
            .body(Body::from(body.unwrap_or("").to_owned()))
            .unwrap();
        let res = engine.clone().serve(req, None).await;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn open(engine: &Arc<Engine>) -> String {
        let (status, body) = polling(engine, None, None).await;
        assert_eq!(status, StatusCode::OK);
        let open: serde_json::Value = serde_json::from_str(&body[1..]).unwrap();
        open["sid"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_malformed_polling_payload_is_refused_and_ends_the_session() {
        let engine = engine(Arc::new(Echo), 25_000, 20_000);
        let sid = open(&engine).await;
        assert_eq!(
            polling(&engine, Some(&sid), Some("4hi")).await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(polling(&engine, Some(&sid), None).await.1, "4hi");
        let (status, _) = polling(&engine, Some(&sid), Some("abc")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = polling(&engine, Some(&sid), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(engine.sessions(), 0);
    }

    #[tokio::test]
    async fn a_client_close_ends_a_waiting_poll_with_a_noop() {
        let engine = engine(Arc::new(Echo), 25_000, 20_000);
        let sid = open(&engine).await;
        let waiting = {
            let (engine, sid) = (engine.clone(), sid.clone());
            tokio::spawn(async move { polling(&engine, Some(&sid), None).await })
        };
        // The `GET` is waiting once it has marked the session.
        while !engine.lookup(&sid).unwrap().out.lock().unwrap().polling {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            polling(&engine, Some(&sid), Some("1")).await.0,
            StatusCode::OK
        );
        assert_eq!(waiting.await.unwrap(), (StatusCode::OK, "6".into()));
        assert_eq!(
            polling(&engine, Some(&sid), None).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    /// The client sends its last `GET` alongside the `POST` that closes; when the `POST`
    /// arrives first, the `GET` still gets its noop, and only later ones are refused.
    #[tokio::test]
    async fn a_get_that_arrives_after_the_client_closed_gets_a_noop_once() {
        let engine = engine(Arc::new(Echo), 25_000, 20_000);
        let sid = open(&engine).await;
        assert_eq!(
            polling(&engine, Some(&sid), Some("1")).await.0,
            StatusCode::OK
        );
        assert_eq!(engine.sessions(), 0);
        assert_eq!(
            polling(&engine, Some(&sid), None).await,
            (StatusCode::OK, "6".into())
        );
        assert_eq!(
            polling(&engine, Some(&sid), None).await.0,
            StatusCode::BAD_REQUEST
        );
        // A POST to the closed session is still refused.
        assert_eq!(
            polling(&engine, Some(&sid), Some("4late")).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn a_session_that_joins_nothing_within_the_connect_timeout_is_closed() {
        let engine = Engine::new(
            EngineConfig {
                ping_interval: Duration::from_secs(25),
                ping_timeout: Duration::from_secs(20),
                max_payload: 1_000_000,
                max_sessions: 1_000,
                max_sessions_per_address: 1_000,
                connect_timeout: Some(Duration::from_millis(100)),
            },
            Arc::new(Echo),
            TaskTracker::new(),
            CancellationToken::new(),
        );
        tokio::spawn(engine.clone().heartbeat());
        let idle = open(&engine).await;
        let joined = open(&engine).await;
        engine.lookup(&joined).unwrap().mark_joined();
        // Waits for the heartbeat rather than for a fixed time: the idle one goes, and the
        // joined one is still there after it went.
        while engine.lookup(&idle).is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(engine.lookup(&joined).is_some());
        assert_eq!(
            polling(&engine, Some(&idle), None).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn binary_messages_over_polling_reach_a_handler_that_takes_them() {
        let engine = engine(Arc::new(Echo), 25_000, 20_000);
        let sid = open(&engine).await;
        let (status, _) = polling(&engine, Some(&sid), Some("4hello\x1ebAQIDBA==")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            polling(&engine, Some(&sid), None).await.1,
            "4hello\x1ebAQIDBA=="
        );
        // Not base64: not a packet.
        let (status, _) = polling(&engine, Some(&sid), Some("b!!")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(engine.sessions(), 0);
    }

    #[tokio::test]
    async fn binary_messages_close_the_session_by_default() {
        let engine = engine(Arc::new(TextOnly), 25_000, 20_000);
        let sid = open(&engine).await;
        polling(&engine, Some(&sid), Some("bAQIDBA==")).await;
        assert_eq!(
            polling(&engine, Some(&sid), None).await.0,
            StatusCode::BAD_REQUEST
        );
    }

    /// With a short interval and timeout (the conformance suites use 300 ms and 200 ms), every
    /// session's first ping leaves within the interval, and a client that does not answer is
    /// gone once the timeout has passed too. The heartbeat used to look every 250 ms whatever
    /// the configuration, so pings left up to 250 ms late: after the client, which waits
    /// `ping_interval + ping_timeout`, had given up.
    #[tokio::test]
    async fn pings_leave_within_the_interval_and_silence_ends_the_session() {
        let engine = engine(Arc::new(Echo), 300, 200);
        tokio::spawn(engine.clone().heartbeat());
        let mut polls = Vec::new();
        for _ in 0..16 {
            let sid = open(&engine).await;
            let opened = Instant::now();
            let engine = engine.clone();
            polls.push(tokio::spawn(async move {
                let first = polling(&engine, Some(&sid), None).await;
                (sid, opened, opened.elapsed(), first)
            }));
        }
        let mut sids = Vec::new();
        for poll in polls {
            let (sid, opened, after, first) = poll.await.unwrap();
            assert_eq!(first, (StatusCode::OK, "2".into()));
            assert!(
                after <= Duration::from_millis(300 + 30),
                "first ping after {after:?}"
            );
            sids.push((sid, opened));
        }
        // Nobody answers.
        for (sid, opened) in sids {
            let gone = opened + Duration::from_millis(300 + 200 + 30);
            tokio::time::sleep_until(gone.into()).await;
            let (status, body) = polling(&engine, Some(&sid), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        }
    }

    /// A packet as the client's encoder writes it into a polling payload, and what the echo
    /// handler answers (`None`: nothing).
    fn packet() -> impl proptest::strategy::Strategy<Value = (String, Option<String>)> {
        use proptest::prelude::*;
        let text = proptest::collection::vec(any::<char>(), 0..40)
            .prop_map(|c| c.into_iter().filter(|c| *c != '\x1e').collect::<String>());
        prop_oneof![
            text.clone()
                .prop_map(|t| (format!("4{t}"), Some(format!("4{t}")))),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
                let packet = format!("b{}", BASE64.encode(&b));
                (packet.clone(), Some(packet))
            }),
            text.prop_map(|t| (format!("2{t}"), Some(format!("3{t}")))),
            Just(("6".to_owned(), None)),
        ]
    }

    /// Polling payloads: what the client's encoder writes comes back from the echo handler
    /// packet for packet; any other body is taken (200) or refused (400, and the session is
    /// gone), never a panic.
    #[test]
    fn polling_payloads_parse_or_are_refused() {
        use proptest::prelude::*;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        };
        proptest!(config, |(packets in proptest::collection::vec(packet(), 1..8))| {
            let body: Vec<&str> = packets.iter().map(|(p, _)| p.as_str()).collect();
            let want: Vec<&str> = packets.iter().filter_map(|(_, r)| r.as_deref()).collect();
            let (status, echoed) = runtime.block_on(async {
                let engine = engine(Arc::new(Echo), 25_000, 20_000);
                let sid = open(&engine).await;
                let (status, _) = polling(&engine, Some(&sid), Some(&body.join("\x1e"))).await;
                let echoed = if want.is_empty() {
                    String::new()
                } else {
                    polling(&engine, Some(&sid), None).await.1
                };
                (status, echoed)
            });
            prop_assert_eq!(status, StatusCode::OK);
            prop_assert_eq!(echoed, want.join("\x1e"));
        });
        proptest!(config, |(
            packets in proptest::collection::vec(packet(), 0..6),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        )| {
            let body: Vec<&str> = packets.iter().map(|(p, _)| p.as_str()).collect();
            let mut body = body.join("\x1e").into_bytes();
            for (i, x) in flips {
                if !body.is_empty() {
                    let i = i.index(body.len());
                    body[i] ^= x;
                }
            }
            body.extend(noise);
            let (status, found) = runtime.block_on(async {
                let engine = engine(Arc::new(Echo), 25_000, 20_000);
                let sid = open(&engine).await;
                let req = Request::builder()
                    .method("POST")
                    .uri(format!("/socket.io/?EIO=4&transport=polling&sid={sid}"))
                    .body(Body::from(body))
                    .unwrap();
                let status = engine.clone().serve(req, None).await.status();
                (status, engine.lookup(&sid).is_some())
            });
            prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{}", status);
            if status == StatusCode::BAD_REQUEST {
                prop_assert!(!found, "a refused payload ends the session");
            }
        });
    }
}
