//! Web Push end to end: a real server sends to a push endpoint of the test's own (axum on
//! 127.0.0.1:0), which checks what a push service would (the VAPID signature) and decrypts
//! the body with the subscriber's keys, as the browser would.
//!
//! Synchronisation is on what arrives at the endpoint and on the server's push counters
//! (`/metrics`), never on sleeps; "nothing more arrived" is only asserted after a later push
//! that the server can only send after it finished with the earlier one (one notification is
//! sent completely before the next is started).

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{TestServer, WAIT};
use maestro_testkit::redis::RedisServer;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One request the push endpoint received.
#[derive(Debug)]
struct Received {
    /// The last path segment: which subscription it was for.
    name: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct EndpointState {
    received: mpsc::UnboundedSender<Received>,
    /// Status to answer per name (201 when absent).
    statuses: Arc<Mutex<HashMap<String, u16>>>,
}

/// A push service of our own: `http://127.0.0.1:<port>/push/<name>`.
struct PushEndpoint {
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
    statuses: Arc<Mutex<HashMap<String, u16>>>,
}

impl PushEndpoint {
    async fn start() -> Self {
        async fn push(
            State(s): State<EndpointState>,
            Path(name): Path<String>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let status = s
                .statuses
                .lock()
                .unwrap()
                .get(&name)
                .copied()
                .unwrap_or(201);
            s.received
                .send(Received {
                    name,
                    headers,
                    body,
                })
                .unwrap();
            StatusCode::from_u16(status).unwrap()
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        let app = axum::Router::new()
            .route("/push/{name}", axum::routing::post(push))
            .with_state(EndpointState {
                received: tx,
                statuses: statuses.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            received: rx,
            statuses,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}/push/{name}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn answer(&self, name: &str, status: u16) {
        self.statuses.lock().unwrap().insert(name.into(), status);
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .expect("no push arrived in time")
            .expect("endpoint alive")
    }

    /// Whatever has arrived and not been read.
    fn pending(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.received.try_recv().ok()).collect()
    }
}

/// A browser's subscription keys.
struct Subscriber {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Subscriber {
    fn new() -> Self {
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).unwrap();
            if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
                break k;
            }
        };
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).unwrap();
        Self { secret, auth }
    }

    /// `PushSubscription.toJSON()` for `endpoint`.
    fn subscription(&self, endpoint: &str) -> Value {
        let point = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {"p256dh": B64.encode(point.as_bytes()), "auth": B64.encode(self.auth)},
        })
    }

    fn decrypt(&self, body: &[u8]) -> Value {
        let auth = web_push_native::Auth::clone_from_slice(&self.auth);
        let plain = web_push_native::decrypt(body.to_vec(), &self.secret, &auth)
            .expect("the body decrypts with the subscriber's keys");
        serde_json::from_slice(&plain).expect("the payload is JSON")
    }
}

/// One request to the server; `(status, JSON body or Null)`.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
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
    let json = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, json)
}

/// Pairs a device with `scope`; its token and id.
async fn pair(addr: SocketAddr, scope: &str) -> (String, String) {
    let (status, pairing) = call(
        addr,
        Method::POST,
        "/api/auth/pairings",
        None,
        Some(json!({"scope": scope})),
    )
    .await;
    assert_eq!(status, 201, "{pairing}");
    let (status, paired) = call(
        addr,
        Method::POST,
        "/api/auth/pair",
        None,
        Some(json!({"code": pairing["code"], "deviceName": "phone", "returnToken": true})),
    )
    .await;
    assert_eq!(status, 200, "{paired}");
    (
        paired["token"].as_str().unwrap().to_owned(),
        paired["deviceId"].as_str().unwrap().to_owned(),
    )
}

async fn subscribe(addr: SocketAddr, token: Option<&str>, subscription: Value) -> Value {
    let (status, body) = call(
        addr,
        Method::POST,
        "/api/push/subscriptions",
        token,
        Some(subscription),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn project(addr: SocketAddr) -> String {
    let (status, p) = call(
        addr,
        Method::POST,
        "/api/projects",
        None,
        Some(json!({"name": "push", "workingDir": "/tmp"})),
    )
    .await;
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

async fn session(addr: SocketAddr, project_id: &str, name: &str) -> String {
    let (status, s) = call(
        addr,
        Method::POST,
        "/api/sessions",
        None,
        Some(json!({"projectId": project_id, "taskIds": [], "name": name, "status": "working"})),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    s["id"].as_str().unwrap().to_owned()
}

async fn needs_input(addr: SocketAddr, session_id: &str, message: &str) {
    let (status, s) = call(
        addr,
        Method::PATCH,
        &format!("/api/sessions/{session_id}"),
        None,
        Some(json!({"needsInput": {"active": true, "message": message}})),
    )
    .await;
    assert_eq!(status, 200, "{s}");
}

async fn set_status(addr: SocketAddr, session_id: &str, status: &str) {
    let (code, s) = call(
        addr,
        Method::PATCH,
        &format!("/api/sessions/{session_id}"),
        None,
        Some(json!({"status": status})),
    )
    .await;
    assert_eq!(code, 200, "{s}");
}

/// The value of one line of `/metrics`.
async fn metric(addr: SocketAddr, line: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line}"))
}

/// Waits (bounded) until `line` of `/metrics` reaches `value`.
async fn metric_reaches(addr: SocketAddr, line: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = metric(addr, line).await;
        if now >= value {
            assert_eq!(now, value, "{line}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line} stayed at {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// A server that takes local push endpoints and sends every notification at once (no
/// coalescing window), so each event is one push.
async fn local_endpoints_allowed() -> TestServer {
    TestServer::start_with(|c| {
        c.push_allow_local_endpoints = true;
        c.push_coalesce_ms = 0;
    })
    .await
}

#[tokio::test]
async fn a_session_that_needs_input_is_pushed_encrypted_and_signed() {
    let server = local_endpoints_allowed().await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let (status, key) = call(addr, Method::GET, "/api/push/vapid-public-key", None, None).await;
    assert_eq!(status, 200);
    let vapid_key = key["publicKey"].as_str().unwrap().to_owned();
    let point = B64.decode(&vapid_key).unwrap();
    assert_eq!(
        (point.len(), point[0]),
        (65, 4),
        "an uncompressed P-256 point"
    );

    // A phone paired with the weakest scope may subscribe.
    let (token, device_id) = pair(addr, "read").await;
    let phone = Subscriber::new();
    let stored = subscribe(
        addr,
        Some(&token),
        phone.subscription(&endpoint.url("phone")),
    )
    .await;
    assert_eq!(stored["deviceId"], device_id.as_str());

    let project_id = project(addr).await;
    let session_id = session(addr, &project_id, "fix login").await;
    needs_input(addr, &session_id, "Which database should I use?").await;

    let push = endpoint.next().await;
    assert_eq!(push.name, "phone");
    assert_eq!(header(&push, "content-encoding"), "aes128gcm");
    assert_eq!(header(&push, "urgency"), "high");
    let ttl: u64 = header(&push, "ttl").parse().unwrap();
    assert!(ttl > 0 && ttl <= 24 * 3600, "TTL {ttl}");

    // VAPID (RFC 8292): a JWT signed by the server's key, for this push service's origin.
    let authorization = header(&push, "authorization");
    let (jwt, k) = authorization
        .strip_prefix("vapid t=")
        .and_then(|rest| rest.split_once(", k="))
        .unwrap_or_else(|| panic!("not a VAPID header: {authorization}"));
    assert_eq!(k, vapid_key);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[endpoint.origin()]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_ec_der(&point),
        &validation,
    )
    .expect("a valid ES256 JWT for the endpoint's origin")
    .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}, now {now}");
    assert!(
        claims["sub"].as_str().unwrap().starts_with("mailto:"),
        "{claims}"
    );
    // Another key does not verify it: the check above means something.
    let other = Subscriber::new()
        .secret
        .public_key()
        .to_encoded_point(false);
    assert!(
        jsonwebtoken::decode::<Value>(
            jwt,
            &jsonwebtoken::DecodingKey::from_ec_der(other.as_bytes()),
            &validation
        )
        .is_err()
    );

    // RFC 8291: only the subscriber's keys open it.
    assert_eq!(
        phone.decrypt(&push.body),
        json!({
            "title": "fix login needs you",
            "body": "Which database should I use?",
            "sessionId": session_id,
            "projectId": project_id,
            "kind": "needs_input",
            "url": format!("/#/s/{session_id}?reply"),
            "tag": format!("s:{session_id}"),
            "count": 1,
        })
    );
    let stranger = Subscriber::new();
    let auth = web_push_native::Auth::clone_from_slice(&stranger.auth);
    assert!(web_push_native::decrypt(push.body.to_vec(), &stranger.secret, &auth).is_err());
    assert!(
        !push
            .body
            .windows(b"database".len())
            .any(|w| w == b"database"),
        "the body is not in clear"
    );

    // Endings notify too, at normal urgency.
    set_status(addr, &session_id, "failed").await;
    let push = endpoint.next().await;
    assert_eq!(header(&push, "urgency"), "normal");
    let payload = phone.decrypt(&push.body);
    assert_eq!(payload["kind"], "session_failed");
    assert_eq!(payload["title"], "fix login failed");
    let done = session(addr, &project_id, "docs").await;
    set_status(addr, &done, "completed").await;
    let payload = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(payload["kind"], "session_completed");
    assert_eq!(payload["sessionId"], done.as_str());
    assert!(endpoint.pending().is_empty());
}

#[tokio::test]
async fn subscriptions_are_checked() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let phone = Subscriber::new();
    // Without PUSH_ALLOW_LOCAL_ENDPOINTS only https push services are taken.
    for endpoint in [
        "http://127.0.0.1:9/push/x",
        "https://127.0.0.1/push/x",
        "https://localhost/x",
    ] {
        let (status, body) = call(
            addr,
            Method::POST,
            "/api/push/subscriptions",
            None,
            Some(phone.subscription(endpoint)),
        )
        .await;
        assert_eq!(status, 400, "{endpoint}: {body}");
    }
    let mut bad_keys = phone.subscription("https://push.example.net/x");
    bad_keys["keys"]["p256dh"] = json!(B64.encode([4u8; 65]));
    let (status, _) = call(
        addr,
        Method::POST,
        "/api/push/subscriptions",
        None,
        Some(bad_keys),
    )
    .await;
    assert_eq!(status, 400);
    // A device's subscriptions are capped: the oldest goes.
    let (token, _) = pair(addr, "read").await;
    for i in 0..11 {
        subscribe(
            addr,
            Some(&token),
            phone.subscription(&format!("https://push.example.net/{i}")),
        )
        .await;
    }
    let delete = |endpoint: String| {
        let token = token.clone();
        async move {
            call(
                addr,
                Method::DELETE,
                "/api/push/subscriptions",
                Some(&token),
                Some(json!({ "endpoint": endpoint })),
            )
            .await
        }
    };
    assert_eq!(
        delete("https://push.example.net/0".into()).await,
        (200, json!({"removed": false})),
        "evicted"
    );
    assert_eq!(
        delete("https://push.example.net/10".into()).await,
        (200, json!({"removed": true}))
    );
    // Anonymous remote callers cannot subscribe.
    let (status, _) = reqwest::Client::new()
        .post(format!("http://{addr}/api/push/subscriptions"))
        .header("cf-connecting-ip", "203.0.113.9")
        .header("content-type", "application/json")
        .body(phone.subscription("https://push.example.net/x").to_string())
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_gone_subscription_is_deleted() {
    let server = local_endpoints_allowed().await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    endpoint.answer("gone", 410);
    let (gone, alive) = (Subscriber::new(), Subscriber::new());
    subscribe(addr, None, gone.subscription(&endpoint.url("gone"))).await;
    subscribe(addr, None, alive.subscription(&endpoint.url("alive"))).await;
    let project_id = project(addr).await;
    let first = session(addr, &project_id, "one").await;
    needs_input(addr, &first, "?").await;
    let mut names = vec![endpoint.next().await.name, endpoint.next().await.name];
    names.sort();
    assert_eq!(names, ["alive", "gone"]);
    metric_reaches(addr, "maestro_push_requests_total{result=\"gone\"}", 1).await;
    let (status, body) = call(
        addr,
        Method::DELETE,
        "/api/push/subscriptions",
        None,
        Some(json!({"endpoint": endpoint.url("gone")})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"removed": false})));
    // The next notification goes to the live subscription only.
    let second = session(addr, &project_id, "two").await;
    needs_input(addr, &second, "?").await;
    let push = endpoint.next().await;
    assert_eq!(push.name, "alive");
    assert_eq!(alive.decrypt(&push.body)["sessionId"], second.as_str());
    let third = session(addr, &project_id, "three").await;
    needs_input(addr, &third, "?").await;
    assert_eq!(endpoint.next().await.name, "alive");
    assert!(endpoint.pending().is_empty());
    assert_eq!(
        metric(addr, "maestro_push_requests_total{result=\"gone\"}").await,
        1
    );
}

#[tokio::test]
async fn revoking_a_device_deletes_its_subscriptions() {
    let server = local_endpoints_allowed().await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let (token, device_id) = pair(addr, "respond").await;
    let (phone, laptop) = (Subscriber::new(), Subscriber::new());
    subscribe(
        addr,
        Some(&token),
        phone.subscription(&endpoint.url("phone")),
    )
    .await;
    subscribe(addr, None, laptop.subscription(&endpoint.url("laptop"))).await;
    let project_id = project(addr).await;
    let first = session(addr, &project_id, "one").await;
    needs_input(addr, &first, "?").await;
    let mut names = vec![endpoint.next().await.name, endpoint.next().await.name];
    names.sort();
    assert_eq!(names, ["laptop", "phone"]);

    let (status, _) = call(
        addr,
        Method::DELETE,
        &format!("/api/auth/devices/{device_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    for name in ["two", "three"] {
        let s = session(addr, &project_id, name).await;
        needs_input(addr, &s, "?").await;
        let push = endpoint.next().await;
        assert_eq!(push.name, "laptop");
        assert_eq!(laptop.decrypt(&push.body)["sessionId"], s.as_str());
    }
    assert!(
        endpoint.pending().is_empty(),
        "the revoked phone got a push"
    );
}

/// The configuration of a server on the Redis at `url` that takes local push endpoints, with
/// a coalescing window of `window_ms`.
/// Servers sharing a store share its hash key (`key`).
fn on_redis(
    url: String,
    window_ms: u64,
    key: std::path::PathBuf,
) -> impl Fn(&mut maestro_server::Config) {
    move |c| {
        c.redis_url = Some(url.clone());
        c.hash_key_file = Some(key.clone());
        c.push_allow_local_endpoints = true;
        c.push_coalesce_ms = window_ms;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_push_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let on_redis = on_redis(redis.url(), 0, dir.path().join("hash-key"));
    let a = TestServer::start_with(&on_redis).await;
    let b = TestServer::start_with(&on_redis).await;
    let (_, key_a) = call(
        a.addr(),
        Method::GET,
        "/api/push/vapid-public-key",
        None,
        None,
    )
    .await;
    let (_, key_b) = call(
        b.addr(),
        Method::GET,
        "/api/push/vapid-public-key",
        None,
        None,
    )
    .await;
    assert_eq!(key_a, key_b, "one key for every server on the store");

    let mut endpoint = PushEndpoint::start().await;
    let phone = Subscriber::new();
    subscribe(a.addr(), None, phone.subscription(&endpoint.url("phone"))).await;
    let project_id = project(a.addr()).await;
    const N: u64 = 8;
    let mut expected = Vec::new();
    for i in 0..N {
        // Half the changes are made through each server.
        let via = if i % 2 == 0 { a.addr() } else { b.addr() };
        let s = session(via, &project_id, &format!("s{i}")).await;
        needs_input(via, &s, "?").await;
        expected.push(s);
    }
    // Every server decided on every notification...
    for server in [&a, &b] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let won = metric(server.addr(), "maestro_push_claims_total{outcome=\"won\"}").await;
            let lost = metric(server.addr(), "maestro_push_claims_total{outcome=\"lost\"}").await;
            if won + lost == N {
                break;
            }
            assert!(won + lost < N, "decided {} of {N}", won + lost);
            assert!(
                tokio::time::Instant::now() < deadline,
                "decided {won}+{lost} of {N}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let won_a = metric(a.addr(), "maestro_push_claims_total{outcome=\"won\"}").await;
    let won_b = metric(b.addr(), "maestro_push_claims_total{outcome=\"won\"}").await;
    assert_eq!(
        won_a + won_b,
        N,
        "each notification won by exactly one server"
    );
    // ...and the winners sent one push each.
    let mut got = Vec::new();
    for _ in 0..N {
        let push = endpoint.next().await;
        got.push(
            phone.decrypt(&push.body)["sessionId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for (server, won) in [(&a, won_a), (&b, won_b)] {
        metric_reaches(
            server.addr(),
            "maestro_push_requests_total{result=\"sent\"}",
            won,
        )
        .await;
    }
    assert!(
        endpoint.pending().is_empty(),
        "a notification was pushed twice"
    );
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn the_vapid_key_is_kept_across_restarts() {
    let server = TestServer::start().await;
    let (_, before) = call(
        server.addr(),
        Method::GET,
        "/api/push/vapid-public-key",
        None,
        None,
    )
    .await;
    let server = server.restart().await;
    let (_, after) = call(
        server.addr(),
        Method::GET,
        "/api/push/vapid-public-key",
        None,
        None,
    )
    .await;
    assert!(before["publicKey"].is_string(), "{before}");
    assert_eq!(before, after);
    // A fresh store gets a key of its own.
    let other = TestServer::start().await;
    let (_, theirs) = call(
        other.addr(),
        Method::GET,
        "/api/push/vapid-public-key",
        None,
        None,
    )
    .await;
    assert_ne!(before, theirs);
}

/// A device paired with `scope` whose browser subscribed at the endpoint's `/push/<name>`:
/// its token and the browser's keys.
async fn subscribed_device(
    addr: SocketAddr,
    endpoint: &PushEndpoint,
    scope: &str,
    name: &str,
) -> (String, Subscriber) {
    let (token, _) = pair(addr, scope).await;
    let browser = Subscriber::new();
    subscribe(
        addr,
        Some(&token),
        browser.subscription(&endpoint.url(name)),
    )
    .await;
    (token, browser)
}

// ---- Notifications people can act on and trust (per-device rules, actions) ----

/// `maestro_push_notifications_total{kind=…,outcome=…}`.
fn outcome(kind: &str, outcome: &str) -> String {
    format!("maestro_push_notifications_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}")
}

/// A pending approval of `session_id` for running `command`; its id.
async fn approval(addr: SocketAddr, session_id: &str, command: &str) -> String {
    let (status, a) = call(
        addr,
        Method::POST,
        &format!("/api/sessions/{session_id}/approvals"),
        None,
        Some(
            json!({"agentTool": "claude-code", "toolName": "Bash", "input": {"command": command}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    a["id"].as_str().unwrap().to_owned()
}

/// Posts a notification button's token as `token` (a device's bearer token) would.
async fn act(addr: SocketAddr, bearer: Option<&str>, action_token: &str) -> (u16, Value) {
    call(
        addr,
        Method::POST,
        "/api/push/actions",
        bearer,
        Some(json!({ "token": action_token })),
    )
    .await
}

/// Reads pushes for `sub` until one says it stands for `count` events; every push read.
async fn pushes_until_count(
    endpoint: &mut PushEndpoint,
    sub: &Subscriber,
    count: u64,
) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let payload = sub.decrypt(&endpoint.next().await.body);
        let done = payload["count"] == count;
        got.push(payload);
        if done {
            return got;
        }
    }
}

#[tokio::test]
async fn a_burst_of_events_is_one_notification_with_a_count() {
    // A short window keeps the test short; the count does not depend on it (every event of
    // the burst lands within a window of the previous push, however slow the machine).
    let server = TestServer::start_with(|c| {
        c.push_allow_local_endpoints = true;
        c.push_coalesce_ms = 1_500;
    })
    .await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let phone = Subscriber::new();
    subscribe(addr, None, phone.subscription(&endpoint.url("phone"))).await;
    let project_id = project(addr).await;
    let session_id = session(addr, &project_id, "busy").await;
    for i in 0..10 {
        approval(addr, &session_id, &format!("make step{i}")).await;
    }
    let got = pushes_until_count(&mut endpoint, &phone, 10).await;
    // The first went at once; the rest were folded into one that replaced it (same tag).
    assert_eq!(got[0]["count"], 1);
    assert!(got.len() < 10, "{} pushes for 10 events", got.len());
    for p in &got {
        assert_eq!(p["tag"], format!("s:{session_id}"));
        assert_eq!(p["kind"], "approval");
    }
    let last = got.last().unwrap();
    assert!(
        last["body"].as_str().unwrap().starts_with("10 updates · "),
        "{last}"
    );
    // Every event after the first was folded, into however many pushes it took.
    metric_reaches(addr, &outcome("approval", "coalesced"), 9).await;
    metric_reaches(addr, &outcome("approval", "sent"), got.len() as u64).await;
    // The next event after the window is its own notification again: a positive signal that
    // nothing else of the burst was still on its way.
    let other = session(addr, &project_id, "other").await;
    needs_input(addr, &other, "?").await;
    let next = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(next["sessionId"], other.as_str());
    assert_eq!(next["count"], 1);
    assert!(endpoint.pending().is_empty());
}

#[tokio::test]
async fn folded_notifications_survive_a_restart_and_nothing_is_sent_twice() {
    let window = |c: &mut maestro_server::Config| {
        c.push_allow_local_endpoints = true;
        c.push_coalesce_ms = 2_000;
    };
    let server = TestServer::start_with(window).await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let phone = Subscriber::new();
    subscribe(addr, None, phone.subscription(&endpoint.url("phone"))).await;
    let project_id = project(addr).await;
    let session_id = session(addr, &project_id, "s").await;
    approval(addr, &session_id, "one").await;
    assert_eq!(phone.decrypt(&endpoint.next().await.body)["count"], 1);
    approval(addr, &session_id, "two").await;
    approval(addr, &session_id, "three").await;
    metric_reaches(addr, &outcome("approval", "coalesced"), 2).await;
    // Restarted while the folded notification waits: it is in the store, so it is sent once
    // (by the new server, or by the old one if its window ended first).
    let server = server.restart_with(window).await;
    let addr = server.addr();
    let flushed = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(flushed["count"], 3);
    assert_eq!(flushed["tag"], format!("s:{session_id}"));
    // Nothing from before the restart comes again: the next push is a new event's.
    let other = session(addr, &project_id, "later").await;
    needs_input(addr, &other, "?").await;
    let next = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(next["sessionId"], other.as_str());
    assert!(endpoint.pending().is_empty(), "a notification came twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_fold_and_send_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let on_redis = on_redis(redis.url(), 1_500, dir.path().join("hash-key"));
    let a = TestServer::start_with(&on_redis).await;
    let b = TestServer::start_with(&on_redis).await;
    let mut endpoint = PushEndpoint::start().await;
    let phone = Subscriber::new();
    subscribe(a.addr(), None, phone.subscription(&endpoint.url("phone"))).await;
    let project_id = project(a.addr()).await;
    let session_id = session(a.addr(), &project_id, "shared").await;
    for i in 0..6u64 {
        let via = if i % 2 == 0 { a.addr() } else { b.addr() };
        approval(via, &session_id, &format!("step{i}")).await;
        // One event at a time: two servers handling events of one scope at once may take them
        // out of order, and the later one's watermark then (rightly) drops the earlier one.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut decided = 0;
            for s in [&a, &b] {
                for o in ["sent", "coalesced", "expired"] {
                    decided += metric(s.addr(), &outcome("approval", o)).await;
                }
            }
            if decided > i {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "event {i} not handled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // One device state in the store: whichever server handles an event folds it into the
    // same group, and one flush sends it.
    let got = pushes_until_count(&mut endpoint, &phone, 6).await;
    assert!(got.len() < 6, "{} pushes for 6 events", got.len());
    // A server that starts now on the same store sends nothing old.
    let c = TestServer::start_with(&on_redis).await;
    let other = session(c.addr(), &project_id, "later").await;
    needs_input(c.addr(), &other, "?").await;
    let next = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(
        next["sessionId"],
        other.as_str(),
        "the next push is the new event"
    );
    assert!(endpoint.pending().is_empty(), "a notification came twice");
    let mut sent = 0;
    for s in [&a, &b, &c] {
        sent += metric(s.addr(), &outcome("approval", "sent")).await;
    }
    assert_eq!(sent, got.len() as u64);
}

/// A minimal Socket.IO client over WebSocket: connects one namespace with a token and emits
/// events with an ack (what the web app does for `client:visibility`).
struct Socket {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    ns: String,
    next_ack: u64,
}

impl Socket {
    async fn connect(addr: SocketAddr, ns: &str, auth: Value) -> Self {
        use futures_util::SinkExt as _;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut socket = Self {
            ws,
            ns: ns.to_owned(),
            next_ack: 1,
        };
        assert!(socket.engine().await.starts_with('0'), "engine.io open");
        socket
            .ws
            .send(tokio_tungstenite::tungstenite::Message::text(format!(
                "40{ns},{auth}"
            )))
            .await
            .unwrap();
        let connected = socket.engine().await;
        assert!(
            connected.starts_with(&format!("40{ns},")),
            "connect: {connected}"
        );
        socket
    }

    /// The next Engine.IO message that is not a ping (pings are answered).
    async fn engine(&mut self) -> String {
        use futures_util::{SinkExt as _, StreamExt as _};
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing from the server in time")
                .expect("socket open")
                .expect("socket read");
            let text = match msg {
                tokio_tungstenite::tungstenite::Message::Text(t) => t.to_string(),
                _ => continue,
            };
            if text == "2" {
                self.ws
                    .send(tokio_tungstenite::tungstenite::Message::text("3"))
                    .await
                    .unwrap();
                continue;
            }
            return text;
        }
    }

    /// Emits `event` and returns its ack (events pushed meanwhile are skipped).
    async fn emit(&mut self, event: &str, data: Value) -> Value {
        use futures_util::SinkExt as _;
        let id = self.next_ack;
        self.next_ack += 1;
        let packet = format!("42{},{id}{}", self.ns, json!([event, data]));
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(packet))
            .await
            .unwrap();
        let prefix = format!("43{},{id}", self.ns);
        loop {
            let text = self.engine().await;
            if let Some(rest) = text.strip_prefix(&prefix) {
                let mut args: Vec<Value> = serde_json::from_str(rest).unwrap();
                return args.remove(0);
            }
        }
    }
}

#[tokio::test]
async fn a_device_looking_at_the_app_is_not_pushed() {
    let server = local_endpoints_allowed().await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let (token, phone) = subscribed_device(addr, &endpoint, "read", "phone").await;
    let project_id = project(addr).await;
    let mut socket = Socket::connect(
        addr,
        "/mobile",
        json!({"token": token, "projectId": project_id}),
    )
    .await;
    let ack = socket
        .emit("client:visibility", json!({"visible": true}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let seen = session(addr, &project_id, "on screen").await;
    needs_input(addr, &seen, "?").await;
    metric_reaches(addr, &outcome("needs_input", "suppressed_visible"), 1).await;
    // The app goes to the background: the next event is pushed, and the earlier one never.
    let ack = socket
        .emit("client:visibility", json!({"visible": false}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let later = session(addr, &project_id, "in background").await;
    needs_input(addr, &later, "?").await;
    let push = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(push["sessionId"], later.as_str());
    assert!(endpoint.pending().is_empty());
    // Another device's visibility does not silence this one.
    let (other_token, _) = pair(addr, "read").await;
    let mut other = Socket::connect(
        addr,
        "/mobile",
        json!({"token": other_token, "projectId": project_id}),
    )
    .await;
    other
        .emit("client:visibility", json!({"visible": true}))
        .await;
    let third = session(addr, &project_id, "third").await;
    needs_input(addr, &third, "?").await;
    assert_eq!(
        phone.decrypt(&endpoint.next().await.body)["sessionId"],
        third.as_str()
    );
}

/// Minutes since midnight UTC, now.
fn utc_minute_now() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (secs / 60).rem_euclid(1440)
}

#[tokio::test]
async fn kinds_and_quiet_hours_are_the_devices_choice() {
    let server = local_endpoints_allowed().await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let (token, phone) = subscribed_device(addr, &endpoint, "respond", "phone").await;
    let (status, defaults) =
        call(addr, Method::GET, "/api/push/settings", Some(&token), None).await;
    assert_eq!(status, 200, "{defaults}");
    assert_eq!(defaults["settings"]["kinds"]["needsInput"], true);
    assert_eq!(defaults["lastDeliveryAt"], Value::Null);
    assert_eq!(defaults["subscriptions"], 1);
    let put = |settings: Value| {
        let token = token.clone();
        async move {
            let (status, body) = call(
                addr,
                Method::PUT,
                "/api/push/settings",
                Some(&token),
                Some(settings),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    // Quiet hours around now, in a time zone ten hours ahead of UTC (so "now" there is UTC + 10 h).
    let offset = 600;
    let here = (utc_minute_now() + offset).rem_euclid(1440);
    let quiet = json!({
        "start": (here - 120).rem_euclid(1440),
        "end": (here + 120).rem_euclid(1440),
        "approvalsStillNotify": true,
    });
    put(json!({"quietHours": quiet, "utcOffsetMinutes": offset, "kinds": {"completed": false}}))
        .await;
    let project_id = project(addr).await;
    let asks = session(addr, &project_id, "asks").await;
    needs_input(addr, &asks, "?").await;
    metric_reaches(addr, &outcome("needs_input", "muted"), 1).await;
    // Approvals still notify.
    let tool = session(addr, &project_id, "tool").await;
    approval(addr, &tool, "ls").await;
    let push = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(push["kind"], "approval");
    // Without "approvals still notify", they wait too.
    let mut strict = quiet.clone();
    strict["approvalsStillNotify"] = json!(false);
    put(json!({"quietHours": strict, "utcOffsetMinutes": offset})).await;
    approval(addr, &tool, "pwd").await;
    metric_reaches(addr, &outcome("approval", "muted"), 1).await;
    // The same hours in UTC are not now: notifications flow again, except a kind turned off.
    put(json!({"quietHours": strict, "utcOffsetMinutes": 0, "kinds": {"completed": false}})).await;
    let done = session(addr, &project_id, "done").await;
    set_status(addr, &done, "completed").await;
    metric_reaches(addr, &outcome("session_completed", "muted"), 1).await;
    let later = session(addr, &project_id, "later").await;
    needs_input(addr, &later, "?").await;
    assert_eq!(
        phone.decrypt(&endpoint.next().await.body)["sessionId"],
        later.as_str()
    );
    assert!(endpoint.pending().is_empty());
    // Settings are checked.
    let (status, _) = call(
        addr,
        Method::PUT,
        "/api/push/settings",
        Some(&token),
        Some(json!({"quietHours": {"start": 1440, "end": 0}})),
    )
    .await;
    assert_eq!(status, 400);
    let (_, stored) = call(addr, Method::GET, "/api/push/settings", Some(&token), None).await;
    assert_eq!(
        stored["settings"]["utcOffsetMinutes"], 0,
        "unchanged by the refusal"
    );
    assert!(stored["lastDeliveryAt"].is_i64(), "{stored}");
}

#[tokio::test]
async fn a_test_notification_reaches_the_device_and_shows_its_last_delivery() {
    let server = local_endpoints_allowed().await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let (token, phone) = subscribed_device(addr, &endpoint, "read", "phone").await;
    // Another device's subscription gets nothing.
    let laptop = Subscriber::new();
    subscribe(addr, None, laptop.subscription(&endpoint.url("laptop"))).await;
    let (status, result) = call(addr, Method::POST, "/api/push/test", Some(&token), None).await;
    assert_eq!((status, result), (200, json!({"sent": 1, "failed": 0})));
    let push = endpoint.next().await;
    assert_eq!(push.name, "phone");
    assert_eq!(phone.decrypt(&push.body)["kind"], "test");
    let (_, status_body) = call(addr, Method::GET, "/api/push/settings", Some(&token), None).await;
    assert!(
        status_body["lastDeliveryAt"].as_i64().unwrap() > 0,
        "{status_body}"
    );
    assert_eq!(metric(addr, &outcome("test", "sent")).await, 1);
    assert!(endpoint.pending().is_empty());
}

/// The approval as it is now.
async fn approval_status(addr: SocketAddr, id: &str) -> Value {
    let (status, a) = call(
        addr,
        Method::GET,
        &format!("/api/approvals/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{a}");
    a
}

fn token_of(push: &Value, action: &str) -> String {
    push["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions: {push}"))
        .iter()
        .find(|a| a["action"] == action)
        .unwrap_or_else(|| panic!("no {action}: {push}"))["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_action_token_decides_once_for_its_approval_decision_and_device() {
    let server = local_endpoints_allowed().await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let (phone_token, phone) = subscribed_device(addr, &endpoint, "respond", "phone").await;
    let (viewer_token, viewer) = subscribed_device(addr, &endpoint, "read", "viewer").await;
    let (tablet_token, _) = pair(addr, "respond").await;
    let project_id = project(addr).await;
    let session_id = session(addr, &project_id, "agent").await;
    let id = approval(addr, &session_id, "rm -rf build").await;
    let mut pushes = HashMap::new();
    for _ in 0..2 {
        let p = endpoint.next().await;
        let who = if p.name == "phone" { &phone } else { &viewer };
        pushes.insert(p.name.clone(), who.decrypt(&p.body));
    }
    // A device that may only read gets no buttons.
    assert!(
        pushes["viewer"].get("actions").is_none(),
        "{}",
        pushes["viewer"]
    );
    let push = &pushes["phone"];
    assert_eq!(push["approvalId"], id.as_str());
    let (allow, deny) = (token_of(push, "allow"), token_of(push, "deny"));

    // Someone waits on the approval (as the agent's hook does).
    let wait_path = format!("/api/approvals/{id}/wait?timeout=60000");
    let waiting =
        tokio::spawn(async move { call(addr, Method::GET, &wait_path, None, None).await });

    // Only its device: another device with scope respond is refused, a read-only one too.
    let (status, body) = act(addr, Some(&tablet_token), &allow).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "ACTION_REFUSED");
    let (status, _) = act(addr, Some(&viewer_token), &allow).await;
    assert_eq!(status, 403);
    // Only its approval and decision: an altered token is refused.
    for forged in [
        allow.replacen("allow", "deny", 1),
        deny.replacen("deny", "allow", 1),
        allow.replacen(&id, "appr_00000000000000000000000000000000", 1),
        format!("{allow}A"),
    ] {
        let (status, body) = act(addr, Some(&phone_token), &forged).await;
        assert_eq!(status, 403, "{forged}: {body}");
    }
    assert_eq!(
        approval_status(addr, &id).await["status"],
        "pending",
        "nothing changed"
    );

    // Its device, with its cookie and no CSRF header (the service worker cannot read it).
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/push/actions"))
        .header("cookie", format!("maestro_device={phone_token}"))
        .header("content-type", "application/json")
        .body(json!({ "token": allow }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let decided: Value = resp.json().await.unwrap();
    assert_eq!(decided["status"], "allowed");
    assert_eq!(decided["decision"], "allow");
    assert_eq!(decided["decidedBy"], "phone");
    let (status, waited) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(waited["decision"], "allow", "the waiting hook gets allow");

    // Once: the same tap again, or the other button, is answered with who decided.
    for token in [&allow, &deny] {
        let (status, body) = act(addr, Some(&phone_token), token).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["code"], "APPROVAL_DECIDED");
        assert_eq!(body["details"]["decidedBy"], "phone");
    }
    assert_eq!(approval_status(addr, &id).await["decision"], "allow");

    // Not after the approval ended: a withdrawn approval's token decides nothing.
    let second = approval(addr, &session_id, "make").await;
    // The phone's push and the viewer's, in whichever order the devices were served.
    let (first, then) = (endpoint.next().await, endpoint.next().await);
    let mine = if first.name == "phone" { first } else { then };
    assert_eq!(mine.name, "phone");
    let push = phone.decrypt(&mine.body);
    assert_eq!(push["approvalId"], second.as_str());
    let (status, _) = call(
        addr,
        Method::POST,
        &format!("/api/approvals/{second}/cancel"),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = act(addr, Some(&phone_token), &token_of(&push, "allow")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(approval_status(addr, &second).await["status"], "cancelled");

    // Other cookie-authenticated writes still need the CSRF header.
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/approvals/{second}/decision"))
        .header("cookie", format!("maestro_device={phone_token}"))
        .header("content-type", "application/json")
        .body(json!({ "decision": "allow" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_going_offline_and_coming_back_is_told_once_each() {
    let server = TestServer::start_with(|c| {
        c.push_allow_local_endpoints = true;
        c.push_coalesce_ms = 0;
        c.heartbeat_ttl_ms = 300;
        c.heartbeat_grace_ms = 100;
        c.sweep_interval_ms = 50;
    })
    .await;
    let addr = server.addr();
    let mut endpoint = PushEndpoint::start().await;
    let phone = Subscriber::new();
    subscribe(addr, None, phone.subscription(&endpoint.url("phone"))).await;
    let (status, runner) = call(
        addr,
        Method::POST,
        "/api/runners",
        None,
        Some(json!({"machineId": "mach_build", "hostname": "build-box", "agents": []})),
    )
    .await;
    assert_eq!(status, 201, "{runner}");
    let runner_id = runner["id"].as_str().unwrap().to_owned();
    // It stops beating.
    let offline = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(offline["kind"], "machine_offline");
    assert_eq!(offline["title"], "build-box is offline");
    assert_eq!(offline["tag"], format!("m:{runner_id}"));
    // It beats again: "back", with the same tag (it replaces "offline").
    let (status, _) = call(
        addr,
        Method::POST,
        &format!("/api/runners/{runner_id}/heartbeat"),
        None,
        Some(json!({"sessionIds": []})),
    )
    .await;
    assert_eq!(status, 200);
    let back = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(back["kind"], "machine_online");
    assert_eq!(back["tag"], format!("m:{runner_id}"));
    // And offline again once, not once per sweep.
    let again = phone.decrypt(&endpoint.next().await.body);
    assert_eq!(again["kind"], "machine_offline");
    metric_reaches(addr, &outcome("machine_offline", "sent"), 2).await;
    assert!(endpoint.pending().is_empty());
}
