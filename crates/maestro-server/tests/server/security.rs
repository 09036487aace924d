//! The trust boundary: every refusal on every entry point (REST, Engine.IO polling and
//! WebSocket, the legacy WebSocket), each shown refused *and* shown to change nothing; and the
//! credentials that open the door again (tokens, scopes, pairing, cookies, revocation).
//!
//! "Remote" requests are made from loopback with the header cloudflared adds
//! (`CF-Connecting-IP`), exactly how tunnel traffic reaches the server.

use crate::common;

use std::net::SocketAddr;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use maestro_server::config::AuthMode;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The address cloudflared says the client has.
const PHONE_IP: &str = "203.0.113.9";

/// One HTTP request with exactly these extra headers; `(status, headers, JSON body or Null)`.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::builder().build().unwrap();
    let mut req = client.request(method, format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("no answer in time")
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

fn remote(token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![("cf-connecting-ip", PHONE_IP.to_owned())];
    if let Some(t) = token {
        h.push(("authorization", format!("Bearer {t}")));
    }
    h
}

fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A WebSocket upgrade on `path` with these headers: `Ok(())` if it was accepted (101), else
/// the refusal's status.
async fn upgrade(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<(), u16> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("no answer in time")
    {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Socket.IO connection over WebSocket to `ns`: `Ok(socket)` once the namespace accepted,
/// `Err(message)` for a `connect_error` (or `Err("HTTP <status>")` when the upgrade was refused).
async fn sio(
    addr: SocketAddr,
    ns: &str,
    auth: Value,
    headers: &[(&str, &str)],
) -> Result<Ws, String> {
    let mut req = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    let mut ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            return Err(format!("HTTP {}", r.status().as_u16()));
        }
        Err(e) => panic!("websocket: {e}"),
    };
    let open = next_text(&mut ws).await.expect("open packet");
    assert!(open.starts_with('0'), "{open}");
    ws.send(Message::Text(format!("40{ns},{auth}").into()))
        .await
        .unwrap();
    loop {
        let text = next_text(&mut ws).await.expect("connect answer");
        if let Some(rest) = text.strip_prefix(&format!("40{ns},")) {
            assert!(rest.contains("sid"), "{text}");
            return Ok(ws);
        }
        if let Some(rest) = text.strip_prefix(&format!("44{ns},")) {
            let v: Value = serde_json::from_str(rest).unwrap();
            return Err(v["message"].as_str().unwrap().to_owned());
        }
    }
}

/// The next text message, answering pings; `None` when the connection closed.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("nothing within the wait");
        match msg {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::Text("3".into())).await.ok()?;
            }
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Waits until the server closes `ws`, ignoring events meanwhile; panics if it stays open.
async fn closed(ws: &mut Ws) {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the socket stayed open");
        match msg {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            // Engine.IO's close packet, or a namespace disconnect.
            Some(Ok(Message::Text(t))) if t.as_str() == "1" || t.starts_with("41") => return,
            Some(Ok(_)) => {}
        }
    }
}

async fn project_count(server: &TestServer) -> usize {
    server.api().list_projects().await.unwrap().len()
}

async fn create_token(server: &TestServer, scope: &str) -> (String, String) {
    let (status, _, body) = call(
        server.addr(),
        Method::POST,
        "/api/auth/tokens",
        &[],
        Some(json!({ "scope": scope, "name": format!("{scope} test") })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_foreign_origin_is_refused_on_every_entry_point_and_changes_nothing() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let evil = [("origin", "http://evil.example")];
    let before = project_count(&server).await;

    for method in [Method::GET, Method::OPTIONS] {
        let (status, _, _) = call(addr, method.clone(), "/api/projects", &evil, None).await;
        assert_eq!(status, 403, "{method}");
    }
    let (status, _, body) = call(
        addr,
        Method::POST,
        "/api/projects",
        &evil,
        Some(json!({ "name": "from a web page", "workingDir": "/tmp" })),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "FORBIDDEN");
    // A credential does not help a foreign page.
    let (_, token) = create_token(&server, "admin").await;
    let auth = format!("Bearer {token}");
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/api/projects",
        &[("origin", "http://evil.example"), ("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 403);
    // Engine.IO polling handshake, Socket.IO WebSocket, legacy WebSocket, static files.
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/socket.io/?EIO=4&transport=polling",
        &evil,
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        upgrade(addr, "/socket.io/?EIO=4&transport=websocket", &evil).await,
        Err(403)
    );
    assert_eq!(upgrade(addr, "/", &evil).await, Err(403));
    let (status, _, _) = call(addr, Method::GET, "/", &evil, None).await;
    assert_eq!(status, 403);

    assert_eq!(project_count(&server).await, before);
    // The desktop app and the server's own pages keep working.
    let own = format!("http://{addr}");
    for origin in ["tauri://localhost", own.as_str()] {
        let (status, _, _) = call(
            addr,
            Method::GET,
            "/api/projects",
            &[("origin", origin)],
            None,
        )
        .await;
        assert_eq!(status, 200, "{origin}");
    }
}

#[tokio::test]
async fn another_page_on_this_machine_is_not_the_owner() {
    // A dev server an agent just started on another localhost port: before, it passed the
    // Origin check, got local trust and could make a pairing and read its code.
    let server = TestServer::start().await;
    let addr = server.addr();
    let other = format!("http://127.0.0.1:{}", addr.port().wrapping_add(1).max(1));
    for origin in ["http://localhost:5173", other.as_str()] {
        let page = [("origin", origin)];
        let (status, headers, _) =
            call(addr, Method::OPTIONS, "/api/auth/pairings", &page, None).await;
        assert_eq!(status, 403, "{origin}");
        assert!(
            headers.get("access-control-allow-credentials").is_none(),
            "{origin}: credentialed CORS"
        );
        let (status, _, body) = call(
            addr,
            Method::POST,
            "/api/auth/pairings",
            &page,
            Some(json!({ "scope": "admin" })),
        )
        .await;
        assert_eq!(status, 403, "{origin}: {body}");
        assert!(body.get("code").is_none_or(|c| c == "FORBIDDEN"), "{body}");
        assert!(
            body.get("shortCode").is_none() && body.get("url").is_none(),
            "{body}"
        );
        assert_eq!(
            upgrade(addr, "/socket.io/?EIO=4&transport=websocket", &page).await,
            Err(403)
        );
    }
    // Nothing was paired: no pending pairing could be used.
    let (_, token) = create_token(&server, "admin").await;
    let auth = format!("Bearer {token}");
    let (status, _, devices) = call(
        addr,
        Method::GET,
        "/api/auth/devices",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(devices, json!([]));
}

#[tokio::test]
async fn a_simple_cross_site_write_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let before = project_count(&server).await;
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = server
            .raw(
                "POST",
                "/api/projects",
                Some(content_type),
                json!({ "name": "x", "workingDir": "/tmp" }).to_string(),
            )
            .await;
        assert_eq!(r.status, 415, "{content_type}");
        common::assert_error_body(&r.json(), 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    assert_eq!(project_count(&server).await, before);
}

#[tokio::test]
async fn a_foreign_host_is_refused_before_routing() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let port = addr.port();
    let rebinding = format!("evil.example:{port}");
    let host = [("host", rebinding.as_str())];
    let (status, _, body) = call(addr, Method::GET, "/api/projects", &host, None).await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["code"], "MISDIRECTED_REQUEST");
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/socket.io/?EIO=4&transport=polling",
        &host,
        None,
    )
    .await;
    assert_eq!(status, 421);
    assert_eq!(upgrade(addr, "/", &host).await, Err(421));
    let (status, _, _) = call(addr, Method::GET, "/", &host, None).await;
    assert_eq!(status, 421);
    // Every local name, with any port, is ours.
    for local in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
    ] {
        let (status, _, _) = call(
            addr,
            Method::GET,
            "/api/projects",
            &[("host", &local)],
            None,
        )
        .await;
        assert_eq!(status, 200, "{local}");
    }
}

#[tokio::test]
async fn allowed_hosts_and_the_external_url_are_answered_but_never_local() {
    let server = TestServer::start_with(|c| {
        c.external_url = Some("https://maestro.example.com".into());
        c.allowed_hosts = vec!["laptop.lan".into()];
    })
    .await;
    let addr = server.addr();
    for host in ["maestro.example.com", "laptop.lan:3000"] {
        // Answered (not 421), but a credential is needed: the name is not this machine's.
        let (status, _, _) =
            call(addr, Method::GET, "/api/projects", &[("host", host)], None).await;
        assert_eq!(status, 401, "{host}");
    }
}

#[tokio::test]
async fn a_proxied_request_needs_a_credential_on_every_entry_point() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let before = project_count(&server).await;
    let h = remote(None);
    let h = refs(&h);

    let (status, headers, body) = call(addr, Method::GET, "/api/projects", &h, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "UNAUTHORIZED");
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, _) = call(
        addr,
        Method::POST,
        "/api/projects",
        &h,
        Some(json!({ "name": "p", "workingDir": "/tmp" })),
    )
    .await;
    assert_eq!(status, 401);
    for path in ["/ready", "/metrics", "/ws-status", "/api/openapi.json"] {
        let (status, _, _) = call(addr, Method::GET, path, &h, None).await;
        assert_eq!(status, 401, "{path}");
    }
    assert_eq!(upgrade(addr, "/", &h).await, Err(401));
    // Engine.IO lets the connection open (the token may come in the handshake), but no
    // namespace accepts it without one.
    let refused = sio(addr, "/ui", json!({}), &h).await.err().unwrap();
    assert!(refused.starts_with("UNAUTHORIZED: "), "{refused}");
    // Every other proxy header takes local trust away just the same.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("cf-ray", "8a1b2c3d4e5f-LHR"),
    ] {
        let (status, _, _) = call(addr, Method::GET, "/api/projects", &[(name, value)], None).await;
        assert_eq!(status, 401, "{name}");
    }
    // A token in the query string is never read.
    let (_, token) = create_token(&server, "admin").await;
    let (status, _, _) = call(
        addr,
        Method::GET,
        &format!("/api/projects?token={token}"),
        &h,
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(project_count(&server).await, before);

    // The web app's shell is public: the phone must load it to pair.
    let (status, _, _) = call(addr, Method::GET, "/", &h, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tokens_work_remotely_within_their_scope_until_revoked() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let (read_id, read) = create_token(&server, "read").await;
    let (_, operate) = create_token(&server, "operate").await;

    // Listing shows no secret.
    let (status, _, list) = call(addr, Method::GET, "/api/auth/tokens", &[], None).await;
    assert_eq!(status, 200);
    let listed = list.to_string();
    assert!(!listed.contains(&read) && !listed.contains(&operate));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none())
    );

    let h = remote(Some(&read));
    let (status, _, _) = call(addr, Method::GET, "/api/projects", &refs(&h), None).await;
    assert_eq!(status, 200);
    // Last use and address are recorded.
    let (_, _, list) = call(addr, Method::GET, "/api/auth/tokens", &[], None).await;
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == read_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["lastAddress"], PHONE_IP);
    assert!(entry["lastUsedAt"].as_i64().is_some());

    // A read token cannot write, and nothing changes.
    let before = project_count(&server).await;
    let (status, _, body) = call(
        addr,
        Method::POST,
        "/api/projects",
        &refs(&h),
        Some(json!({ "name": "p", "workingDir": "/tmp" })),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(project_count(&server).await, before);
    // Nor create tokens, nor list them.
    let (status, _, _) = call(
        addr,
        Method::POST,
        "/api/auth/tokens",
        &refs(&remote(Some(&operate))),
        Some(json!({ "scope": "admin", "name": "escalate" })),
    )
    .await;
    assert_eq!(status, 403);

    // A socket on the read token, then the token is revoked: the socket closes at once and the
    // next request fails.
    let project = server
        .api()
        .create_project(&maestro_protocol::CreateProject {
            name: Some("p".into()),
            working_dir: Some("/tmp".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut socket = sio(
        addr,
        "/mobile",
        json!({ "token": read, "projectId": project.id }),
        &[("cf-connecting-ip", PHONE_IP)],
    )
    .await
    .expect("a read token may watch");
    let (status, _, _) = call(
        addr,
        Method::DELETE,
        &format!("/api/auth/tokens/{read_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    closed(&mut socket).await;
    let (status, _, _) = call(addr, Method::GET, "/api/projects", &refs(&h), None).await;
    assert_eq!(status, 401);
    // Nor on any other entry point: Engine.IO polling, a Socket.IO handshake, the legacy
    // WebSocket.
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/socket.io/?EIO=4&transport=polling",
        &refs(&h),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let refused = sio(
        addr,
        "/mobile",
        json!({ "token": read, "projectId": project.id }),
        &[("cf-connecting-ip", PHONE_IP)],
    )
    .await
    .err()
    .unwrap();
    assert!(refused.starts_with("UNAUTHORIZED"), "{refused}");
    assert_eq!(upgrade(addr, "/", &refs(&h)).await, Err(401));
    let (status, _, _) = call(
        addr,
        Method::DELETE,
        &format!("/api/auth/tokens/{read_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn socket_actions_follow_the_scope() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let (_, read) = create_token(&server, "read").await;
    let mut ws = sio(
        addr,
        "/ui",
        json!({ "token": read }),
        &[("cf-connecting-ip", PHONE_IP)],
    )
    .await
    .unwrap();
    ws.send(Message::Text(
        r#"42/ui,7["session:stop",{"sessionId":"sess_x"}]"#.into(),
    ))
    .await
    .unwrap();
    let ack = loop {
        let t = next_text(&mut ws).await.unwrap();
        if let Some(rest) = t.strip_prefix("43/ui,7") {
            break serde_json::from_str::<Value>(rest).unwrap();
        }
    };
    assert_eq!(ack[0]["ok"], false, "{ack}");
    assert_eq!(ack[0]["error"]["code"], "FORBIDDEN", "{ack}");
}

#[tokio::test]
async fn auth_required_takes_local_trust_away_and_the_owner_token_restores_it() {
    let server = TestServer::start_with(|c| c.auth = AuthMode::Required).await;
    let addr = server.addr();
    let (status, _, _) = call(addr, Method::GET, "/api/projects", &[], None).await;
    assert_eq!(status, 401);
    let owner = std::fs::read_to_string(server.dir().join("data/owner-token")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(server.dir().join("data/owner-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let auth = format!("Bearer {}", owner.trim());
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/api/projects",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_owner_token_is_replaced_at_every_start() {
    let server = TestServer::start().await;
    let path = server.dir().join("data/owner-token");
    let first = std::fs::read_to_string(&path).unwrap();
    let server = server.restart().await;
    let second = std::fs::read_to_string(&path).unwrap();
    assert_ne!(first, second);
    let addr = server.addr();
    for (token, expect) in [(first, 401), (second, 200)] {
        let h = remote(Some(token.trim()));
        let (status, _, _) = call(addr, Method::GET, "/api/projects", &refs(&h), None).await;
        assert_eq!(status, expect);
    }
}

/// Permission bits of `path`.
#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// What another user of the machine could read: the data directory is 0700 and every file the
/// server wrote in it is 0600, and no temp file is left behind.
#[cfg(unix)]
fn assert_data_dir_private(data: &std::path::Path) {
    assert_eq!(mode_of(data), 0o700, "{}", data.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "a temp file was left: {name}");
        if entry.file_type().unwrap().is_file() {
            assert_eq!(mode_of(&entry.path()), 0o600, "{name}");
            files.push(name);
        }
    }
    for expected in ["owner-token", "server-url", "hash-key"] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} in {files:?}"
        );
    }
    if !common::redis::enabled() {
        assert!(files.iter().any(|f| f == "maestro.redb"), "{files:?}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_fresh_server_keeps_its_data_dir_to_its_owner() {
    let server = TestServer::start().await;
    assert_data_dir_private(&server.dir().join("data"));
}

/// A data directory an older version (or a careless umask) left readable is closed at the next
/// start, files included, and the server still opens the same data.
#[cfg(unix)]
#[tokio::test]
async fn a_readable_data_dir_is_closed_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    let (status, _, body) = call(
        server.addr(),
        Method::POST,
        "/api/projects",
        &[],
        Some(json!({ "name": "kept", "workingDir": "/tmp" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    server.stop().await;
    let data = dir.path().join("data");
    let loosen = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    loosen(&data, 0o755);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            loosen(&path, 0o644);
        }
    }
    let server = TestServer::start_in(dir.path()).await;
    assert_data_dir_private(&data);
    assert_eq!(project_count(&server).await, 1, "the same data");
}

async fn new_pairing(server: &TestServer, body: Value) -> Value {
    let (status, _, body) = call(
        server.addr(),
        Method::POST,
        "/api/auth/pairings",
        &[],
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn pair(addr: SocketAddr, code: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    call(
        addr,
        Method::POST,
        "/api/auth/pair",
        &[("cf-connecting-ip", PHONE_IP)],
        Some(json!({ "code": code, "deviceName": "Pixel 8" })),
    )
    .await
}

fn cookie_header(headers: &reqwest::header::HeaderMap) -> (String, String) {
    let mut device = None;
    let mut csrf = None;
    for c in headers.get_all("set-cookie") {
        let c = c.to_str().unwrap();
        let pair = c.split(';').next().unwrap().to_owned();
        if c.starts_with("maestro_device=") {
            assert!(
                c.contains("HttpOnly") && c.contains("SameSite=Strict"),
                "{c}"
            );
            device = Some(pair);
        } else if c.starts_with("maestro_csrf=") {
            csrf = Some(pair.split_once('=').unwrap().1.to_owned());
        }
    }
    (device.expect("device cookie"), csrf.expect("csrf cookie"))
}

#[tokio::test]
async fn a_pairing_code_pairs_one_device_once() {
    let server = TestServer::start_with(|c| {
        c.external_url = Some("https://maestro.example.com".into());
    })
    .await;
    let addr = server.addr();
    let pairing = new_pairing(&server, json!({})).await;
    let code = pairing["code"].as_str().unwrap();
    assert!(code.len() >= 22, "at least 128 bits: {code}");
    assert_eq!(
        pairing["url"],
        format!("https://maestro.example.com/pair#c={code}")
    );
    assert_eq!(pairing["scope"], "respond");
    assert_eq!(pairing["shortCode"].as_str().unwrap().len(), 9);

    let (status, headers, paired) = pair(addr, code).await;
    assert_eq!(status, 200, "{paired}");
    assert!(paired.get("token").is_none(), "the token is a cookie only");
    assert_eq!(paired["scope"], "respond");
    assert_eq!(paired["deviceName"], "Pixel 8");
    let (device_cookie, csrf) = cookie_header(&headers);
    assert!(
        headers
            .get_all("set-cookie")
            .iter()
            .all(|c| c.to_str().unwrap().contains("Secure")),
        "https behind the external URL: Secure cookies"
    );
    assert_eq!(csrf, paired["csrf"].as_str().unwrap());

    // A second use gets 401, and no second device appears.
    let (status, _, body) = pair(addr, code).await;
    assert_eq!(status, 401, "{body}");
    let (_, _, devices) = call(addr, Method::GET, "/api/auth/devices", &[], None).await;
    assert_eq!(devices.as_array().unwrap().len(), 1);
    assert_eq!(devices[0]["name"], "Pixel 8");
    assert_eq!(devices[0]["scope"], "respond");

    // The cookie works for reads, and for writes only with the CSRF header.
    let with_cookie = [
        ("cf-connecting-ip", PHONE_IP),
        ("cookie", device_cookie.as_str()),
    ];
    let (status, _, me) = call(addr, Method::GET, "/api/auth/me", &with_cookie, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["kind"], "device");
    assert_eq!(me["csrf"], csrf.as_str());
    let project = server
        .api()
        .create_project(&maestro_protocol::CreateProject {
            name: Some("p".into()),
            working_dir: Some("/tmp".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let task = server
        .api()
        .create_task(&maestro_protocol::CreateTask {
            project_id: Some(project.id.clone()),
            title: Some("t".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let session = server
        .api()
        .create_session(&maestro_protocol::CreateSession {
            project_id: Some(project.id.clone()),
            task_ids: Some(vec![task.id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let mail = json!({
        "projectId": project.id, "fromSessionId": session.id, "toSessionId": session.id,
        "type": "directive", "subject": "hi", "body": { "message": "from the phone" }
    });
    let (status, _, body) = call(
        addr,
        Method::POST,
        "/api/mail",
        &with_cookie,
        Some(mail.clone()),
    )
    .await;
    assert_eq!(status, 403, "no CSRF header: {body}");
    let mut with_csrf = with_cookie.to_vec();
    with_csrf.push(("x-maestro-csrf", csrf.as_str()));
    let (status, _, body) = call(addr, Method::POST, "/api/mail", &with_csrf, Some(mail)).await;
    assert!(status < 300, "{status} {body}");
    // Respond is not operate.
    let (status, _, _) = call(
        addr,
        Method::POST,
        "/api/tasks",
        &with_csrf,
        Some(json!({ "projectId": project.id, "title": "t" })),
    )
    .await;
    assert_eq!(status, 403);

    // The device's socket closes when the device is revoked, and its cookie stops working.
    let mut socket = sio(
        addr,
        "/mobile",
        json!({ "projectId": project.id }),
        &with_cookie,
    )
    .await
    .expect("the cookie opens /mobile");
    let device_id = paired["deviceId"].as_str().unwrap();
    let (status, _, _) = call(
        addr,
        Method::DELETE,
        &format!("/api/auth/devices/{device_id}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    closed(&mut socket).await;
    let (status, _, _) = call(addr, Method::GET, "/api/auth/me", &with_cookie, None).await;
    assert_eq!(status, 401);
    // The audit counters saw it all.
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "maestro_auth_events_total{event=\"pairing_created\"} 1",
        "maestro_auth_events_total{event=\"device_paired\"} 1",
        "maestro_auth_events_total{event=\"device_revoked\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn the_short_code_pairs_and_expired_or_wrong_codes_do_not() {
    let server = TestServer::start_with(|c| c.pairing_ttl_secs = 1).await;
    let addr = server.addr();
    let pairing = new_pairing(&server, json!({ "scope": "read", "name": "Tablet" })).await;
    let short = pairing["shortCode"].as_str().unwrap().to_lowercase();
    let (status, _, paired) = call(
        addr,
        Method::POST,
        "/api/auth/pair",
        &[],
        Some(json!({ "code": short })),
    )
    .await;
    assert_eq!(status, 200, "{paired}");
    assert_eq!(paired["scope"], "read");
    assert_eq!(paired["deviceName"], "Tablet");

    // Expired: the code is refused once its time is up (1 s here).
    let pairing = new_pairing(&server, json!({})).await;
    let expires_at = pairing["expiresAt"].as_i64().unwrap();
    while maestro_server::util::now_ms() <= expires_at {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _, _) = pair(addr, pairing["code"].as_str().unwrap()).await;
    assert_eq!(status, 401);
}

/// Wrong codes may burn the short code (its ~40 bits need it), never the 256-bit code of the
/// QR code and link: a stranger sending wrong codes cannot keep the owner from pairing.
#[tokio::test]
async fn wrong_codes_burn_the_short_code_never_the_long_one() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let pairing = new_pairing(&server, json!({})).await;
    for _ in 0..maestro_server::auth::credentials::PAIRING_MAX_FAILURES {
        let (status, _, body) = pair(addr, "WRONG-CODE").await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, _, _) = pair(addr, pairing["shortCode"].as_str().unwrap()).await;
    assert_eq!(status, 401, "the short code is burned");
    let (_, _, devices) = call(addr, Method::GET, "/api/auth/devices", &[], None).await;
    assert_eq!(devices, json!([]), "nothing was paired");
    let (status, _, paired) = pair(addr, pairing["code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "the long code still pairs: {paired}");
    let (_, _, devices) = call(addr, Method::GET, "/api/auth/devices", &[], None).await;
    assert_eq!(devices.as_array().unwrap().len(), 1);
}

/// A browser gets its token as an HttpOnly cookie only; a client that asks (and is not a web
/// page: no `Origin`) gets it in the body too.
#[tokio::test]
async fn the_pairing_answer_gives_the_token_only_to_clients_that_ask() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let own_origin = format!("http://{addr}");

    // The web app pairing: no token in the body, the cookie signs it in.
    let pairing = new_pairing(&server, json!({})).await;
    let (status, headers, paired) = call(
        addr,
        Method::POST,
        "/api/auth/pair",
        &[("cf-connecting-ip", PHONE_IP), ("origin", &own_origin)],
        Some(json!({ "code": pairing["code"], "deviceName": "Pixel 8" })),
    )
    .await;
    assert_eq!(status, 200, "{paired}");
    assert!(
        paired.get("token").is_none(),
        "no token for a page: {paired}"
    );
    let (device_cookie, _) = cookie_header(&headers);
    let with_cookie = [
        ("cf-connecting-ip", PHONE_IP),
        ("cookie", device_cookie.as_str()),
    ];
    let (status, _, me) = call(addr, Method::GET, "/api/auth/me", &with_cookie, None).await;
    assert_eq!(status, 200, "{me}");

    // A page cannot ask for it: refused before the code is spent.
    let pairing = new_pairing(&server, json!({})).await;
    let (status, _, body) = call(
        addr,
        Method::POST,
        "/api/auth/pair",
        &[("cf-connecting-ip", PHONE_IP), ("origin", &own_origin)],
        Some(json!({ "code": pairing["code"], "returnToken": true })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, _, devices) = call(addr, Method::GET, "/api/auth/devices", &[], None).await;
    assert_eq!(devices.as_array().unwrap().len(), 1, "no device was made");

    // A client that is not a browser asks and gets it; it works as a bearer token.
    let (status, _, paired) = call(
        addr,
        Method::POST,
        "/api/auth/pair",
        &[("cf-connecting-ip", PHONE_IP)],
        Some(json!({ "code": pairing["code"], "returnToken": true })),
    )
    .await;
    assert_eq!(status, 200, "the code was still good: {paired}");
    let token = paired["token"].as_str().expect("the token, asked for");
    let h = remote(Some(token));
    let (status, _, me) = call(addr, Method::GET, "/api/auth/me", &refs(&h), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["kind"], "device");
}

/// Sends the headers of a `POST /api/auth/pair` from `ip` (as through the tunnel) that
/// announces a body, and a first slice of it; the rest never comes.
async fn trickle_pair(addr: SocketAddr, ip: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/auth/pair HTTP/1.1\r\nhost: {addr}\r\ncf-connecting-ip: {ip}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"code\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

/// A body trickled to the public pairing route is cut off with 408, and nothing is made.
#[tokio::test]
async fn a_trickled_pairing_body_is_cut_off_and_creates_nothing() {
    use tokio::io::AsyncReadExt as _;
    let server = TestServer::start_with(|c| c.body_read_timeout_secs = 1).await;
    let addr = server.addr();
    let pairing = new_pairing(&server, json!({})).await;
    let mut tcp = trickle_pair(addr, PHONE_IP).await;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server ends the request in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    let (_, _, devices) = call(addr, Method::GET, "/api/auth/devices", &[], None).await;
    assert_eq!(devices, json!([]), "nothing was paired");
    let (status, _, paired) = pair(addr, pairing["code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "the pairing is untouched: {paired}");
}

/// One address can have only a few pairing attempts in flight; others are not affected, and
/// the share comes back when an attempt ends.
#[tokio::test]
async fn pairing_attempts_in_flight_are_capped_per_address() {
    let server = TestServer::start_with(|c| c.body_read_timeout_secs = 600).await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..maestro_server::auth::PAIRING_ATTEMPTS_PER_ADDRESS {
        held.push(trickle_pair(addr, PHONE_IP).await);
    }
    // `{}` is answered 400 (no code, no failure counted) while the address has room, 429 once
    // the trickled attempts hold its share: wait for the server to have taken them all.
    let attempt = |ip: &'static str| async move {
        call(
            addr,
            Method::POST,
            "/api/auth/pair",
            &[("cf-connecting-ip", ip)],
            Some(json!({})),
        )
        .await
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let (headers, body) = loop {
        let (status, headers, body) = attempt(PHONE_IP).await;
        if status == 429 {
            break (headers, body);
        }
        assert_eq!(status, 400, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never capped");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(body["code"], "RATE_LIMITED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("pairing attempts"),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    let (status, _, _) = attempt("198.51.100.20").await;
    assert_eq!(status, 400, "another address is not affected");
    let (_, _, devices) = call(addr, Method::GET, "/api/auth/devices", &[], None).await;
    assert_eq!(devices, json!([]));
    // The attempts end (the client hangs up): the address has room again.
    drop(held);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _, body) = attempt(PHONE_IP).await;
        if status == 400 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An Engine.IO handshake (`/socket.io/`, polling) with these headers; its status.
async fn engine_handshake(addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/socket.io/?EIO=4&transport=polling",
        headers,
        None,
    )
    .await;
    status
}

/// Engine.IO sessions: one address holds at most its share, and clients without a
/// credential leave the last eighth of all sessions to this machine and credential holders.
#[tokio::test]
async fn engine_io_sessions_are_capped_per_address_with_room_kept_for_the_owner() {
    let server = TestServer::start_with(|c| {
        c.max_socketio_sessions = 16;
        c.max_socketio_sessions_per_address = 2;
    })
    .await;
    let addr = server.addr();
    let (_, token) = create_token(&server, "read").await;
    let phone = [("cf-connecting-ip", PHONE_IP)];
    assert_eq!(engine_handshake(addr, &phone).await, 200);
    assert_eq!(engine_handshake(addr, &phone).await, 200);
    assert_eq!(
        engine_handshake(addr, &phone).await,
        429,
        "the address's share is used"
    );
    // Strangers from many addresses fill the sessions anonymous clients may use (16 - 2).
    let mut open = 2;
    let mut i = 0;
    while open < 14 {
        let ip = format!("198.51.100.{i}");
        i += 1;
        assert_eq!(
            engine_handshake(addr, &[("cf-connecting-ip", &ip)]).await,
            200
        );
        open += 1;
    }
    assert_eq!(
        engine_handshake(addr, &[("cf-connecting-ip", "198.51.100.200")]).await,
        503,
        "the rest is kept"
    );
    // ... for this machine and for a credential holder.
    assert_eq!(engine_handshake(addr, &[]).await, 200, "local");
    let bearer = format!("Bearer {token}");
    let holder = [
        ("cf-connecting-ip", "198.51.100.250"),
        ("authorization", bearer.as_str()),
    ];
    assert_eq!(engine_handshake(addr, &holder).await, 200, "a credential");
    assert_eq!(engine_handshake(addr, &[]).await, 503, "all 16 are open");
}

/// The stored record of credential `id`, read from a store no server holds.
fn stored_credential(
    domain: &maestro_server::domain::Domain,
    id: &str,
) -> maestro_server::auth::credentials::Credential {
    use maestro_server::ports::{Collection, ReaderExt as _};
    domain
        .reader()
        .unwrap()
        .get(Collection::Credentials, id)
        .unwrap()
        .expect("the credential is stored")
}

/// Token and pairing-code hashes in the store are keyed with the server's key (kept in
/// `DATA_DIR`, not in the store): a copy of the database alone does not let anyone test
/// guesses at a short code. A token stored before the key (a plain SHA-256) still works, and
/// is rehashed on that use.
#[tokio::test]
async fn stored_hashes_are_keyed_and_hashes_from_before_the_key_are_upgraded() {
    use maestro_server::auth::credentials::Credential;
    use maestro_server::ports::{Collection, ReaderExt as _, TxnExt as _, transact};
    use maestro_server::util::hash::sha256_hex;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    let (token_id, token) = create_token(&server, "read").await;
    let pairing = new_pairing(&server, json!({})).await;
    let short = pairing["shortCode"].as_str().unwrap().replace('-', "");
    let code = pairing["code"].as_str().unwrap().to_owned();
    server.stop().await;

    let config = common::config_for(dir.path()).expand_paths();
    let domain = maestro_server::open(&config, "http://localhost:0".into()).unwrap();
    let stored = stored_credential(&domain, &token_id);
    assert!(stored.hash.starts_with("k1:"), "{}", stored.hash);
    assert_ne!(stored.hash, sha256_hex(token.as_bytes()));
    let pairings: Vec<Value> = domain
        .reader()
        .unwrap()
        .list(Collection::Pairings, None)
        .unwrap();
    assert_eq!(pairings.len(), 1);
    for (field, secret) in [("codeHash", &code), ("shortHash", &short)] {
        let hash = pairings[0][field].as_str().unwrap();
        assert!(hash.starts_with("k1:"), "{field}: {hash}");
        assert_ne!(hash, sha256_hex(secret.as_bytes()), "{field}");
    }
    // A token as an older version stored it.
    let legacy_id = "tok_1_legacy0001".to_owned();
    let legacy = format!("{legacy_id}.old-secret-from-before-the-key");
    let record = Credential {
        id: legacy_id.clone(),
        hash: sha256_hex(legacy.as_bytes()),
        ..stored.clone()
    };
    transact(&*domain.store, move |tx| {
        tx.put(Collection::Credentials, &record.id, None, &record);
        Ok(())
    })
    .await
    .unwrap();
    domain.store.close().await;
    drop(domain);

    let server = TestServer::start_in(dir.path()).await;
    let h = remote(Some(&legacy));
    let (status, _, me) = call(server.addr(), Method::GET, "/api/auth/me", &refs(&h), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], legacy_id.as_str());
    let wrong = format!("{legacy_id}.another-secret");
    let h = remote(Some(&wrong));
    let (status, _, _) = call(server.addr(), Method::GET, "/api/auth/me", &refs(&h), None).await;
    assert_eq!(status, 401, "still only its own secret");
    server.stop().await;
    let domain = maestro_server::open(&config, "http://localhost:0".into()).unwrap();
    let upgraded = stored_credential(&domain, &legacy_id);
    assert!(
        upgraded.hash.starts_with("k1:"),
        "rehashed: {}",
        upgraded.hash
    );
    domain.store.close().await;
}

/// A server whose hash key is not the one the store's credentials were hashed with (a lost
/// key file, a second server on a shared Redis without a copy) refuses to start, rather than
/// refusing every credential; with the right key back, everything works as before.
#[tokio::test]
async fn a_server_with_another_hash_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    let (_, token) = create_token(&server, "read").await;
    server.stop().await;
    let key_file = dir.path().join("data").join("hash-key");
    let original = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, "ab".repeat(32)).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = maestro_server::run(
        common::config_for(dir.path()),
        listener,
        tokio_util::sync::CancellationToken::new(),
    );
    let error = tokio::time::timeout(WAIT * 2, run)
        .await
        .expect("start-up ends in time")
        .expect_err("another key is refused");
    assert!(format!("{error:#}").contains("another key"), "{error:#}");

    std::fs::write(&key_file, original).unwrap();
    let server = TestServer::start_in(dir.path()).await;
    let h = remote(Some(&token));
    let (status, _, _) = call(server.addr(), Method::GET, "/api/auth/me", &refs(&h), None).await;
    assert_eq!(status, 200, "the token works as before");
}

/// `PushSubscription.toJSON()` for `endpoint`, with a valid browser key.
fn push_subscription(endpoint: &str) -> Value {
    use base64::Engine as _;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let secret = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap();
        if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
            break k;
        }
    };
    let point = secret.public_key().to_encoded_point(false);
    json!({
        "endpoint": endpoint,
        "keys": { "p256dh": b64.encode(point.as_bytes()), "auth": b64.encode([7u8; 16]) },
    })
}

/// The push subscriptions stored in `dir`'s store, read while no server holds it.
async fn stored_push_subscriptions(dir: &std::path::Path) -> Vec<Value> {
    use maestro_server::ports::{Collection, ReaderExt as _};
    let config = common::config_for(dir).expand_paths();
    let domain = maestro_server::open(&config, "http://localhost:0".into()).unwrap();
    let stored: Vec<Value> = domain
        .reader()
        .unwrap()
        .list(Collection::PushSubscriptions, None)
        .unwrap();
    domain.store.close().await;
    stored
}

/// A push endpoint is where the server will POST: one on this machine or its network is
/// refused at subscribe time, however it is spelled.
#[tokio::test]
async fn push_endpoints_on_this_machine_or_network_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    let addr = server.addr();
    for endpoint in [
        "https://127.1/push",
        "https://0x7f.1/push",
        "https://2130706433/push",
        "https://localhost./push",
        "https://[::1]/push",
        "https://[::ffff:127.0.0.1]/push",
        "https://10.0.0.8/push",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00::1]/push",
        "https://push.example.net:8443/push",
        "http://push.example.net/push",
    ] {
        let (status, _, body) = call(
            addr,
            Method::POST,
            "/api/push/subscriptions",
            &[],
            Some(push_subscription(endpoint)),
        )
        .await;
        assert_eq!(status, 400, "{endpoint}: {body}");
    }
    server.stop().await;
    assert!(
        stored_push_subscriptions(dir.path()).await.is_empty(),
        "nothing stored"
    );
}

/// The sender checks again when it connects: a subscription stored when local endpoints were
/// allowed (or a name that now resolves to this machine) never reaches the local service.
#[tokio::test]
async fn the_push_sender_never_connects_to_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    // The "internal service" a subscriber would like the server to reach.
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_addr = internal.local_addr().unwrap();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = internal.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(tcp);
        }
    });
    let server =
        TestServer::start_in_with(dir.path(), |c| c.push_allow_local_endpoints = true).await;
    let (status, _, body) = call(
        server.addr(),
        Method::POST,
        "/api/push/subscriptions",
        &[],
        Some(push_subscription(&format!("http://{internal_addr}/admin"))),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    server.stop().await;
    assert_eq!(stored_push_subscriptions(dir.path()).await.len(), 1);

    let server = TestServer::start_in(dir.path()).await;
    let addr = server.addr();
    let (_, _, project) = call(
        addr,
        Method::POST,
        "/api/projects",
        &[],
        Some(json!({ "name": "p", "workingDir": "/tmp" })),
    )
    .await;
    let (status, _, session) = call(
        addr,
        Method::POST,
        "/api/sessions",
        &[],
        Some(
            json!({ "projectId": project["id"], "taskIds": [], "name": "s", "status": "working" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let (status, _, _) = call(
        addr,
        Method::PATCH,
        &format!("/api/sessions/{}", session["id"].as_str().unwrap()),
        &[],
        Some(json!({ "needsInput": { "active": true, "message": "?" } })),
    )
    .await;
    assert_eq!(status, 200);
    // The positive signal: the sender handled the notification, and counted it failed.
    let failed = "maestro_push_requests_total{result=\"failed\"} 1";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains(failed) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the internal service was never reached"
    );
}

#[tokio::test]
async fn a_pairing_cannot_grant_more_than_its_creator_has() {
    let server = TestServer::start().await;
    let (_, operate) = create_token(&server, "operate").await;
    let h = remote(Some(&operate));
    let (status, _, _) = call(
        server.addr(),
        Method::POST,
        "/api/auth/pairings",
        &refs(&h),
        Some(json!({ "scope": "admin" })),
    )
    .await;
    // Creating pairings is itself an admin operation.
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_burst_of_wrong_tokens_is_rate_limited_per_address() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let (_, good) = create_token(&server, "read").await;
    let mut limited = None;
    for i in 0..30 {
        let h = [
            ("cf-connecting-ip", PHONE_IP),
            ("authorization", "Bearer tok_1_guess.wrong"),
        ];
        let (status, headers, _) = call(addr, Method::GET, "/api/projects", &h, None).await;
        if status == 429 {
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1);
            limited = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    let limited = limited.expect("429 within 30 wrong tokens");
    assert!(limited <= 11, "limited after {limited} failures");
    // While blocked, even the right token from that address waits.
    let h = remote(Some(&good));
    let (status, _, _) = call(addr, Method::GET, "/api/projects", &refs(&h), None).await;
    assert_eq!(status, 429);
    // Another address is not affected.
    let auth = format!("Bearer {good}");
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/api/projects",
        &[
            ("cf-connecting-ip", "198.51.100.20"),
            ("authorization", &auth),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);
    // The refusals are counted.
    let (_, _, _) = call(addr, Method::GET, "/metrics", &[], None).await;
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("maestro_auth_refusals_total{reason=\"rate_limited\"} 1")
            || metrics.contains("maestro_auth_refusals_total{reason=\"rate_limited\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_announced_public_url_is_answered_until_it_is_withdrawn() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let host = [
        ("host", "abc-def.trycloudflare.com"),
        ("cf-connecting-ip", PHONE_IP),
    ];
    let (status, _, _) = call(addr, Method::GET, "/api/projects", &host, None).await;
    assert_eq!(status, 421);
    for bad in ["ftp://x.example", "https://x.example/path", "not a url", ""] {
        let (status, _, _) = call(
            addr,
            Method::PUT,
            "/api/auth/public-url",
            &[],
            Some(json!({ "url": bad })),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
    // Only an admin may announce one.
    let (_, operate) = create_token(&server, "operate").await;
    let (status, _, _) = call(
        addr,
        Method::PUT,
        "/api/auth/public-url",
        &refs(&remote(Some(&operate))),
        Some(json!({ "url": "https://abc-def.trycloudflare.com" })),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/api/projects",
        &[("host", "abc-def.trycloudflare.com")],
        None,
    )
    .await;
    assert_eq!(status, 421, "nothing changed");

    let (status, _, body) = call(
        addr,
        Method::PUT,
        "/api/auth/public-url",
        &[],
        Some(json!({ "url": "https://abc-def.trycloudflare.com/" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], "https://abc-def.trycloudflare.com");
    // Its host is answered (a credential is still needed), its origin allowed, and pairing
    // links point at it.
    let (status, _, _) = call(addr, Method::GET, "/api/projects", &host, None).await;
    assert_eq!(status, 401);
    let (_, read) = create_token(&server, "read").await;
    let auth = format!("Bearer {read}");
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/api/projects",
        &[
            ("host", "abc-def.trycloudflare.com"),
            ("origin", "https://abc-def.trycloudflare.com"),
            ("cf-connecting-ip", PHONE_IP),
            ("authorization", &auth),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let pairing = new_pairing(&server, json!({})).await;
    assert!(
        pairing["url"]
            .as_str()
            .unwrap()
            .starts_with("https://abc-def.trycloudflare.com/pair#c="),
        "{pairing}"
    );

    let (status, _, _) = call(addr, Method::DELETE, "/api/auth/public-url", &[], None).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(addr, Method::GET, "/api/projects", &host, None).await;
    assert_eq!(status, 421);
}

/// Every route says who may call it where it is registered: each operation of the served
/// OpenAPI document names one scope of the `maestro` scheme (or none, for a public route), and
/// the table the gate reads is built from exactly that.
#[tokio::test]
async fn every_route_and_socket_action_declares_its_scope() {
    let routes = maestro_server::http::route_scopes().expect("every route declares a scope");
    let server = TestServer::start().await;
    let spec: Value = reqwest::get(format!("{}/api/openapi.json", server.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scopes = ["runner", "read", "respond", "operate", "admin"];
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no scope"));
            assert_eq!(security.len(), 1, "{method} {path}: {security:?}");
            let requirement = security[0].as_object().unwrap();
            if let Some(named) = requirement.get("maestro") {
                let named = named.as_array().unwrap();
                assert_eq!(named.len(), 1, "{method} {path}");
                assert!(
                    scopes.contains(&named[0].as_str().unwrap()),
                    "{method} {path}"
                );
            } else {
                assert!(requirement.is_empty(), "{method} {path}: {requirement:?}");
            }
        }
    }
    assert!(operations > 80, "{operations}");
    // The gate's table holds those, plus the WebSockets declared next to their routes.
    assert_eq!(routes.routes().len(), operations + 4);
    assert!(
        spec["components"]["securitySchemes"]["maestro"]["scheme"] == "bearer",
        "{}",
        spec["components"]
    );
}

/// A local client that holds the owner token can tell this server from an impostor: the
/// server answers a challenge with the HMAC of the token, and nothing of the token itself.
#[tokio::test]
async fn the_server_proves_it_holds_its_owner_token() {
    let server = TestServer::start().await;
    let owner = std::fs::read_to_string(server.dir().join("data").join("owner-token")).unwrap();
    let nonce = "0123456789abcdef0123";
    let headers = remote(None);
    let (status, _, body) = call(
        server.addr(),
        Method::POST,
        "/api/auth/identity",
        &refs(&headers),
        Some(json!({ "nonce": nonce })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let proof = body["proof"].as_str().unwrap();
    assert_eq!(proof, maestro_protocol::identity_proof(owner.trim(), nonce));
    assert!(!body.to_string().contains(owner.trim()));
    // A short nonce could be answered from a table of earlier proofs: refused.
    let (status, _, _) = call(
        server.addr(),
        Method::POST,
        "/api/auth/identity",
        &refs(&headers),
        Some(json!({ "nonce": "short" })),
    )
    .await;
    assert_eq!(status, 400);
}
