//! Socket.IO `/ui` and `/mobile` (docs/realtime.md), through a real client: [`Sio`] below speaks
//! Engine.IO v4 / Socket.IO v5 over a WebSocket, the way `socket.io-client` does with
//! `transports: ["websocket"]` (the JavaScript client itself is exercised by `tests/js`).
//!
//! Covered: the handshake and its refusals, which events reach which socket, every client
//! event with its ack (and the error acks), the reconnect replay seam (no duplicate, no hole),
//! a gap older than the journal, `session:reply-input` end to end, the payload cap, shutdown.

use crate::common;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use common::{TestServer, WAIT};
use futures_util::stream;
use futures_util::{SinkExt, StreamExt};
use maestro_client::Client;
use maestro_protocol::{
    CreateProject, CreateTask, NeedsInput, Project, UpdateProject, UpdateSession, WaitMail,
};
use maestro_server::Config;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// A small Socket.IO client

/// One connection to one namespace.
struct Sio {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ns: String,
    next_ack: u64,
    events: VecDeque<(String, Value)>,
    acks: HashMap<u64, Value>,
}

/// A Socket.IO packet as received.
enum Packet {
    Connect(Value),
    ConnectError(Value),
    Disconnect,
    Event(String, Value),
    Ack(u64, Value),
}

/// Splits `<type>[/ns,][ackId]<json>` (the Engine.IO `4` already removed).
fn parse_packet(text: &str) -> (u8, String, Option<u64>, Option<Value>) {
    let kind = text.as_bytes()[0] - b'0';
    let mut rest = &text[1..];
    let mut ns = "/".to_owned();
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        ns = rest[..end].to_owned();
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = (digits > 0).then(|| rest[..digits].parse().unwrap());
    rest = &rest[digits..];
    let data = (!rest.is_empty()).then(|| {
        serde_json::from_str(rest).unwrap_or_else(|e| panic!("bad packet JSON ({e}): {text}"))
    });
    (kind, ns, id, data)
}

impl Sio {
    /// Connects to `ns` with `auth`; `Err` carries the `connect_error` message.
    async fn connect(
        addr: std::net::SocketAddr,
        ns: &str,
        auth: Value,
        origin: Option<&str>,
    ) -> Result<Self, String> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let mut req = url.into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let (ws, _) = match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("websocket connect timed out")
        {
            Ok(ws) => ws,
            // Refused before the upgrade (the auth gate): the error body's code and message.
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                        .unwrap_or_default();
                return Err(format!("{}: {}", body["code"], body["message"]).replace('"', ""));
            }
            Err(e) => panic!("websocket connect: {e}"),
        };
        Self::join(ws, ns, auth).await
    }

    /// A `/ui` client whose socket can hold only a few KB: it stops taking packets after a
    /// handful of events unless it reads.
    async fn connect_small_buffer(addr: std::net::SocketAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connect");
        Self::join(ws, "/ui", json!({})).await.unwrap()
    }

    /// The open packet, then the namespace's CONNECT and its answer.
    async fn join(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        ns: &str,
        auth: Value,
    ) -> Result<Self, String> {
        let mut sio = Self {
            ws,
            ns: ns.to_owned(),
            next_ack: 1,
            events: VecDeque::new(),
            acks: HashMap::new(),
        };
        let open = sio.read_engine().await.expect("engine.io open packet");
        assert!(
            open.starts_with('0'),
            "expected the open packet, got {open}"
        );
        let open: Value = serde_json::from_str(&open[1..]).unwrap();
        assert!(
            open["sid"].is_string() && open["maxPayload"].is_u64(),
            "{open}"
        );
        sio.send(&format!("0{ns},{auth}")).await;
        match sio.read_packet().await.expect("connect answer") {
            Packet::Connect(data) => {
                assert!(data["sid"].is_string(), "connect packet: {data}");
                Ok(sio)
            }
            Packet::ConnectError(data) => Err(data["message"].as_str().unwrap().to_owned()),
            _ => panic!("expected CONNECT or CONNECT_ERROR"),
        }
    }

    async fn send(&mut self, engine_payload: &str) {
        self.ws
            .send(Message::text(format!("4{engine_payload}")))
            .await
            .expect("websocket send");
    }

    /// The next Engine.IO message (pings answered on the way); `None` when the connection
    /// closed.
    async fn read_engine(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing from the server in time");
            let text = match msg {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(_))) => return None,
                Some(Ok(_)) => continue,
            };
            match text.as_bytes().first() {
                Some(b'2') => {
                    self.ws.send(Message::text("3")).await.expect("pong");
                }
                Some(b'1') => return None,
                _ => return Some(text),
            }
        }
    }

    async fn read_packet(&mut self) -> Option<Packet> {
        let text = self.read_engine().await?;
        assert!(text.starts_with('4'), "expected a message packet: {text}");
        let (kind, ns, id, data) = parse_packet(&text[1..]);
        assert_eq!(ns, self.ns, "packet of another namespace: {text}");
        Some(match kind {
            0 => Packet::Connect(data.unwrap_or(Value::Null)),
            1 => Packet::Disconnect,
            2 => {
                let Some(Value::Array(mut args)) = data else {
                    panic!("event without arguments: {text}")
                };
                assert_eq!(args.len(), 2, "events carry one payload: {text}");
                let payload = args.pop().unwrap();
                let name = args.pop().unwrap().as_str().unwrap().to_owned();
                Packet::Event(name, payload)
            }
            3 => {
                let Some(Value::Array(mut args)) = data else {
                    panic!("ack without arguments: {text}")
                };
                assert_eq!(args.len(), 1, "acks carry one value: {text}");
                Packet::Ack(id.expect("ack id"), args.pop().unwrap())
            }
            4 => Packet::ConnectError(data.unwrap_or(Value::Null)),
            other => panic!("unexpected packet type {other}: {text}"),
        })
    }

    /// Reads one packet into the buffers; false when the connection is gone.
    async fn pump(&mut self) -> bool {
        match self.read_packet().await {
            None | Some(Packet::Disconnect) => false,
            Some(Packet::Event(name, data)) => {
                self.events.push_back((name, data));
                true
            }
            Some(Packet::Ack(id, data)) => {
                self.acks.insert(id, data);
                true
            }
            Some(_) => panic!("unexpected connect packet"),
        }
    }

    /// Emits `event` with one payload and waits for its ack.
    async fn call(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        let ns = self.ns.clone();
        self.send(&format!("2{ns},{id}{}", json!([event, data])))
            .await;
        self.await_ack(id).await
    }

    /// Emits `event` with no payload at all, with an ack.
    async fn call_bare(&mut self, event: &str) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        let ns = self.ns.clone();
        self.send(&format!("2{ns},{id}{}", json!([event]))).await;
        self.await_ack(id).await
    }

    async fn await_ack(&mut self, id: u64) -> Value {
        loop {
            if let Some(v) = self.acks.remove(&id) {
                return v;
            }
            assert!(
                self.pump().await,
                "connection closed while waiting for ack {id}"
            );
        }
    }

    /// The next event, or `None` if none arrives within `wait`.
    async fn try_event(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            match tokio::time::timeout_at(deadline, self.read_packet()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Packet::Disconnect)) => panic!("connection closed"),
                Ok(Some(Packet::Event(n, d))) => self.events.push_back((n, d)),
                Ok(Some(Packet::Ack(id, d))) => {
                    self.acks.insert(id, d);
                }
                Ok(Some(_)) => panic!("unexpected connect packet"),
            }
        }
    }

    async fn event(&mut self) -> (String, Value) {
        self.try_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("no event within {WAIT:?}"))
    }

    /// Reads events and asserts they are `names`, in order; returns their payloads.
    async fn expect(&mut self, names: &[&str]) -> Vec<Value> {
        let mut got = Vec::new();
        for name in names {
            let (n, data) = self.event().await;
            assert_eq!(
                &n,
                name,
                "expected {names:?}; after {} got {n}: {data}",
                got.len()
            );
            check_envelope(&n, &data);
            got.push(data);
        }
        got
    }

    /// Asserts nothing arrives for a while.
    async fn quiet(&mut self) {
        if let Some((n, d)) = self.try_event(Duration::from_millis(300)).await {
            panic!("expected no event, got {n}: {d}");
        }
    }

    /// Whether the server closed the connection within [`WAIT`].
    async fn closed_by_server(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The payload of every domain event: `{type, event, data, timestamp, seq, projectId}`.
#[track_caller]
fn check_envelope(name: &str, v: &Value) {
    if name == "replay:incomplete" {
        return;
    }
    assert_eq!(
        common::keys(v),
        common::set(&["type", "event", "data", "timestamp", "seq", "projectId"]),
        "envelope of {name}: {v}"
    );
    assert_eq!(v["type"], name, "{v}");
    assert_eq!(v["event"], name, "{v}");
    assert!(v["seq"].as_u64().is_some_and(|s| s >= 1), "{v}");
    assert!(v["timestamp"].is_i64(), "{v}");
}

#[track_caller]
fn ok(ack: &Value) -> &Value {
    assert_eq!(ack["ok"], true, "expected a success ack, got {ack}");
    ack
}

#[track_caller]
fn err(ack: &Value, code: &str) {
    assert_eq!(ack["ok"], false, "expected an error ack, got {ack}");
    assert_eq!(ack["error"]["code"], code, "{ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{ack}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fixtures

async fn project(api: &Client, name: &str) -> Project {
    api.create_project(&CreateProject {
        name: Some(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Marks `session` as waiting for input, as the agent's hooks do (`maestro session
/// needs-input`): a reply is accepted only then.
async fn ask(api: &Client, session: &str, question: &str) {
    api.update_session(
        session,
        &UpdateSession {
            needs_input: Some(NeedsInput {
                active: true,
                message: Some(question.into()),
                since: None,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

async fn task(api: &Client, project: &str, title: &str) -> maestro_protocol::Task {
    api.create_task(&CreateTask {
        project_id: Some(project.into()),
        title: Some(title.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Creates `n` tasks, several requests at a time: `n` `task:created` events.
async fn many_tasks(api: &Client, project: &str, n: usize) {
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let project = project.to_owned();
            async move { task(&api, &project, &format!("t{i}")).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

/// A client that stops reading fills its socket: what the kernel does not take waits in the
/// session's queue and goes out, in order, once the client reads again (the writer waits for
/// room in the send buffer); a client that keeps reading is not held up meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_every_event_in_order_when_it_reads_again() {
    let server = TestServer::start().await;
    let api = server.client();
    let addr = server.addr();
    let mut stalled = Sio::connect_small_buffer(addr).await;
    let mut reading = Sio::connect(addr, "/ui", json!({}), None).await.unwrap();
    let project = api
        .create_project(&CreateProject {
            name: Some("slow reader".into()),
            working_dir: Some("/tmp".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // About 5 MB of events: more than a loopback socket's send and receive buffers hold.
    const N: usize = 600;
    let description = "x".repeat(8_000);
    let created: Vec<String> = stream::iter(0..N)
        .map(|i| {
            let (api, project, description) =
                (api.clone(), project.id.clone(), description.clone());
            async move {
                api.create_task(&CreateTask {
                    project_id: Some(project),
                    title: Some(format!("t{i}")),
                    description: Some(description),
                    ..Default::default()
                })
                .await
                .unwrap()
                .id
            }
        })
        .buffered(4)
        .collect()
        .await;
    let ids = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|e| e["data"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let names = vec!["task:created"; N];
    reading.expect(&["project:created"]).await;
    let got = ids(reading.expect(&names).await);
    assert_eq!(got.len(), N);
    // Now the stalled client reads: everything, each event once, in the order of the journal.
    stalled.expect(&["project:created"]).await;
    let late = stalled.expect(&names).await;
    let seqs: Vec<u64> = late.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    let mut late = ids(late);
    late.sort();
    let mut all = created;
    all.sort();
    assert_eq!(late, all);
}

/// A server with a custom configuration (the shared harness always uses the defaults), on the
/// backend the suite runs on unless `adjust` picks one.
struct CustomServer {
    addr: std::net::SocketAddr,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl CustomServer {
    /// On the suite's backend, with `adjust`ed settings.
    async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::config_for(dir.path());
        adjust(&mut config);
        Self::start_with(dir, config).await
    }

    /// On the Redis at `url`, shared with other servers, and so with their hash key `key`.
    async fn on_redis(url: &str, key: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_dir(dir.path());
        config.redis_url = Some(url.to_owned());
        config.hash_key_file = Some(key.to_owned());
        Self::start_with(dir, config).await
    }

    async fn start_with(dir: tempfile::TempDir, config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(maestro_server::run(config, listener, token.clone()));
        let api = Client::new(&format!("http://{addr}")).unwrap();
        tokio::time::timeout(WAIT * 2, api.health())
            .await
            .expect("health in time")
            .expect("health");
        Self {
            addr,
            token,
            task,
            _dir: dir,
        }
    }

    fn api(&self) -> Client {
        Client::new(&format!("http://{}", self.addr)).unwrap()
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT * 3, self.task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn handshake_rules() {
    let server = TestServer::start().await;
    let api = server.api();
    let p = project(api, "hs").await;
    let addr = server.addr();

    // /ui needs nothing from a local client; a token, when given, is checked even then.
    Sio::connect(addr, "/ui", json!({}), None)
        .await
        .unwrap()
        .close()
        .await;
    Sio::connect(
        addr,
        "/ui",
        json!({ "projectId": p.id, "lastSeq": 0 }),
        None,
    )
    .await
    .unwrap()
    .close()
    .await;
    let err = Sio::connect(
        addr,
        "/ui",
        json!({ "token": "t", "projectId": p.id, "lastSeq": 0 }),
        None,
    )
    .await
    .err()
    .expect("a wrong token is refused");
    assert!(err.starts_with("UNAUTHORIZED: "), "{err}");
    Sio::connect(addr, "/mobile", json!({ "projectId": p.id }), None)
        .await
        .unwrap()
        .close()
        .await;
    // An allowed browser origin: the desktop app's.
    Sio::connect(addr, "/ui", json!({}), Some("tauri://localhost"))
        .await
        .unwrap()
        .close()
        .await;
    // Another page on this machine is not.
    let err = Sio::connect(addr, "/ui", json!({}), Some("http://localhost:5173"))
        .await
        .err()
        .expect("another local page is refused");
    assert!(err.starts_with("FORBIDDEN: "), "{err}");

    let refused = |r: Result<Sio, String>| match r {
        Ok(_) => panic!("expected the handshake to be refused"),
        Err(message) => message,
    };
    let m = refused(Sio::connect(addr, "/ui", json!({}), Some("https://evil.example")).await);
    assert!(m.starts_with("FORBIDDEN: "), "{m}");
    let m = refused(Sio::connect(addr, "/mobile", json!({}), None).await);
    assert!(m.starts_with("VALIDATION_ERROR: "), "{m}");
    let m = refused(Sio::connect(addr, "/mobile", json!({ "projectId": "proj_nope" }), None).await);
    assert!(m.starts_with("NOT_FOUND: "), "{m}");
    let m = refused(Sio::connect(addr, "/mobile", json!({ "projectId": "../x" }), None).await);
    assert!(m.starts_with("VALIDATION_ERROR: "), "{m}");
    let m = refused(Sio::connect(addr, "/ui", json!({ "lastSeq": 3 }), None).await);
    assert!(m.starts_with("VALIDATION_ERROR: "), "{m}");
    let m = refused(
        Sio::connect(
            addr,
            "/mobile",
            json!({ "projectId": p.id, "lastSeq": "x" }),
            None,
        )
        .await,
    );
    assert!(m.starts_with("VALIDATION_ERROR: "), "{m}");
    let m = refused(
        Sio::connect(
            addr,
            "/mobile",
            json!({ "projectId": p.id, "lastSeq": -1 }),
            None,
        )
        .await,
    );
    assert!(m.starts_with("VALIDATION_ERROR: "), "{m}");
}

#[tokio::test]
async fn events_reach_the_right_sockets() {
    let server = TestServer::start().await;
    let api = server.api();
    let addr = server.addr();
    let a = project(api, "a").await;
    let b = project(api, "b").await;
    let s1 = common::new_session(api, &a.id, "s1").await;
    let s2 = common::new_session(api, &a.id, "s2").await;

    let mut mobile = Sio::connect(addr, "/mobile", json!({ "projectId": a.id }), None)
        .await
        .unwrap();
    let mut ui = Sio::connect(addr, "/ui", json!({}), None).await.unwrap();
    let mut ui_s1 = Sio::connect(addr, "/ui", json!({}), None).await.unwrap();
    let ack = ui_s1
        .call("subscribe", json!({ "sessionIds": [s1.id] }))
        .await;
    assert_eq!(ok(&ack)["sessionIds"], json!([s1.id]));

    // A task in A: project-level, everyone following A gets it.
    let t = task(api, &a.id, "in a").await;
    for sock in [&mut mobile, &mut ui, &mut ui_s1] {
        let got = sock.expect(&["task:created"]).await;
        assert_eq!(got[0]["data"], common::to_json(&t));
        assert_eq!(got[0]["projectId"], a.id);
    }
    // A task in B: not for A's phone.
    task(api, &b.id, "in b").await;
    ui.expect(&["task:created"]).await;
    ui_s1.expect(&["task:created"]).await;
    mobile.quiet().await;

    // Session events: the subscribed screen gets only s1's.
    api.append_timeline(
        &s2.id,
        &maestro_protocol::AppendTimeline {
            message: Some("on s2".into()),
            kind: Some("note".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // An append: `session:appended` (just the entry) reaches /mobile and /ui like any event.
    for sock in [&mut mobile, &mut ui] {
        let got = sock.expect(&["session:appended", "session:updated"]).await;
        assert_eq!(got[0]["data"]["sessionId"], s2.id);
        assert_eq!(got[0]["data"]["timeline"][0]["message"], "on s2");
        assert_eq!(got[0]["data"]["timeline"].as_array().unwrap().len(), 1);
    }
    ui_s1.quiet().await;
    api.append_timeline(
        &s1.id,
        &maestro_protocol::AppendTimeline {
            message: Some("on s1".into()),
            kind: Some("note".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for sock in [&mut mobile, &mut ui, &mut ui_s1] {
        let got = sock.expect(&["session:appended", "session:updated"]).await;
        assert_eq!(got[0]["data"]["sessionId"], s1.id);
        assert_eq!(got[1]["data"]["id"], s1.id);
    }

    // Global events: the phone gets those about its project only; projectId is null.
    api.update_project(
        &b.id,
        &UpdateProject {
            description: Some("b!".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    api.update_project(
        &a.id,
        &UpdateProject {
            description: Some("a!".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let got = mobile.expect(&["project:updated"]).await;
    assert_eq!(got[0]["data"]["id"], a.id);
    assert_eq!(got[0]["projectId"], Value::Null);
    let got = ui.expect(&["project:updated", "project:updated"]).await;
    assert_eq!(
        got[1]["seq"].as_u64().unwrap(),
        got[0]["seq"].as_u64().unwrap() + 1
    );

    // Unsubscribing one session narrows; unsubscribing all restores everything.
    let ack = ui_s1
        .call("unsubscribe", json!({ "sessionIds": [s1.id] }))
        .await;
    assert_eq!(ok(&ack)["sessionIds"], json!([]));
    let ack = ui_s1.call("unsubscribe", json!({})).await;
    assert_eq!(ok(&ack)["sessionIds"], Value::Null);
    api.append_timeline(
        &s2.id,
        &maestro_protocol::AppendTimeline {
            message: Some("again".into()),
            kind: Some("note".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ui_s1
        .expect(&[
            "project:updated",
            "project:updated",
            "session:appended",
            "session:updated",
        ])
        .await;
}

#[tokio::test]
async fn every_client_event_acks() {
    let server = TestServer::start().await;
    let api = server.api();
    let addr = server.addr();
    let a = project(api, "a").await;
    let b = project(api, "b").await;
    let t = task(api, &a.id, "t").await;
    let s = common::new_session(api, &a.id, "s").await;
    let other = common::new_session(api, &b.id, "other").await;

    let mut ui = Sio::connect(addr, "/ui", json!({}), None).await.unwrap();
    let mut mobile = Sio::connect(addr, "/mobile", json!({ "projectId": a.id }), None)
        .await
        .unwrap();

    // subscribe / unsubscribe
    err(&ui.call("subscribe", json!({})).await, "VALIDATION_ERROR");
    err(
        &ui.call("subscribe", json!({ "sessionIds": ["../etc"] }))
            .await,
        "VALIDATION_ERROR",
    );
    err(
        &ui.call("subscribe", json!({ "sessionIds": "s" })).await,
        "VALIDATION_ERROR",
    );
    err(
        &ui.call("subscribe", json!([1, 2])).await,
        "VALIDATION_ERROR",
    );
    let ack = ui
        .call("subscribe", json!({ "sessionIds": [s.id, other.id] }))
        .await;
    let mut want = vec![s.id.clone(), other.id.clone()];
    want.sort();
    assert_eq!(ok(&ack)["sessionIds"], json!(want));
    ok(&ui.call_bare("unsubscribe").await);

    // state:sync: one snapshot with the heads.
    let ack = ui.call_bare("state:sync").await;
    ok(&ack);
    assert_eq!(ack["projects"].as_array().unwrap().len(), 2);
    assert_eq!(ack["tasks"], json!([common::to_json(&t)]));
    assert_eq!(ack["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(
        ack["teamMembers"].as_array().unwrap().len(),
        10,
        "5 built-ins per project"
    );
    let heads = &ack["seqs"];
    assert_eq!(heads["global"], 2, "two project:created");
    assert_eq!(heads[&a.id], 2, "task:created, session:created: {ack}");
    let ack = ui.call("state:sync", json!({ "projectId": b.id })).await;
    assert_eq!(ok(&ack)["projects"][0]["id"], b.id);
    assert_eq!(common::keys(&ack["seqs"]), common::set(&["global", &b.id]));
    err(
        &ui.call("state:sync", json!({ "projectId": "proj_none" }))
            .await,
        "NOT_FOUND",
    );
    let ack = mobile.call_bare("state:sync").await;
    assert_eq!(ok(&ack)["projects"].as_array().unwrap().len(), 1);
    assert_eq!(ack["sessions"][0]["id"], s.id);
    err(
        &mobile
            .call("state:sync", json!({ "projectId": b.id }))
            .await,
        "FORBIDDEN",
    );

    // events:replay
    err(
        &ui.call("events:replay", json!({})).await,
        "VALIDATION_ERROR",
    );
    err(
        &ui.call("events:replay", json!({ "afterSeq": "x" })).await,
        "VALIDATION_ERROR",
    );
    err(
        &ui.call(
            "events:replay",
            json!({ "afterSeq": 0, "projectId": "proj_none" }),
        )
        .await,
        "NOT_FOUND",
    );
    err(
        &mobile
            .call("events:replay", json!({ "afterSeq": 0, "projectId": b.id }))
            .await,
        "FORBIDDEN",
    );
    let ack = mobile.call("events:replay", json!({ "afterSeq": 0 })).await;
    ok(&ack);
    assert_eq!(ack["recovered"], true);
    let seqs: Vec<u64> = ack["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2], "{ack}");
    assert_eq!(ack["events"][0]["event"], "task:created");
    assert_eq!(ack["events"][1]["event"], "session:created");
    for e in ack["events"].as_array().unwrap() {
        check_envelope(e["event"].as_str().unwrap(), e);
    }
    assert_eq!(ack["headSeq"], 2);
    assert_eq!(ack["hasMore"], false);
    let ack = ui
        .call(
            "events:replay",
            json!({ "afterSeq": 0, "projectId": a.id, "limit": 1 }),
        )
        .await;
    assert_eq!(ok(&ack)["events"].as_array().unwrap().len(), 1);
    assert_eq!(ack["hasMore"], true);
    let ack = ui.call("events:replay", json!({ "afterSeq": 0 })).await;
    assert_eq!(ok(&ack)["projectId"], Value::Null, "the global scope");
    assert_eq!(ack["events"][0]["event"], "project:created");
    let ack = ui
        .call(
            "events:replay",
            json!({ "afterSeq": 99, "projectId": a.id }),
        )
        .await;
    assert_eq!(ok(&ack)["recovered"], false, "ahead of the server: {ack}");

    // The events these calls cause reach the sockets; drain what is queued so far.
    mobile.quiet().await;
    ui.quiet().await;

    // mail:send — same body as POST /api/mail.
    let ack = mobile
        .call(
            "mail:send",
            json!({
                "projectId": a.id, "fromSessionId": "user", "toSessionId": s.id,
                "type": "directive", "subject": "hi", "body": { "x": 1 }
            }),
        )
        .await;
    assert_eq!(ok(&ack)["mail"]["toSessionId"], s.id);
    mobile.expect(&["mail:received"]).await;
    ui.expect(&["mail:received"]).await;
    err(
        &mobile
            .call(
                "mail:send",
                json!({ "projectId": a.id, "fromSessionId": "u", "type": "nope", "subject": "x" }),
            )
            .await,
        "VALIDATION_ERROR",
    );
    err(&mobile.call("mail:send", json!({ "projectId": a.id, "fromSessionId": "u", "type": "query", "subject": "x", "extra": 1 })).await, "VALIDATION_ERROR");
    err(
        &mobile
            .call(
                "mail:send",
                json!({ "projectId": b.id, "fromSessionId": "u", "type": "query", "subject": "x" }),
            )
            .await,
        "FORBIDDEN",
    );
    err(&ui.call("mail:send", json!({ "projectId": a.id, "fromSessionId": "u", "type": "query", "subject": "x", "toSessionId": "sess_none" })).await, "NOT_FOUND");

    // session:spawn — same body as POST /api/sessions/spawn.
    let ack = mobile
        .call(
            "session:spawn",
            json!({ "projectId": a.id, "taskIds": [t.id], "idempotencyKey": "k1" }),
        )
        .await;
    ok(&ack);
    let spawned = ack["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(ack["session"]["status"], "spawning");
    let again = mobile
        .call(
            "session:spawn",
            json!({ "projectId": a.id, "taskIds": [t.id], "idempotencyKey": "k1" }),
        )
        .await;
    assert_eq!(
        ok(&again)["sessionId"],
        spawned,
        "same idempotency key, same answer"
    );
    // Spawn's own errors keep upstream's snake_case codes, as over HTTP.
    err(
        &mobile
            .call("session:spawn", json!({ "projectId": a.id }))
            .await,
        "invalid_task_ids",
    );
    err(
        &ui.call("session:spawn", json!({ "taskIds": [t.id] })).await,
        "missing_project_id",
    );
    // On /mobile the project is implied.
    let ack = mobile
        .call("session:spawn", json!({ "taskIds": [t.id] }))
        .await;
    assert_eq!(ok(&ack)["session"]["projectId"], a.id);
    err(
        &mobile
            .call(
                "session:spawn",
                json!({ "projectId": b.id, "taskIds": [t.id] }),
            )
            .await,
        "FORBIDDEN",
    );
    err(
        &ui.call(
            "session:spawn",
            json!({ "projectId": a.id, "taskIds": [t.id], "idempotencyKey": 5 }),
        )
        .await,
        "VALIDATION_ERROR",
    );

    // session:stop
    let ack = mobile
        .call("session:stop", json!({ "sessionId": spawned }))
        .await;
    assert_eq!(ok(&ack)["session"]["status"], "stopped");
    err(
        &mobile.call("session:stop", json!({})).await,
        "VALIDATION_ERROR",
    );
    err(
        &mobile
            .call("session:stop", json!({ "sessionId": "sess_none" }))
            .await,
        "NOT_FOUND",
    );
    err(
        &mobile
            .call("session:stop", json!({ "sessionId": other.id }))
            .await,
        "FORBIDDEN",
    );

    // session:reply-input
    ask(api, &s.id, "go?").await;
    let ack = ui
        .call(
            "session:reply-input",
            json!({ "sessionId": s.id, "message": "go" }),
        )
        .await;
    assert_eq!(ok(&ack)["mail"]["type"], "directive");
    assert_eq!(ack["session"]["needsInput"]["active"], false);
    err(
        &ui.call("session:reply-input", json!({ "sessionId": s.id }))
            .await,
        "VALIDATION_ERROR",
    );
    err(
        &ui.call(
            "session:reply-input",
            json!({ "sessionId": s.id, "message": "  " }),
        )
        .await,
        "VALIDATION_ERROR",
    );
    err(
        &ui.call("session:reply-input", json!({ "message": "x" }))
            .await,
        "VALIDATION_ERROR",
    );
    err(
        &ui.call(
            "session:reply-input",
            json!({ "sessionId": "sess_none", "message": "x" }),
        )
        .await,
        "NOT_FOUND",
    );
    err(
        &ui.call(
            "session:reply-input",
            json!({ "sessionId": spawned, "message": "x" }),
        )
        .await,
        "CONFLICT",
    );
    err(
        &mobile
            .call(
                "session:reply-input",
                json!({ "sessionId": other.id, "message": "x" }),
            )
            .await,
        "FORBIDDEN",
    );

    // Unknown events get an error ack too.
    err(&ui.call("no:such-event", json!({})).await, "NOT_FOUND");
}

/// The seam: a client that was away while 500 events happened reconnects with `lastSeq`; it
/// gets exactly those 500 in order, then live events, with nothing twice — also when live
/// events are committed while its replay is being sent.
#[tokio::test]
async fn reconnect_replays_the_gap_then_live_events() {
    let server = TestServer::start().await;
    let api = server.api().clone();
    let addr = server.addr();
    let p = project(&api, "replay").await;

    let mut phone = Sio::connect(addr, "/mobile", json!({ "projectId": p.id }), None)
        .await
        .unwrap();
    task(&api, &p.id, "seen").await;
    let seen = phone.expect(&["task:created"]).await;
    let last_seq = seen[0]["seq"].as_u64().unwrap();
    phone.close().await;

    many_tasks(&api, &p.id, 500).await;

    // Reconnect while more events are being written.
    let writer = {
        let (api, project) = (api.clone(), p.id.clone());
        tokio::spawn(async move { many_tasks(&api, &project, 50).await })
    };
    let mut phone = Sio::connect(
        addr,
        "/mobile",
        json!({ "projectId": p.id, "lastSeq": last_seq }),
        None,
    )
    .await
    .unwrap();
    writer.await.unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 550 {
        let (name, data) = phone.event().await;
        assert_eq!(name, "task:created", "{data}");
        check_envelope(&name, &data);
        seqs.push(data["seq"].as_u64().unwrap());
    }
    let want: Vec<u64> = (last_seq + 1..=last_seq + 550).collect();
    assert_eq!(seqs, want, "every event once, in order");
    phone.quiet().await;

    // And live from here on.
    task(&api, &p.id, "live").await;
    let live = phone.expect(&["task:created"]).await;
    assert_eq!(live[0]["seq"], last_seq + 551);

    // A client that saw everything gets nothing replayed.
    let mut fresh = Sio::connect(
        addr,
        "/mobile",
        json!({ "projectId": p.id, "lastSeq": last_seq + 551 }),
        None,
    )
    .await
    .unwrap();
    fresh.quiet().await;
}

#[tokio::test]
async fn a_gap_older_than_the_journal_is_not_recovered() {
    // 50 events per project are kept (Redis trims approximately, by whole stream nodes of 100:
    // after 300 events at most the last 100 or so remain; seq 11 is gone on both backends).
    let server = CustomServer::start(|c| c.journal_capacity = 50).await;
    let api = server.api();
    let p = project(&api, "small journal").await;
    many_tasks(&api, &p.id, 300).await;

    let mut phone = Sio::connect(
        server.addr,
        "/mobile",
        json!({ "projectId": p.id, "lastSeq": 10 }),
        None,
    )
    .await
    .unwrap();
    let (name, notice) = phone.event().await;
    assert_eq!(name, "replay:incomplete");
    assert_eq!(
        notice,
        json!({ "recovered": false, "projectId": p.id, "headSeq": 300, "lastSeq": 10 })
    );
    phone.quiet().await;
    // The answer is state:sync; live events continue after its heads.
    let ack = phone.call_bare("state:sync").await;
    assert_eq!(ok(&ack)["seqs"][&p.id], 300);
    assert_eq!(ack["tasks"].as_array().unwrap().len(), 300);
    task(&api, &p.id, "after").await;
    assert_eq!(phone.expect(&["task:created"]).await[0]["seq"], 301);

    // Within the journal it still works.
    let mut ok_phone = Sio::connect(
        server.addr,
        "/mobile",
        json!({ "projectId": p.id, "lastSeq": 280 }),
        None,
    )
    .await
    .unwrap();
    for seq in 281..=301 {
        assert_eq!(ok_phone.expect(&["task:created"]).await[0]["seq"], seq);
    }
    ok_phone.quiet().await;

    let ack = phone.call("events:replay", json!({ "afterSeq": 5 })).await;
    assert_eq!(ok(&ack)["recovered"], false);
    assert_eq!(ack["headSeq"], 301);
    assert_eq!(ack["events"], json!([]));
    server.stop().await;
}

/// Two servers on one Redis: a phone connected to B gets what is written through A, once, and
/// its reconnect replay comes from the shared journal.
#[tokio::test]
async fn two_instances_on_one_redis() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = common::redis::RedisServer::start(redis_dir.path());
    let url = redis.url();
    let key = redis_dir.path().join("hash-key");
    let a = CustomServer::on_redis(&url, &key).await;
    let b = CustomServer::on_redis(&url, &key).await;
    let (api_a, api_b) = (a.api(), b.api());
    let p = project(&api_a, "shared").await;
    assert_eq!(api_b.get_project(&p.id).await.unwrap(), p);

    let mut phone = Sio::connect(b.addr, "/mobile", json!({ "projectId": p.id }), None)
        .await
        .unwrap();
    let mut desk = Sio::connect(a.addr, "/ui", json!({}), None).await.unwrap();
    let t = task(&api_a, &p.id, "written on A").await;
    let got = phone.expect(&["task:created"]).await;
    assert_eq!(got[0]["data"], common::to_json(&t));
    desk.expect(&["task:created"]).await;
    task(&api_b, &p.id, "written on B").await;
    let again = phone.expect(&["task:created"]).await;
    assert_eq!(again[0]["seq"], got[0]["seq"].as_u64().unwrap() + 1);
    desk.expect(&["task:created"]).await;
    phone.quiet().await;
    desk.quiet().await;

    let last_seq = again[0]["seq"].as_u64().unwrap();
    phone.close().await;
    many_tasks(&api_a, &p.id, 30).await;
    let mut phone = Sio::connect(
        b.addr,
        "/mobile",
        json!({ "projectId": p.id, "lastSeq": last_seq }),
        None,
    )
    .await
    .unwrap();
    for seq in last_seq + 1..=last_seq + 30 {
        assert_eq!(phone.expect(&["task:created"]).await[0]["seq"], seq);
    }
    phone.quiet().await;
    a.stop().await;
    b.stop().await;
}

/// A human answers from the phone: the agent's `mail/wait` gets the directive, a desktop
/// screen following the session gets `session:input`, `needsInput` is cleared and the timeline
/// shows the reply.
#[tokio::test]
async fn reply_input_reaches_the_agent_and_the_screens() {
    let server = TestServer::start().await;
    let api = server.api().clone();
    let addr = server.addr();
    let p = project(&api, "ask").await;
    let s = common::new_session(&api, &p.id, "asker").await;
    let bystander = common::new_session(&api, &p.id, "bystander").await;
    ask(&api, &s.id, "Which database?").await;

    // The agent is parked in mail/wait.
    let waiting = {
        let (api, id) = (api.clone(), s.id.clone());
        tokio::spawn(async move {
            let take = WaitMail {
                project_id: None,
                timeout: Some(10_000),
            };
            api.wait_and_ack_mail(&id, &take).await
        })
    };
    let mut desk = Sio::connect(addr, "/ui", json!({}), None).await.unwrap();
    ok(&desk
        .call("subscribe", json!({ "sessionIds": [s.id] }))
        .await);
    let mut desk_other = Sio::connect(addr, "/ui", json!({}), None).await.unwrap();
    ok(&desk_other
        .call("subscribe", json!({ "sessionIds": [bystander.id] }))
        .await);
    let mut phone = Sio::connect(addr, "/mobile", json!({ "projectId": p.id }), None)
        .await
        .unwrap();

    let ack = phone
        .call(
            "session:reply-input",
            json!({ "sessionId": s.id, "message": "Postgres, please" }),
        )
        .await;
    ok(&ack);
    let mail_id = ack["mail"]["id"].as_str().unwrap().to_owned();

    let got = tokio::time::timeout(WAIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, mail_id);
    assert_eq!(got[0].kind, "directive");
    assert_eq!(got[0].from_session_id, "user");
    assert_eq!(got[0].body["message"], "Postgres, please");
    assert_eq!(got[0].body["inReplyTo"], "Which database?");

    let names = [
        "session:appended",
        "session:updated",
        "mail:received",
        "session:input",
    ];
    let frames = desk.expect(&names).await;
    assert_eq!(frames[0]["data"]["timeline"][0]["type"], "user_reply");
    assert_eq!(frames[3]["data"]["sessionId"], s.id);
    assert_eq!(frames[3]["data"]["message"], "Postgres, please");
    assert_eq!(frames[3]["data"]["mailId"], mail_id);
    assert!(frames[3]["data"]["timestamp"].is_i64());
    phone.expect(&names).await;
    desk_other.quiet().await;

    let after = api.get_session(&s.id).await.unwrap();
    assert!(!after.needs_input.as_ref().unwrap().active);
    let last = after.timeline.last().unwrap();
    assert_eq!(last.kind, "user_reply");
    assert_eq!(last.message.as_deref(), Some("Postgres, please"));
}

/// `session:reply-input` from `client`; the ack.
async fn reply(client: &mut Sio, session: &str, message: &str) -> Value {
    client
        .call(
            "session:reply-input",
            json!({ "sessionId": session, "message": message }),
        )
        .await
}

/// What a reply would change: the session's record and how much mail its agent has.
async fn observed(api: &Client, session: &str) -> (Value, usize) {
    let record = api.get_session(session).await.unwrap();
    let mail = api.inbox(session, &[]).await.unwrap();
    (common::to_json(&record), mail.len())
}

/// A reply is typed into the agent's terminal, so scope `respond` must not be a way to send
/// keystrokes: a session that is not waiting is refused with `NOT_WAITING`, a reply with a line
/// break or a control character (an escape sequence, DEL, C1) with `VALIDATION_ERROR`, each
/// from the phone, and each leaves the session, its question and the agent's mailbox as they
/// were.
#[tokio::test]
async fn a_reply_is_refused_unless_the_session_waits_and_it_is_one_plain_line() {
    let server = TestServer::start().await;
    let api = server.api().clone();
    let p = project(&api, "ask").await;
    let s = common::new_session(&api, &p.id, "agent").await;
    let mut phone = Sio::connect(server.addr(), "/mobile", json!({ "projectId": p.id }), None)
        .await
        .unwrap();
    // Not waiting: refused, nothing changed.
    let before = observed(&api, &s.id).await;
    err(&reply(&mut phone, &s.id, "rm -rf ~").await, "NOT_WAITING");
    assert_eq!(observed(&api, &s.id).await, before);

    // Waiting: anything but one line of text is refused, and the question stays open.
    ask(&api, &s.id, "Which port?").await;
    let before = observed(&api, &s.id).await;
    for keys in [
        "8080\nrm -rf ~",
        "8080\r",
        "\u{1b}[201~rm -rf ~",
        "8080\u{3}",
        "8080\u{7f}",
        "\u{9b}31m",
        "a\tb",
    ] {
        err(&reply(&mut phone, &s.id, keys).await, "VALIDATION_ERROR");
        assert_eq!(
            observed(&api, &s.id).await,
            before,
            "{keys:?} changed something"
        );
    }
    assert_eq!(before.0["needsInput"]["active"], true);

    // One plain line is delivered, and answers the question: a second reply is refused.
    let ack = reply(&mut phone, &s.id, "8080, and ünïcode 🎉").await;
    assert_eq!(ok(&ack)["mail"]["body"]["message"], "8080, and ünïcode 🎉");
    let answered = observed(&api, &s.id).await;
    assert_eq!(answered.1, 1);
    err(&reply(&mut phone, &s.id, "8081").await, "NOT_WAITING");
    assert_eq!(observed(&api, &s.id).await, answered);
}

#[tokio::test]
async fn oversized_payloads_are_refused() {
    let server = CustomServer::start(|c| c.max_body_bytes = 4096).await;
    let mut ui = Sio::connect(server.addr, "/ui", json!({}), None)
        .await
        .unwrap();
    ok(&ui.call("subscribe", json!({ "sessionIds": ["a"] })).await);
    let big = "x".repeat(10_000);
    let ns = ui.ns.clone();
    ui.send(&format!(
        "2{ns},9{}",
        json!(["subscribe", { "sessionIds": [big] }])
    ))
    .await;
    assert!(
        ui.closed_by_server().await,
        "a frame over the cap closes the connection"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets() {
    let server = TestServer::start().await;
    let p = project(server.api(), "bye").await;
    let mut phone = Sio::connect(server.addr(), "/mobile", json!({ "projectId": p.id }), None)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < WAIT,
        "stopping does not wait on open sockets"
    );
    assert!(phone.closed_by_server().await);
}

/// A server whose Socket.IO heartbeat gives up on a silent client within half a second.
async fn quick_heartbeat() -> CustomServer {
    CustomServer::start(|c| {
        c.socketio_ping_interval_ms = 150;
        c.socketio_ping_timeout_ms = 300;
    })
    .await
}

/// Connected Socket.IO sockets, as `/metrics` counts them.
async fn socketio_clients(addr: std::net::SocketAddr) -> u64 {
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("maestro_socketio_clients "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the gauge is there")
}

#[tokio::test]
async fn the_heartbeat_keeps_live_clients_and_drops_silent_ones() {
    let server = quick_heartbeat().await;
    let mut live = Sio::connect(server.addr, "/ui", json!({}), None)
        .await
        .unwrap();
    let mut silent = Sio::connect(server.addr, "/ui", json!({}), None)
        .await
        .unwrap();
    // The live client answers every ping while it works; the silent one reads nothing.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        ok(&live.call("subscribe", json!({ "sessionIds": ["s"] })).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ok(&live.call("state:sync", json!({})).await);
    // What the silent client finds: pings it never answered, then the close.
    let mut pings = 0;
    let closed = loop {
        match tokio::time::timeout(WAIT, silent.ws.next()).await {
            Err(_) => break false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break true,
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => pings += 1,
            Ok(Some(Ok(_))) => {}
        }
    };
    assert!(
        closed,
        "a client that does not answer pings is disconnected"
    );
    assert_eq!(pings, 1, "one ping, unanswered, then the close");
    assert_eq!(
        socketio_clients(server.addr).await,
        1,
        "only the live socket is left"
    );
    server.stop().await;
}

/// Engine.IO over HTTP long-polling, by hand: what a `socket.io-client` with default options
/// does before it upgrades.
struct Polling {
    http: reqwest::Client,
    base: String,
    sid: String,
}

impl Polling {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let http = reqwest::Client::new();
        let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let open: Value =
            serde_json::from_str(open.strip_prefix('0').expect("open packet")).unwrap();
        assert_eq!(open["upgrades"], json!(["websocket"]));
        let sid = open["sid"].as_str().unwrap().to_owned();
        Self { http, base, sid }
    }

    fn url(&self) -> String {
        format!("{}&sid={}", self.base, self.sid)
    }

    async fn post(&self, packets: &[&str]) -> reqwest::StatusCode {
        let body = packets.join("\u{1e}");
        self.http
            .post(self.url())
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// One poll; the packets it returned.
    async fn get(&self) -> (reqwest::StatusCode, Vec<String>) {
        let res = tokio::time::timeout(WAIT, self.http.get(self.url()).send())
            .await
            .expect("poll answered in time")
            .unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        (status, body.split('\u{1e}').map(str::to_owned).collect())
    }
}

#[tokio::test]
async fn polling_then_upgrade_loses_nothing() {
    let server = TestServer::start().await;
    let p = project(server.api(), "upgrade").await;
    let poll = Polling::open(server.addr()).await;
    assert_eq!(
        poll.post(&[&format!("40/mobile,{}", json!({ "projectId": p.id }))])
            .await,
        200
    );
    let (status, packets) = poll.get().await;
    assert_eq!(status, 200);
    assert!(packets[0].starts_with("40/mobile,{\"sid\":"), "{packets:?}");
    // An event while polling, one queued but not fetched before the upgrade, and an ack.
    task(server.api(), &p.id, "while polling").await;
    let (_, packets) = poll.get().await;
    assert!(
        packets[0].starts_with("42/mobile,[\"task:created\""),
        "{packets:?}"
    );
    assert_eq!(poll.post(&["42/mobile,7[\"state:sync\"]"]).await, 200);
    task(server.api(), &p.id, "queued for polling").await;

    // The upgrade: probe, pause (a waiting poll ends with a noop), `5`.
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr(),
        poll.sid
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(probe, Message::text("3probe"));
    let mut polled = Vec::new();
    loop {
        let (status, packets) = poll.get().await;
        assert_eq!(status, 200);
        if packets == ["6"] {
            break;
        }
        polled.extend(packets);
    }
    ws.send(Message::text("5")).await.unwrap();
    task(server.api(), &p.id, "after the upgrade").await;

    // Whatever polling did not fetch arrives over the WebSocket, in order, then live events.
    let mut got = polled;
    while got.iter().filter(|p| p.contains("task:created")).count() < 2 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg
            && t.as_str() != "2"
        {
            got.push(t.to_string());
        }
    }
    let titles: Vec<&str> = got
        .iter()
        .filter(|p| p.contains("task:created"))
        .map(|p| {
            if p.contains("queued for polling") {
                "queued"
            } else if p.contains("after the upgrade") {
                "after"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(titles, ["queued", "after"], "{got:?}");
    assert!(
        got.iter()
            .any(|p| p.starts_with("43/mobile,7[{\"ok\":true") || p.starts_with("43/mobile,7[{")),
        "the ack of the call made while polling: {got:?}"
    );
    // Polling is over for this session.
    let (status, _) = poll.get().await;
    assert_eq!(status, 400);
    let _ = ws.close(None).await;
    server.stop().await;
}

#[tokio::test]
async fn engine_io_refuses_what_it_does_not_speak() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/", server.addr());
    let code = |res: reqwest::Response| async move {
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        (status.as_u16(), body["code"].as_u64().unwrap())
    };
    let get = |q: &str| http.get(format!("{base}?{q}")).send();
    assert_eq!(
        code(get("EIO=3&transport=polling").await.unwrap()).await,
        (400, 5)
    );
    assert_eq!(
        code(get("EIO=4&transport=carrier-pigeon").await.unwrap()).await,
        (400, 0)
    );
    assert_eq!(
        code(get("EIO=4&transport=polling&sid=nope").await.unwrap()).await,
        (400, 1)
    );
    let post = http
        .post(format!("{base}?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(post).await, (400, 2));
    // A WebSocket request that is not an upgrade.
    assert_eq!(
        code(get("EIO=4&transport=websocket").await.unwrap()).await,
        (400, 3)
    );
    server.stop().await;
}

async fn next(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
}

/// A second WebSocket for a session that one is taking over (or already took over) gets its
/// handshake and is closed at once, as from the reference server; the first carries on. It used
/// to be refused with HTTP 400 after the upgrade (a client sees an error, not a close), and
/// during the probe it was taken as a second probe of the same session.
#[tokio::test]
async fn a_second_websocket_for_one_session_is_closed() {
    let server = TestServer::start().await;
    let poll = Polling::open(server.addr()).await;
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr(),
        poll.sid
    );
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut during, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert!(
        matches!(next(&mut during).await, Some(Ok(Message::Close(_)))),
        "a second probe is closed"
    );
    first.send(Message::text("2probe")).await.unwrap();
    assert_eq!(
        next(&mut first).await.unwrap().unwrap(),
        Message::text("3probe")
    );
    first.send(Message::text("5")).await.unwrap();
    let (mut after, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert!(
        matches!(next(&mut after).await, Some(Ok(Message::Close(_)))),
        "a WebSocket after the upgrade is closed"
    );
    // The session is the first one's.
    first.send(Message::text("2still")).await.unwrap();
    loop {
        match next(&mut first).await.unwrap().unwrap() {
            Message::Text(t) if t.as_str() == "2" => continue,
            other => {
                assert_eq!(other, Message::text("3still"));
                break;
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_polling_client_that_goes_away_is_forgotten() {
    let server = quick_heartbeat().await;

    let poll = Polling::open(server.addr).await;
    assert_eq!(poll.post(&["40/ui,{}"]).await, 200);
    let (_, packets) = poll.get().await;
    assert!(packets[0].starts_with("40/ui,"), "{packets:?}");
    assert_eq!(socketio_clients(server.addr).await, 1);
    // It stops polling (no GET, no pong): gone after the ping interval and timeout.
    let deadline = tokio::time::Instant::now() + WAIT;
    while socketio_clients(server.addr).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session is never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = poll.get().await;
    assert_eq!(status, 400, "the session id is no longer known");
    server.stop().await;
}
