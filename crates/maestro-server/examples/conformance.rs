//! The server the official protocol test suites run against (`tests/conformance/`, run by
//! `cargo xtask test`): Maestro's own Engine.IO transport ([`maestro_server::realtime::engine`])
//! configured and wired as the suites' READMEs configure the reference JavaScript server.
//!
//! - `/engine.io/`: Engine.IO v4, every message (text or binary) echoed back, as the
//!   engine.io-protocol suite expects (`socket.on("data", d => socket.send(d))`).
//! - `/socket.io/`: Socket.IO v5 with the reference handlers of the socket.io-protocol suite:
//!   namespaces `/` and `/custom`, each emitting `auth` (the handshake's payload) on connect;
//!   on `/`, `message` is emitted back as `message-back` and `message-with-ack` is acked with
//!   its arguments, binary attachments included; a client that joins no namespace within the
//!   connect timeout is disconnected.
//!
//! Both suites hard-code `http://localhost:3000`, so the port is 3000 unless given as the first
//! argument; `localhost` may resolve to either loopback address, so it listens on both.
//!
//! Maestro's own namespaces (`realtime::socketio`) refuse binary packets and have their own
//! handshake; this binary is not part of `maestro serve`. What the suites prove about Maestro is
//! the transport: handshakes, polling, WebSocket framing, the upgrade, heartbeat and close.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use maestro_server::realtime::engine::{Engine, EngineConfig, Frame, Handler, Session};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The reference configuration (both READMEs).
const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);
const MAX_PAYLOAD: usize = 1_000_000;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Binary attachments one Socket.IO packet may announce (socket.io-parser's default).
const MAX_ATTACHMENTS: usize = 10;
const NAMESPACES: [&str; 2] = ["/", "/custom"];
/// Event names a client may not emit (socket.io-parser refuses them).
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];
/// How long after the connect packet the `auth` emit follows (see [`handle`]).
const AUTH_EMIT_DELAY: Duration = Duration::from_millis(20);

/// One thread, as the reference server (node) has: requests are handled in the order they come
/// in. The suites' close test sends its `GET` and the `POST` that closes the session at once and
/// expects the `GET` to be the one waiting when the close arrives.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().context("usage: conformance [PORT]")?,
        None => 3000,
    };
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{port}; the suites hard-code localhost:3000, so \
                 stop whatever listens there"
            )
        })?;
    // Node resolves `localhost` to ::1 first on some systems; a host without IPv6 has no ::1.
    let v6 = match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
        Ok(l) => Some(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::bail!("[::1]:{port} is taken; stop whatever listens there")
        }
        Err(e) => {
            eprintln!("conformance: not listening on [::1]:{port} ({e})");
            None
        }
    };

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let config = EngineConfig {
        ping_interval: PING_INTERVAL,
        ping_timeout: PING_TIMEOUT,
        max_payload: MAX_PAYLOAD,
        max_sessions: 10_000,
        max_sessions_per_address: 10_000,
        connect_timeout: None,
    };
    let engines = Arc::new(Engines {
        engine_io: Engine::new(
            config.clone(),
            Arc::new(Echo),
            tasks.clone(),
            shutdown.clone(),
        ),
        // `connectTimeout`: a client that joins no namespace in time is disconnected.
        socket_io: Engine::new(
            EngineConfig {
                connect_timeout: Some(CONNECT_TIMEOUT),
                ..config
            },
            Arc::new(SocketIo::new(tasks.clone())),
            tasks.clone(),
            shutdown.clone(),
        ),
    });
    tasks.spawn(engines.engine_io.clone().heartbeat());
    tasks.spawn(engines.socket_io.clone().heartbeat());
    tasks.spawn(accept(v4, engines.clone(), shutdown.clone()));
    if let Some(v6) = v6 {
        tasks.spawn(accept(v6, engines.clone(), shutdown.clone()));
    }
    println!("conformance server listening on localhost:{port}");

    stopped().await?;
    shutdown.cancel();
    engines.engine_io.close_all(|_| {});
    engines.socket_io.close_all(|_| {});
    tasks.close();
    // Connections still open are dropped with the process.
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    Ok(())
}

/// Ctrl-C, or (on Unix) SIGTERM.
async fn stopped() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

struct Engines {
    engine_io: Arc<Engine>,
    socket_io: Arc<Engine>,
}

/// Serves HTTP/1.1 with upgrades, as `maestro_server::run` does: the engine takes an upgraded
/// connection back as its `TcpStream`, which needs hyper's plain HTTP/1 connection over
/// `TokioIo<TcpStream>`.
async fn accept(listener: TcpListener, engines: Arc<Engines>, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("conformance: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let engines = engines.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                route(engines.clone(), req.map(Body::new), peer)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let _ = conn.await;
        });
    }
    connections.close();
    connections.wait().await;
}

async fn route(
    engines: Arc<Engines>,
    req: Request<Body>,
    peer: SocketAddr,
) -> Result<Response<Body>, std::convert::Infallible> {
    let engine = match req.uri().path() {
        "/engine.io/" => Some(engines.engine_io.clone()),
        "/socket.io/" => Some(engines.socket_io.clone()),
        _ => None,
    };
    let mut response = match engine {
        // CORS preflight (`cors: {origin: "*"}`), for the suites' browser version.
        Some(_) if req.method() == Method::OPTIONS => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST")
            .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type")
            .body(Body::empty())
            .expect("a valid response"),
        Some(engine) => engine.serve(req, Some(peer)).await,
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .expect("a valid response"),
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}

type Task<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Engine.IO: every message back to its sender.
struct Echo;

impl Handler for Echo {
    fn on_message<'a>(&'a self, session: &'a Arc<Session>, text: &'a str) -> Task<'a> {
        session.send(&Frame::text(&format!("4{text}")));
        Box::pin(std::future::ready(()))
    }

    fn on_binary<'a>(&'a self, session: &'a Arc<Session>, data: Bytes) -> Task<'a> {
        session.send(&Frame::binary(&data));
        Box::pin(std::future::ready(()))
    }

    fn on_close(&self, _session: &Arc<Session>) {}
}

/// Socket.IO v5 over the engine, with the reference server's handlers.
struct SocketIo {
    /// Per Engine.IO session: its namespaces and any binary packet being reassembled.
    clients: Arc<Mutex<HashMap<Box<str>, Client>>>,
    tasks: TaskTracker,
}

#[derive(Default)]
struct Client {
    /// Connected namespaces and their socket ids.
    sockets: HashMap<String, Box<str>>,
    /// A binary event or ack waiting for its attachments.
    pending: Option<Pending>,
}

struct Pending {
    packet: Packet,
    attachments: Vec<Bytes>,
    expected: usize,
}

/// A Socket.IO packet as the client sends it: `<type>[<n>-][<ns>,][<id>][<json>]`.
#[derive(Debug, PartialEq)]
struct Packet {
    kind: u8,
    attachments: usize,
    ns: String,
    id: Option<u64>,
    data: Option<Value>,
}

impl Packet {
    /// Parses a packet as socket.io-parser does; `None` for anything it refuses.
    fn parse(text: &str) -> Option<Packet> {
        let kind = text.bytes().next().filter(|b| (b'0'..=b'6').contains(b))? - b'0';
        let mut rest = &text[1..];
        let mut attachments = 0;
        if kind == 5 || kind == 6 {
            let (n, tail) = rest.split_once('-')?;
            attachments = n.parse().ok().filter(|n| *n <= MAX_ATTACHMENTS)?;
            rest = tail;
        }
        let mut ns = "/";
        if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            ns = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or("");
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = match digits {
            0 => None,
            _ => Some(rest[..digits].parse().ok()?),
        };
        rest = &rest[digits..];
        let data = match rest {
            "" => None,
            json => Some(serde_json::from_str::<Value>(json).ok()?),
        };
        let valid = match (kind, &data) {
            (0, None | Some(Value::Object(_))) => true,
            (1, None) => true,
            (2 | 5, Some(Value::Array(args))) => match args.first() {
                Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
                Some(Value::Number(_)) => true,
                _ => false,
            },
            (3 | 6, Some(Value::Array(_))) => true,
            _ => false,
        };
        valid.then(|| Packet {
            kind,
            attachments,
            ns: ns.to_owned(),
            id,
            data,
        })
    }
}

/// `"/"` is written as nothing; another namespace as `"/ns,"`.
fn prefix(ns: &str) -> String {
    if ns == "/" {
        String::new()
    } else {
        format!("{ns},")
    }
}

/// Replaces the placeholders in `value` (in document order) with ones numbered from 0, and
/// returns the attachments in that order: what the reference server's decode (placeholders to
/// buffers) and re-encode (buffers to placeholders) amount to. `None` if a placeholder points
/// at no attachment.
fn renumber(value: &mut Value, attachments: &[Bytes], out: &mut Vec<Bytes>) -> Option<()> {
    match value {
        Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
            let num = map.get("num").and_then(Value::as_u64)?;
            let data = attachments.get(usize::try_from(num).ok()?)?;
            map.insert("num".into(), out.len().into());
            out.push(data.clone());
        }
        Value::Object(map) => {
            for v in map.values_mut() {
                renumber(v, attachments, out)?;
            }
        }
        Value::Array(items) => {
            for v in items {
                renumber(v, attachments, out)?;
            }
        }
        _ => {}
    }
    Some(())
}

impl SocketIo {
    fn new(tasks: TaskTracker) -> Self {
        Self {
            clients: Arc::default(),
            tasks,
        }
    }

    /// A text message: a packet, unless a binary packet is still waiting for attachments.
    fn on_text(&self, session: &Arc<Session>, text: &str) -> Option<()> {
        let packet = Packet::parse(text)?;
        let mut clients = self.clients.lock().expect("clients lock");
        let client = clients.entry(session.id().into()).or_default();
        if client.pending.is_some() {
            return None;
        }
        if packet.attachments > 0 {
            client.pending = Some(Pending {
                expected: packet.attachments,
                attachments: Vec::new(),
                packet,
            });
            return Some(());
        }
        handle(&self.tasks, session, client, packet, &[])
    }

    fn on_attachment(&self, session: &Arc<Session>, data: Bytes) -> Option<()> {
        let mut clients = self.clients.lock().expect("clients lock");
        let client = clients.get_mut(session.id())?;
        let pending = client.pending.as_mut()?;
        pending.attachments.push(data);
        if pending.attachments.len() < pending.expected {
            return Some(());
        }
        let Pending {
            packet,
            attachments,
            ..
        } = client.pending.take()?;
        handle(&self.tasks, session, client, packet, &attachments)
    }
}

/// One complete packet; `None` closes the session (a protocol error, as the reference
/// server's `client.close()`).
fn handle(
    tasks: &TaskTracker,
    session: &Arc<Session>,
    client: &mut Client,
    packet: Packet,
    attachments: &[Bytes],
) -> Option<()> {
    let connected = client.sockets.contains_key(&packet.ns);
    let ns = packet.ns.as_str();
    match packet.kind {
        0 if connected => None,
        0 if !NAMESPACES.contains(&ns) => {
            let p = prefix(ns);
            session.send(&Frame::text(&format!(
                r#"44{p}{{"message":"Invalid namespace"}}"#
            )));
            Some(())
        }
        0 => {
            let sid = maestro_server::realtime::engine::new_sid();
            let auth = packet
                .data
                .unwrap_or_else(|| Value::Object(Default::default()));
            let p = prefix(ns);
            let handshake = serde_json::json!({ "sid": sid });
            session.send(&Frame::text(&format!("40{p}{handshake}")));
            let emit = Frame::text(&format!("42{p}{}", serde_json::json!(["auth", auth])));
            // The reference server writes its `connection` handler's emits after the connect
            // packet has been flushed; the suites read the two with one listener after the other
            // and miss a second frame that arrives in the same read.
            session.mark_joined();
            let session = session.clone();
            tasks.spawn(async move {
                tokio::time::sleep(AUTH_EMIT_DELAY).await;
                session.send(&emit);
            });
            client.sockets.insert(packet.ns, sid);
            Some(())
        }
        _ if !connected => None,
        1 => {
            client.sockets.remove(&packet.ns);
            Some(())
        }
        2 | 5 => {
            let Some(Value::Array(mut args)) = packet.data else {
                return None;
            };
            let name = args.remove(0);
            let p = prefix(ns);
            match (ns, name.as_str()) {
                ("/", Some("message")) => {
                    args.insert(0, "message-back".into());
                    send_with_attachments(session, 2, &p, None, args, attachments)
                }
                ("/", Some("message-with-ack")) => match packet.id {
                    Some(id) => send_with_attachments(session, 3, &p, Some(id), args, attachments),
                    None => Some(()),
                },
                _ => Some(()),
            }
        }
        // Acks of server emits: the server asks for none.
        3 | 6 => Some(()),
        _ => None,
    }
}

/// Sends an event (`kind` 2) or ack (3) with `args`, as a binary event or ack (5, 6) followed
/// by its attachments when it has any.
fn send_with_attachments(
    session: &Arc<Session>,
    kind: u8,
    prefix: &str,
    id: Option<u64>,
    args: Vec<Value>,
    attachments: &[Bytes],
) -> Option<()> {
    let mut args = Value::Array(args);
    let mut ordered = Vec::new();
    renumber(&mut args, attachments, &mut ordered)?;
    let id = id.map(|i| i.to_string()).unwrap_or_default();
    let mut frames = Vec::with_capacity(1 + ordered.len());
    if ordered.is_empty() {
        frames.push(Frame::text(&format!("4{kind}{prefix}{id}{args}")));
    } else {
        let n = ordered.len();
        frames.push(Frame::text(&format!("4{}{n}-{prefix}{id}{args}", kind + 3)));
        frames.extend(ordered.iter().map(|a| Frame::binary(a)));
    }
    session.send_many(&frames);
    Some(())
}

impl Handler for SocketIo {
    fn on_open(&self, session: &Arc<Session>) {
        self.clients
            .lock()
            .expect("clients lock")
            .insert(session.id().into(), Client::default());
    }

    fn on_message<'a>(&'a self, session: &'a Arc<Session>, text: &'a str) -> Task<'a> {
        if self.on_text(session, text).is_none() {
            session.close();
        }
        Box::pin(std::future::ready(()))
    }

    fn on_binary<'a>(&'a self, session: &'a Arc<Session>, data: Bytes) -> Task<'a> {
        if self.on_attachment(session, data).is_none() {
            session.close();
        }
        Box::pin(std::future::ready(()))
    }

    fn on_close(&self, session: &Arc<Session>) {
        self.clients
            .lock()
            .expect("clients lock")
            .remove(session.id());
    }
}
