//! The live terminal (`docs/runners.md`, "The terminal protocol") against a real server: a
//! host connection streams output, viewers watch and type through real WebSocket clients, and
//! what reaches the host is read from its socket.
//!
//! Every wait is on a message (bounded by [`WAIT`]); "nothing reached the host" is shown by
//! the next thing that does reach it being the expected one.

use crate::common;

use std::net::SocketAddr;
use std::num::NonZeroU16;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateSession, StopRequested};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A non-local caller (through a proxy on this machine) and its credential.
const PHONE_IP: &str = "203.0.113.9";

#[derive(Debug)]
enum Frame {
    Text(Value),
    Binary(Vec<u8>),
}

async fn session(api: &Client) -> String {
    let p = api
        .create_project(&CreateProject {
            name: Some("terminal".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    api.create_session(&CreateSession {
        project_id: Some(p.id),
        task_ids: Some(vec![]),
        name: Some("agent".into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

fn request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    req
}

/// A WebSocket on `path`, or the HTTP status that refused it.
async fn try_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    match tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(request(addr, path, headers)),
    )
    .await
    .expect("no answer in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
    try_connect(addr, path, headers)
        .await
        .unwrap_or_else(|status| panic!("{path} refused with {status}"))
}

/// A host connection that said hello with this size, once the server has taken the hello
/// (a probe viewer saw the `snapshot` it announces).
async fn host(addr: SocketAddr, session: &str, cols: u16, rows: u16) -> Ws {
    let (mut probe, _, _) = viewer(addr, session, &[]).await;
    let mut ws = connect(addr, &format!("/api/sessions/{session}/terminal/host"), &[]).await;
    send_json(
        &mut ws,
        json!({ "type": "hello", "cols": cols, "rows": rows }),
    )
    .await;
    loop {
        if let Frame::Text(v) = next(&mut probe).await
            && v["type"] == "snapshot"
        {
            break;
        }
    }
    ws
}

/// A viewer, its hello and the screen that followed it.
async fn viewer(addr: SocketAddr, session: &str, headers: &[(&str, &str)]) -> (Ws, Value, Vec<u8>) {
    let mut ws = connect(addr, &format!("/api/sessions/{session}/terminal"), headers).await;
    let hello = text(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let screen = binary(&mut ws).await;
    (ws, hello, screen)
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn next(ws: &mut Ws) -> Frame {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                return Frame::Text(serde_json::from_str(t.as_str()).expect("JSON text"));
            }
            Some(Ok(Message::Binary(b))) => return Frame::Binary(b.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

async fn text(ws: &mut Ws) -> Value {
    match next(ws).await {
        Frame::Text(v) => v,
        Frame::Binary(b) => panic!("expected text, got {} bytes", b.len()),
    }
}

async fn binary(ws: &mut Ws) -> Vec<u8> {
    match next(ws).await {
        Frame::Binary(b) => b,
        Frame::Text(v) => panic!("expected binary, got {v}"),
    }
}

/// Reads binary frames until `n` bytes arrived; they must be exactly `n`.
async fn read_bytes(ws: &mut Ws, n: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.extend(binary(ws).await);
    }
    assert_eq!(got.len(), n);
    got
}

async fn closed(ws: &mut Ws) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the connection stayed open")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
    }
}

fn parser(cols: u16, rows: u16) -> vt100::Parser {
    vt100::Parser::new(
        NonZeroU16::new(rows).unwrap(),
        NonZeroU16::new(cols).unwrap(),
        0,
    )
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Output with colours, cursor moves, erasing and enough lines to scroll.
fn busy_output() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..60 {
        out.extend(format!("\x1b[3{}mline {i}\x1b[0m plain text {i}\r\n", i % 8).into_bytes());
    }
    out.extend(b"\x1b[5;10H\x1b[1;4mbold underlined\x1b[0m\x1b[2K\x1b[7;1Hafter erase\x1b[3;20H");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_viewer_gets_the_screen_and_live_output_reaches_viewers_in_order() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let s = session(server.api()).await;
    let mut h = host(addr, &s, 80, 24).await;
    let (mut early, hello, _) = viewer(addr, &s, &[]).await;
    assert_eq!(hello["hostConnected"], true, "{hello}");
    assert_eq!(hello["canType"], true, "local trust may type: {hello}");
    assert_eq!(hello["controller"], Value::Null);
    let output = busy_output();
    h.send(Message::binary(output.clone())).await.unwrap();
    // The early viewer got it live, so the server has parsed it.
    assert_eq!(read_bytes(&mut early, output.len()).await, output);

    let (mut late, hello, screen) = viewer(addr, &s, &[]).await;
    assert_eq!(
        (hello["cols"].as_u64(), hello["rows"].as_u64()),
        (Some(80), Some(24))
    );
    let mut direct = parser(80, 24);
    direct.process(&output);
    let mut redrawn = parser(80, 24);
    redrawn.process(&screen);
    assert_eq!(redrawn.screen().contents(), direct.screen().contents());
    assert_eq!(
        redrawn.screen().contents_formatted(),
        direct.screen().contents_formatted()
    );
    assert_eq!(
        redrawn.screen().cursor_position(),
        direct.screen().cursor_position()
    );
    assert_ne!(hello["viewerId"], Value::Null);

    // Live output, to both, in order.
    let mut sent = Vec::new();
    for i in 0..50 {
        let chunk = format!("chunk {i}\r\n").into_bytes();
        sent.extend_from_slice(&chunk);
        h.send(Message::binary(chunk)).await.unwrap();
    }
    assert_eq!(read_bytes(&mut early, sent.len()).await, sent);
    assert_eq!(read_bytes(&mut late, sent.len()).await, sent);

    // A host resize reaches viewers; a second host connection replaces the first.
    send_json(&mut h, json!({ "type": "resize", "cols": 100, "rows": 30 })).await;
    for v in [&mut early, &mut late] {
        assert_eq!(
            text(v).await,
            json!({ "type": "resize", "cols": 100, "rows": 30 })
        );
    }
    let mut second = host(addr, &s, 100, 30).await;
    closed(&mut h).await;
    for v in [&mut early, &mut late] {
        assert_eq!(
            text(v).await,
            json!({ "type": "resize", "cols": 100, "rows": 30 })
        );
        assert_eq!(text(v).await, json!({ "type": "snapshot" }));
    }
    second.send(Message::binary(&b"fresh"[..])).await.unwrap();
    for v in [&mut early, &mut late] {
        assert_eq!(binary(v).await, b"fresh");
    }
    send_json(
        &mut second,
        json!({ "type": "exit", "code": 0, "signal": null }),
    )
    .await;
    assert_eq!(
        text(&mut late).await,
        json!({ "type": "exit", "code": 0, "signal": null })
    );
    second.close(None).await.unwrap();
    assert_eq!(
        text(&mut late).await,
        json!({ "type": "host", "connected": false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sessions_get_404_before_upgrading() {
    let server = TestServer::start().await;
    for path in [
        "/api/sessions/sess_nope/terminal",
        "/api/sessions/sess_nope/terminal/host",
    ] {
        assert_eq!(
            try_connect(server.addr(), path, &[]).await.err(),
            Some(404),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_does_not_slow_the_host_and_is_resynchronised() {
    const TOTAL: usize = 10 * 1024 * 1024;
    let server = TestServer::start().await;
    let addr = server.addr();
    let s = session(server.api()).await;
    let mut h = host(addr, &s, 80, 24).await;
    // The stalled viewer's socket has a small receive buffer, so the server's writes to it
    // back up at once.
    let stalled_tcp = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(addr).await.unwrap()
    };
    let (mut stalled, _) = tokio_tungstenite::client_async(
        request(addr, &format!("/api/sessions/{s}/terminal"), &[]),
        MaybeTlsStream::Plain(stalled_tcp),
    )
    .await
    .unwrap();
    assert_eq!(text(&mut stalled).await["type"], "hello");
    binary(&mut stalled).await;
    let (mut fast, _, _) = viewer(addr, &s, &[]).await;
    // The reading viewer reports its progress: the test keeps the host at most WINDOW bytes
    // ahead of it, well within its queue, so it never falls behind however slow this machine
    // reads. The stalled viewer reads nothing meanwhile: if the server waited for it, the
    // host's sends would stop.
    const WINDOW: usize = 128 * 1024;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(TOTAL);
        while got.len() < TOTAL {
            got.extend(binary(&mut fast).await);
            progress_tx.send_replace(got.len());
        }
        (fast, got)
    });

    let mut output = Vec::with_capacity(TOTAL);
    let mut i = 0u64;
    while output.len() < TOTAL {
        output.extend(format!("line {i:09} {}\r\n", "x".repeat(50)).into_bytes());
        i += 1;
    }
    output.truncate(TOTAL);
    let sending = async {
        let mut sent = 0;
        for chunk in output.chunks(32 * 1024) {
            h.send(Message::binary(chunk.to_vec())).await.unwrap();
            sent += chunk.len();
            while sent - *progress.borrow_and_update() > WINDOW {
                progress.changed().await.unwrap();
            }
        }
    };
    tokio::time::timeout(WAIT * 6, sending)
        .await
        .expect("the host's sends did not complete while a viewer stalled");
    let (mut fast, got) = tokio::time::timeout(WAIT * 6, reader)
        .await
        .expect("the reading viewer did not get everything")
        .unwrap();
    assert!(got == output, "the reading viewer got every byte, in order");

    // The stalled viewer reads now: after what was already on its way, the screen afresh. It
    // may have been resynchronised more than once (a snapshot that found room in its socket,
    // then more output that did not); from the last snapshot on, it shows what the host shows.
    let mut direct = parser(80, 24);
    direct.process(&output);
    let mut redrawn: Option<vt100::Parser> = None;
    while redrawn
        .as_ref()
        .is_none_or(|p| p.screen().contents() != direct.screen().contents())
    {
        match next(&mut stalled).await {
            Frame::Text(v) if v["type"] == "snapshot" => {
                let mut fresh = parser(80, 24);
                fresh.process(&binary(&mut stalled).await);
                redrawn = Some(fresh);
            }
            Frame::Text(v) => assert!(
                ["resize", "host", "control"].contains(&v["type"].as_str().unwrap()),
                "{v}"
            ),
            Frame::Binary(live) => {
                if let Some(p) = redrawn.as_mut() {
                    p.process(&live);
                }
            }
        }
    }
    assert!(metric(addr, "maestro_terminal_resyncs_total").await >= 1);
    assert_eq!(
        metric(addr, "maestro_terminal_bytes_in_total").await,
        TOTAL as u64
    );
    // Then live output again, for both.
    h.send(Message::binary(&b"tail"[..])).await.unwrap();
    assert_eq!(binary(&mut stalled).await, b"tail");
    assert_eq!(binary(&mut fast).await, b"tail");
}

async fn create_token(addr: SocketAddr, scope: &str) -> String {
    create_token_with_id(addr, scope).await.1
}

/// A token of `scope`: its id and its secret.
async fn create_token_with_id(addr: SocketAddr, scope: &str) -> (String, String) {
    let body: Value = reqwest::Client::new()
        .post(format!("http://{addr}/api/auth/tokens"))
        .json(&json!({ "scope": scope, "name": format!("{scope} viewer") }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        body["id"].as_str().expect("an id").to_owned(),
        body["token"].as_str().expect("a token").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_credential_closes_its_terminal_connections() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let s = session(server.api()).await;
    let (id, token) = create_token_with_id(addr, "operate").await;
    let auth = format!("Bearer {token}");
    let remote = [
        ("cf-connecting-ip", PHONE_IP),
        ("authorization", auth.as_str()),
    ];
    let (mut local, hello, _) = viewer(addr, &s, &[]).await;
    assert_eq!(hello["hostConnected"], false);
    let mut h = connect(addr, &format!("/api/sessions/{s}/terminal/host"), &remote).await;
    assert_eq!(
        text(&mut local).await,
        json!({ "type": "host", "connected": true })
    );
    let (mut v, _, _) = viewer(addr, &s, &remote).await;
    let status = reqwest::Client::new()
        .delete(format!("http://{addr}/api/auth/tokens/{id}"))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    closed(&mut v).await;
    closed(&mut h).await;
    // Others stay: the local viewer hears the host leave.
    assert_eq!(
        text(&mut local).await,
        json!({ "type": "host", "connected": false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_viewer_cannot_type_and_nothing_reaches_the_host() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let s = session(server.api()).await;
    let read = format!("Bearer {}", create_token(addr, "read").await);
    let remote_read = [
        ("cf-connecting-ip", PHONE_IP),
        ("authorization", read.as_str()),
    ];
    // A read credential may not host.
    assert_eq!(
        try_connect(
            addr,
            &format!("/api/sessions/{s}/terminal/host"),
            &remote_read
        )
        .await
        .err(),
        Some(403)
    );
    // Nor may an anonymous remote caller watch.
    assert_eq!(
        try_connect(
            addr,
            &format!("/api/sessions/{s}/terminal"),
            &[("cf-connecting-ip", PHONE_IP)]
        )
        .await
        .err(),
        Some(401)
    );
    let mut h = host(addr, &s, 80, 24).await;
    let (mut reader, hello, _) = viewer(addr, &s, &remote_read).await;
    assert_eq!(hello["canType"], false, "{hello}");
    send_json(&mut reader, json!({ "type": "take-control" })).await;
    reader
        .send(Message::binary(&b"rm -rf /\r"[..]))
        .await
        .unwrap();
    send_json(
        &mut reader,
        json!({ "type": "resize", "cols": 10, "rows": 5 }),
    )
    .await;
    for _ in 0..3 {
        let e = text(&mut reader).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "{e}"
        );
    }
    // Watching still works.
    h.send(Message::binary(&b"still watching"[..]))
        .await
        .unwrap();
    assert_eq!(binary(&mut reader).await, b"still watching");
    // The first input the host ever gets is an operator's.
    let operate = format!("Bearer {}", create_token(addr, "operate").await);
    let remote_operate = [
        ("cf-connecting-ip", PHONE_IP),
        ("authorization", operate.as_str()),
    ];
    let (mut op, hello, _) = viewer(addr, &s, &remote_operate).await;
    assert_eq!(hello["canType"], true);
    send_json(&mut op, json!({ "type": "take-control" })).await;
    assert_eq!(text(&mut op).await["controller"], hello["viewerId"]);
    op.send(Message::binary(&b"ok\r"[..])).await.unwrap();
    assert_eq!(binary(&mut h).await, b"ok\r");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_is_taken_refused_and_taken_back_by_the_desk() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let s = session(server.api()).await;
    let mut h = host(addr, &s, 80, 24).await;
    let (mut a, hello_a, _) = viewer(addr, &s, &[]).await;
    let (mut b, hello_b, _) = viewer(addr, &s, &[]).await;
    let (id_a, id_b) = (hello_a["viewerId"].clone(), hello_b["viewerId"].clone());
    assert_ne!(id_a, id_b);

    a.send(Message::binary(&b"x"[..])).await.unwrap();
    assert_eq!(text(&mut a).await["code"], "not_in_control");
    send_json(&mut a, json!({ "type": "take-control" })).await;
    for v in [&mut a, &mut b] {
        assert_eq!(
            text(v).await,
            json!({ "type": "control", "controller": id_a })
        );
    }
    b.send(Message::binary(&b"from b"[..])).await.unwrap();
    assert_eq!(text(&mut b).await["code"], "not_in_control");
    send_json(&mut b, json!({ "type": "resize", "cols": 90, "rows": 20 })).await;
    assert_eq!(text(&mut b).await["code"], "not_in_control");
    a.send(Message::binary(&b"from a"[..])).await.unwrap();
    assert_eq!(binary(&mut h).await, b"from a");
    send_json(&mut a, json!({ "type": "resize", "cols": 90, "rows": 20 })).await;
    assert_eq!(
        text(&mut h).await,
        json!({ "type": "resize", "cols": 90, "rows": 20 })
    );

    // Typing at the desk takes control back.
    send_json(&mut h, json!({ "type": "control", "controller": "desk" })).await;
    for v in [&mut a, &mut b] {
        assert_eq!(
            text(v).await,
            json!({ "type": "control", "controller": "desk" })
        );
    }
    a.send(Message::binary(&b"late"[..])).await.unwrap();
    assert_eq!(text(&mut a).await["code"], "not_in_control");

    // B takes it, and leaving hands it back to nobody.
    send_json(&mut b, json!({ "type": "take-control" })).await;
    for v in [&mut a, &mut b] {
        assert_eq!(
            text(v).await,
            json!({ "type": "control", "controller": id_b })
        );
    }
    b.close(None).await.unwrap();
    assert_eq!(
        text(&mut a).await,
        json!({ "type": "control", "controller": null })
    );
    // Nothing else reached the host.
    send_json(&mut a, json!({ "type": "take-control" })).await;
    text(&mut a).await;
    a.send(Message::binary(&b"last"[..])).await.unwrap();
    assert_eq!(binary(&mut h).await, b"last");
}

/// Two servers on one Redis: a viewer on B watches the host on A and types into it; a stop
/// request emitted through the shared store reaches the host on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_servers_on_one_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = common::redis::RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    // Servers sharing a store share its hash key.
    let key = dir.path().join("hash-key");
    let on_redis = |c: &mut maestro_server::Config| {
        c.redis_url = Some(url.clone());
        c.hash_key_file = Some(key.clone());
    };
    let a = TestServer::start_with(on_redis).await;
    let b = TestServer::start_with(on_redis).await;
    let s = session(a.api()).await;
    let mut h = host(a.addr(), &s, 60, 20).await;
    h.send(Message::binary(&b"\x1b[31mhello from A\x1b[0m\r\n"[..]))
        .await
        .unwrap();

    // The viewer on B: whatever B knew at first, the screen of A's host follows.
    let (mut v, hello, first) = viewer(b.addr(), &s, &[]).await;
    let id = hello["viewerId"].clone();
    let mut screen = parser(60, 20);
    screen.process(&first);
    let mut host_connected = hello["hostConnected"] == true;
    while !(screen.screen().contents().contains("hello from A") && host_connected) {
        match next(&mut v).await {
            Frame::Binary(bytes) => screen.process(&bytes),
            Frame::Text(m) if m["type"] == "snapshot" => screen = parser(60, 20),
            Frame::Text(m) if m["type"] == "host" => host_connected = m["connected"] == true,
            Frame::Text(_) => {}
        }
    }
    // Live output from A.
    h.send(Message::binary(&b"live line"[..])).await.unwrap();
    assert_eq!(binary(&mut v).await, b"live line");
    // Control, decided on A, and keystrokes to A's host.
    send_json(&mut v, json!({ "type": "take-control" })).await;
    assert_eq!(
        text(&mut v).await,
        json!({ "type": "control", "controller": id })
    );
    v.send(Message::binary(&b"echo hi\r"[..])).await.unwrap();
    assert_eq!(binary(&mut h).await, b"echo hi\r");

    // A stop request, emitted through the store by whichever server: the host on A gets it.
    let store = maestro_server::backends::redis::RedisStore::open(&url, "maestro:", 100).unwrap();
    let stop = StopRequested {
        session_id: s.clone(),
        grace_ms: 2500,
    };
    let sid = s.clone();
    maestro_server::ports::transact(&store, move |tx| {
        use maestro_server::ports::TxnExt;
        tx.emit("terminal-test", "session:stop_requested", &stop, Some(&sid));
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        text(&mut h).await,
        json!({ "type": "stop", "graceMs": 2500 })
    );
    maestro_server::ports::Store::close(&store).await;

    // The host leaves: the viewer on B hears it.
    h.close(None).await.unwrap();
    loop {
        if let Frame::Text(m) = next(&mut v).await
            && m["type"] == "host"
        {
            assert_eq!(m["connected"], false);
            break;
        }
    }
    a.stop().await;
    b.stop().await;
}

/// Reads a viewer's frames into a screen (reset on `snapshot`) until it shows `want`.
async fn until_screen_shows(
    v: &mut Ws,
    screen: &mut vt100::Parser,
    cols: u16,
    rows: u16,
    want: &str,
) {
    while !screen.screen().contents().contains(want) {
        match next(v).await {
            Frame::Binary(bytes) => screen.process(&bytes),
            Frame::Text(m) if m["type"] == "snapshot" => *screen = parser(cols, rows),
            Frame::Text(_) => {}
        }
    }
}

/// Redis restarts under two servers: the relay reconnects and resubscribes, and the viewer on B
/// gets A's screen again (a message lost meanwhile is made up for by a fresh snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_recovers_after_redis_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let redis = common::redis::RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    // Servers sharing a store share its hash key.
    let key = dir.path().join("hash-key");
    let on_redis = |c: &mut maestro_server::Config| {
        c.redis_url = Some(url.clone());
        c.hash_key_file = Some(key.clone());
    };
    let a = TestServer::start_with(on_redis).await;
    let b = TestServer::start_with(on_redis).await;
    let s = session(a.api()).await;
    let mut h = host(a.addr(), &s, 60, 20).await;
    h.send(Message::binary(&b"before\r\n"[..])).await.unwrap();
    let (mut v, _, first) = viewer(b.addr(), &s, &[]).await;
    let mut screen = parser(60, 20);
    screen.process(&first);
    until_screen_shows(&mut v, &mut screen, 60, 20, "before").await;

    redis.kill();
    redis.restart();
    h.send(Message::binary(&b"after the restart\r\n"[..]))
        .await
        .unwrap();
    until_screen_shows(&mut v, &mut screen, 60, 20, "after the restart").await;
    a.stop().await;
    b.stop().await;
}
