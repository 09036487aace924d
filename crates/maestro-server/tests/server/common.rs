//! Harness shared by the integration tests.
//!
//! [`TestServer`] runs the real server (`maestro_server::run`) on an ephemeral loopback port with
//! its own temporary data directory. Tests talk to it the way real clients do: through the typed
//! [`maestro_client::Client`], through [`WsClient`] (upstream's raw WebSocket protocol), and —
//! for requests no well-behaved client sends (malformed JSON, oversize bodies, `%2e%2e` paths) —
//! through [`raw_http`], a minimal HTTP/1.1 client on a bare TCP socket.
//!
//! Waiting is always bounded ([`WAIT`]); nothing sleeps to synchronise.
//!
//! Ordering facts the assertions rely on: a mutation's events are handed to every live
//! subscriber before its HTTP response is written, and every WebSocket connection receives
//! them in commit order. So after a request returns, its frames are already queued for the
//! connection, and a frame that should not exist shows up ahead of the next expected one.

#![allow(dead_code)] // every test binary uses a different part of the harness

pub use maestro_testkit::redis;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use maestro_client::Client;
use maestro_protocol::ErrorBody;
use maestro_server::Config;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Upper bound on any single wait (a frame, a response, start-up, shutdown). Only a bound:
/// passing tests never wait it out, and CI machines under load sometimes need more than 5 s
/// (a cross-instance event through Redis once took longer there).
pub const WAIT: Duration = Duration::from_secs(10);

/// The configuration of a test server on `dir`: the local backend, or — when the suite runs
/// with `MAESTRO_TEST_BACKEND=redis` — a `redis-server` of the directory's own.
pub fn config_for(dir: &Path) -> Config {
    let mut config = Config::for_dir(dir);
    if redis::enabled() {
        config.redis_url = Some(redis::for_dir(dir).url());
    }
    config
}

/// A server running in this process on `127.0.0.1:<ephemeral>`.
pub struct TestServer {
    addr: SocketAddr,
    dir: PathBuf,
    /// Owned when the server made its own directory; deleted when the last owner drops it.
    tempdir: Option<TempDir>,
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    client: Client,
}

impl TestServer {
    /// Starts a server on a fresh temporary data directory.
    pub async fn start() -> Self {
        let tempdir = tempfile::tempdir().expect("create a temp dir");
        let mut server = Self::start_in(tempdir.path()).await;
        server.tempdir = Some(tempdir);
        server
    }

    /// Starts a server on `dir` (e.g. the directory of a server that was stopped); the caller
    /// keeps the directory alive.
    pub async fn start_in(dir: &Path) -> Self {
        Self::start_configured(dir, config_for(dir)).await
    }

    /// Starts a server on `dir` with an adjusted configuration; the caller keeps the directory
    /// alive.
    pub async fn start_in_with(dir: &Path, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = config_for(dir);
        adjust(&mut config);
        Self::start_configured(dir, config).await
    }

    /// Starts a server on a fresh temporary directory with an adjusted configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let tempdir = tempfile::tempdir().expect("create a temp dir");
        let mut config = config_for(tempdir.path());
        adjust(&mut config);
        let mut server = Self::start_configured(tempdir.path(), config).await;
        server.tempdir = Some(tempdir);
        server
    }

    async fn start_configured(dir: &Path, config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let token = CancellationToken::new();
        let mut task = tokio::spawn(maestro_server::run(config, listener, token.clone()));
        let client = Client::new(&format!("http://{addr}")).expect("client");
        // The listener is already bound, so this request waits in the backlog until the server
        // accepts it; it fails only if `run` gave up (then its error is the interesting part).
        tokio::select! {
            exited = &mut task => panic!("server exited during start-up: {exited:?}"),
            health = tokio::time::timeout(WAIT * 2, client.health()) => {
                match health {
                    Ok(Ok(h)) => assert_eq!(h.status, "ok"),
                    Ok(Err(e)) => {
                        let exited = tokio::time::timeout(WAIT, &mut task).await;
                        panic!("/health failed ({e}); server task: {exited:?}");
                    }
                    Err(_) => panic!("/health did not answer within {:?}", WAIT * 2),
                }
            }
        }
        Self {
            addr,
            dir: dir.to_path_buf(),
            tempdir: None,
            token,
            task: Some(task),
            client,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory the server keeps its data under (`Config::for_dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A typed client (a new connection pool each call, like a separate process would have).
    pub fn client(&self) -> Client {
        Client::new(&self.base_url()).expect("client")
    }

    /// The shared typed client.
    pub fn api(&self) -> &Client {
        &self.client
    }

    /// A legacy WebSocket client on `ws://127.0.0.1:<port>/`, ready to receive events.
    pub async fn ws(&self) -> WsClient {
        self.ws_at("/").await
    }

    /// A legacy WebSocket client on another path (upstream accepted upgrades on any path).
    pub async fn ws_at(&self, path: &str) -> WsClient {
        WsClient::connect(&format!("ws://{}{path}", self.addr)).await
    }

    /// Sends a request on a fresh connection with exactly these bytes as the body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> RawHttp {
        raw_http(self.addr, method, path, content_type, body.into()).await
    }

    /// Cancels the shutdown token and waits for `run` to return `Ok`. Returns the temporary
    /// directory (if this server owned one) so the caller can restart on it.
    pub async fn stop(mut self) -> Option<TempDir> {
        self.token.cancel();
        let task = self.task.take().expect("server task");
        tokio::time::timeout(WAIT * 3, task)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked")
            .expect("server returned an error");
        self.tempdir.take()
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// [`TestServer::restart`] with an adjusted configuration.
    pub async fn restart_with(self, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = self.dir.clone();
        let tempdir = self.stop().await;
        let mut config = config_for(&dir);
        adjust(&mut config);
        let mut server = Self::start_configured(&dir, config).await;
        server.tempdir = tempdir;
        server
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client of the legacy WebSocket protocol that checks every event frame it reads: the
/// envelope has exactly `{type, event, data, timestamp, seq, projectId}`, `type == event`, and
/// — while it receives everything (no subscription) — `seq` increases by exactly one per scope
/// (a project id, or `global` for `project:*`, whose `projectId` is null).
pub struct WsClient {
    stream: Ws,
    last_seq: HashMap<String, u64>,
    check_seq: bool,
}

impl WsClient {
    /// Connects, then does a ping/pong round trip: the server answers a ping only from the
    /// connection's event loop, which subscribes to the event stream before it starts, so after
    /// the pong no later event can be missed.
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connect timed out")
            .expect("websocket connect");
        let mut ws = Self {
            stream,
            last_seq: HashMap::new(),
            check_seq: true,
        };
        ws.assert_quiet().await;
        ws
    }

    /// Sends one JSON text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.stream
            .send(Message::text(value.to_string()))
            .await
            .expect("websocket send");
    }

    /// Sends a text frame verbatim (for non-JSON input).
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("websocket send");
    }

    /// The next JSON frame, or `None` if none arrives within `wait`.
    pub async fn try_next_frame(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let msg = match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("websocket closed by the server"),
                Ok(Some(Err(e))) => panic!("websocket error: {e}"),
                Ok(Some(Ok(msg))) => msg,
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(c) => panic!("websocket closed by the server: {c:?}"),
                _ => continue, // protocol-level ping/pong
            };
            let frame: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"));
            if frame.get("event").is_some() {
                self.check_envelope(&frame);
            }
            return Some(frame);
        }
    }

    /// The next JSON frame; panics if none arrives within [`WAIT`].
    pub async fn next_frame(&mut self) -> Value {
        match self.try_next_frame(WAIT).await {
            Some(frame) => frame,
            None => panic!("no websocket frame within {WAIT:?}"),
        }
    }

    /// Reads one frame per name and asserts they are these events, in this order.
    pub async fn expect_events(&mut self, names: &[&str]) -> Vec<Value> {
        let mut frames = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let frame = match self.try_next_frame(WAIT).await {
                Some(f) => f,
                None => panic!(
                    "expected events {names:?}; got only {:?} (nothing more within {WAIT:?})",
                    event_names(&frames)
                ),
            };
            let got = frame.get("event").and_then(Value::as_str);
            if got != Some(*name) {
                panic!(
                    "expected events {names:?}; frame #{i} was {frame}\n(after {:?})",
                    event_names(&frames)
                );
            }
            frames.push(frame);
        }
        frames
    }

    /// Reads `n` event frames in whatever order they come.
    pub async fn collect_events(&mut self, n: usize) -> Vec<Value> {
        let mut frames = Vec::with_capacity(n);
        while frames.len() < n {
            let frame = self.next_frame().await;
            assert!(
                frame.get("event").is_some(),
                "expected an event frame, got {frame}"
            );
            frames.push(frame);
        }
        frames
    }

    /// Sends `ping` and asserts that the very next frame is the `pong`: nothing was pending.
    ///
    /// The server's connection loop may answer a ping before forwarding an event that was
    /// already queued, so this alone can miss a stray event; the stray event then arrives
    /// ahead of the next expected one (and breaks the seq check), so a test that goes on to
    /// [`expect_events`](Self::expect_events) still catches it.
    pub async fn assert_quiet(&mut self) {
        self.send_json(&json!({ "type": "ping" })).await;
        let frame = self.next_frame().await;
        assert_eq!(
            frame["type"], "pong",
            "expected no pending frame, got {frame}"
        );
        assert_eq!(keys(&frame), set(&["type", "timestamp"]), "pong: {frame}");
        assert!(frame["timestamp"].is_i64(), "pong timestamp: {frame}");
    }

    /// Subscribes to `session_ids` and returns the `subscribed` reply. While subscribed, seq
    /// gaps are expected (filtered events), so seq checking pauses.
    pub async fn subscribe(&mut self, session_ids: &[&str]) -> Value {
        self.send_json(&json!({ "type": "subscribe", "sessionIds": session_ids }))
            .await;
        let reply = self.next_frame().await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert_eq!(reply["sessionIds"], json!(session_ids), "{reply}");
        assert_eq!(
            keys(&reply),
            set(&["type", "sessionIds", "timestamp"]),
            "{reply}"
        );
        self.check_seq = false;
        reply
    }

    /// Removes the subscription; seq checking resumes from the next frame of each scope.
    pub async fn unsubscribe(&mut self) -> Value {
        self.send_json(&json!({ "type": "unsubscribe" })).await;
        let reply = self.next_frame().await;
        assert_eq!(keys(&reply), set(&["type", "timestamp"]), "{reply}");
        assert_eq!(reply["type"], "unsubscribed", "{reply}");
        self.check_seq = true;
        self.last_seq.clear();
        reply
    }

    /// The last seq seen in `scope` (a project id or `global`).
    pub fn last_seq(&self, scope: &str) -> Option<u64> {
        self.last_seq.get(scope).copied()
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    fn check_envelope(&mut self, frame: &Value) {
        assert_eq!(
            keys(frame),
            set(&["type", "event", "data", "timestamp", "seq", "projectId"]),
            "envelope fields: {frame}"
        );
        assert_eq!(frame["type"], frame["event"], "type != event: {frame}");
        assert!(frame["timestamp"].is_i64(), "timestamp: {frame}");
        let event = frame["event"].as_str().expect("event name");
        let seq = frame["seq"].as_u64().expect("seq is a positive integer");
        assert!(seq >= 1, "seq starts at 1: {frame}");
        let scope = match &frame["projectId"] {
            Value::Null => {
                assert!(
                    event.starts_with("project:")
                        || event.starts_with("runner:")
                        || event.starts_with("notify:machine_"),
                    "only project:*, runner:* and machine events are global: {frame}"
                );
                "global".to_owned()
            }
            Value::String(p) => {
                assert!(
                    !event.starts_with("project:"),
                    "project:* events are global: {frame}"
                );
                p.clone()
            }
            other => panic!("projectId must be a string or null, got {other}"),
        };
        if self.check_seq {
            if let Some(last) = self.last_seq.get(&scope) {
                assert_eq!(
                    seq,
                    last + 1,
                    "seq of scope {scope} must be gap-free and increasing: {frame}"
                );
            }
            self.last_seq.insert(scope, seq);
        }
    }
}

/// A token of `scope`, made with the owner token of an `AUTH=required` server.
pub async fn token(server: &TestServer, scope: &str) -> String {
    let owner = std::fs::read_to_string(server.dir().join("data").join("owner-token")).unwrap();
    let admin = server.client().with_token(owner.trim());
    let made = admin
        .raw(
            maestro_client::Method::POST,
            "/api/auth/tokens",
            Some(&json!({ "scope": scope, "name": format!("{scope} test") })),
        )
        .await
        .unwrap();
    assert_eq!(made.status.as_u16(), 201, "{:?}", made.body);
    made.body["token"].as_str().unwrap().to_owned()
}

/// Creates a session named `name` in `project`, with no task.
pub async fn new_session(api: &Client, project: &str, name: &str) -> maestro_protocol::Session {
    api.create_session(&maestro_protocol::CreateSession {
        project_id: Some(project.to_owned()),
        task_ids: Some(vec![]),
        name: Some(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Creates a session named `name` in `project`, with no task; its id.
pub async fn named_session(api: &Client, project: &str, name: &str) -> String {
    new_session(api, project, name).await.id
}

/// The `event` names of frames.
pub fn event_names(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["event"].as_str().unwrap_or("<not an event>").to_owned())
        .collect()
}

/// The field names of a JSON object.
pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("expected an object, got {v}"))
        .keys()
        .cloned()
        .collect()
}

/// A set of field names.
pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Serialises an entity the way the server does, for comparing with frame payloads.
pub fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serialise")
}

/// Asserts that a typed-client call failed with this status and error `code`, in the one
/// error shape `{error: true, statusCode, code, message, details?}`; returns the body.
#[track_caller]
pub fn api_err<T: std::fmt::Debug>(
    res: Result<T, maestro_client::Error>,
    status: u16,
    code: &str,
) -> ErrorBody {
    match res {
        Err(maestro_client::Error::Api { status: s, body }) => {
            assert_eq!(s.as_u16(), status, "status; body: {body:?}");
            assert_eq!(body.code, code, "code; body: {body:?}");
            assert!(body.error, "error flag; body: {body:?}");
            assert_eq!(body.status_code, status, "statusCode; body: {body:?}");
            assert!(!body.message.is_empty(), "message; body: {body:?}");
            body
        }
        other => panic!("expected HTTP {status} {code}, got {other:?}"),
    }
}

/// Asserts the one error shape on a raw JSON body.
#[track_caller]
pub fn assert_error_body(body: &Value, status: u16, code: &str) {
    let k = keys(body);
    assert!(
        k == set(&["error", "statusCode", "code", "message"])
            || k == set(&["error", "statusCode", "code", "message", "details"]),
        "error shape: {body}"
    );
    assert_eq!(body["error"], true, "{body}");
    assert_eq!(body["statusCode"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// Everything the API lists, for "a failed request changed nothing" checks.
pub async fn snapshot(client: &Client) -> Value {
    let projects = client.list_projects().await.expect("list projects");
    let tasks = client
        .list_tasks(&Default::default())
        .await
        .expect("list tasks");
    let sessions = client
        .list_sessions(&Default::default())
        .await
        .expect("list sessions");
    json!({ "projects": projects, "tasks": tasks, "sessions": sessions })
}

/// A response read by [`raw_http`].
#[derive(Debug)]
pub struct RawHttp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawHttp {
    /// The body as JSON; panics with the text if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`), body sent verbatim with a
/// `Content-Length`. The body is written concurrently with reading the answer, because for an
/// oversize body the server answers (413) and closes without reading it all.
pub async fn raw_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> RawHttp {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        // Write errors are expected when the server refuses the body early.
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
            let _ = wr.flush().await;
        }
        // Keep the write half open (dropping it half-closes the socket) until aborted.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT * 2, rd.read_to_end(&mut buf)).await;
    writer.abort();
    let complete = buf.windows(4).any(|w| w == b"\r\n\r\n");
    match read {
        Err(_) => panic!("no complete response within {:?}", WAIT * 2),
        // A reset after the answer arrived is fine; the bytes read so far are kept.
        Ok(Err(e)) if !complete => panic!("reading the response failed: {e}"),
        _ => {}
    }
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> RawHttp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &buf[split + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(rest.len());
        assert!(rest.len() >= len, "truncated body");
        rest[..len].to_vec()
    };
    RawHttp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&rest[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The JSON type of a value, as the golden comparison sees it.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Asserts that `actual` has the shape of `expected`: same JSON type everywhere, same field
/// names in every object, same array lengths; values themselves are not compared.
#[track_caller]
pub fn assert_same_shape(what: &str, expected: &Value, actual: &Value) {
    let mut diffs = Vec::new();
    shape_diff("$", expected, actual, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: shape differs from upstream:\n  {}\nexpected: {expected}\nactual:   {actual}",
        diffs.join("\n  ")
    );
}

fn shape_diff(path: &str, expected: &Value, actual: &Value, diffs: &mut Vec<String>) {
    let (te, ta) = (json_type(expected), json_type(actual));
    if te != ta {
        diffs.push(format!("{path}: expected {te}, got {ta}"));
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys().filter(|k| !a.contains_key(*k)) {
                diffs.push(format!("{path}.{k}: missing"));
            }
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                diffs.push(format!("{path}.{k}: unexpected field"));
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    shape_diff(&format!("{path}.{k}"), ev, av, diffs);
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                diffs.push(format!(
                    "{path}: expected {} items, got {}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                shape_diff(&format!("{path}[{i}]"), ev, av, diffs);
            }
        }
        _ => {}
    }
}
