//! The fake `cloudflared` really proxies HTTP and WebSockets, adding Cloudflare's headers, and
//! fails where the real one fails.

use std::convert::Infallible;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const FAKE: &str = env!("CARGO_BIN_EXE_cloudflared");

fn headers_json(headers: &hyper::HeaderMap) -> Value {
    let map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
        .collect();
    Value::Object(map)
}

/// An origin that answers every request with what it received as JSON, and echoes WebSocket
/// messages after a first message holding the upgrade request's headers.
async fn start_origin() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    let seen = json!({
                        "method": req.method().as_str(),
                        "uri": req.uri().to_string(),
                        "headers": headers_json(req.headers()),
                    });
                    if let Some(key) = req.headers().get("sec-websocket-key") {
                        let accept = derive_accept_key(key.as_bytes());
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let io = TokioIo::new(upgrade.await.unwrap());
                            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                                io,
                                Role::Server,
                                None,
                            )
                            .await;
                            ws.send(Message::text(seen.to_string())).await.unwrap();
                            while let Some(Ok(msg)) = ws.next().await {
                                if msg.is_text() || msg.is_binary() {
                                    ws.send(msg).await.unwrap();
                                }
                            }
                        });
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .status(101)
                                .header("connection", "Upgrade")
                                .header("upgrade", "websocket")
                                .header("sec-websocket-accept", accept)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        );
                    }
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let mut seen = seen;
                    seen["body"] = json!(String::from_utf8_lossy(&body));
                    Ok(Response::builder()
                        .header("content-type", "application/json")
                        .header("x-origin", "yes")
                        .body(Full::new(Bytes::from(seen.to_string())))
                        .unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Fake {
    child: Child,
    metrics: String,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(FAKE);
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Polls `/ready` until it answers 200 (503 is the only other answer allowed meanwhile).
async fn wait_ready(http: &reqwest::Client, metrics: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the fake never became ready");
        if let Ok(r) = http.get(format!("{metrics}/ready")).send().await {
            if r.status() == 200 {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["readyConnections"], 1);
                return;
            }
            assert_eq!(r.status(), 503);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_edge(file: &Path) -> String {
    std::fs::read_to_string(file).expect("the edge file is written once ready")
}

#[tokio::test]
async fn a_quick_tunnel_proxies_http_and_websockets_with_cloudflares_headers() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let edge_file = dir.path().join("edge");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut fake = Fake {
        child: spawn(
            &[
                "tunnel",
                "--no-autoupdate",
                "--url",
                &origin,
                "--metrics",
                &metrics,
            ],
            &[
                ("FAKE_CLOUDFLARED_EDGE_FILE", edge_file.to_str().unwrap()),
                ("FAKE_CLOUDFLARED_ACCESS_JWT", "header.payload.signature"),
            ],
        ),
        metrics: format!("http://{metrics}"),
    };
    let http = reqwest::Client::new();
    wait_ready(&http, &fake.metrics).await;
    let quick: Value = http
        .get(format!("{}/quicktunnel", fake.metrics))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hostname = quick["hostname"].as_str().unwrap().to_owned();
    assert!(hostname.ends_with(".trycloudflare.com"), "{hostname}");
    let edge = read_edge(&edge_file);

    // Two requests on one keep-alive connection, a body, a method other than GET.
    for i in 0..2 {
        let response = http
            .put(format!("{edge}/api/things/{i}?q=1"))
            .header("content-type", "application/json")
            .header("cf-connecting-ip", "10.0.0.1")
            .body(format!(r#"{{"n":{i}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-origin"], "yes");
        let seen: Value = response.json().await.unwrap();
        assert_eq!(seen["method"], "PUT");
        assert_eq!(seen["uri"], format!("/api/things/{i}?q=1"));
        assert_eq!(seen["body"], format!(r#"{{"n":{i}}}"#));
        let h = &seen["headers"];
        assert_eq!(h["host"], hostname.as_str());
        assert_eq!(
            h["cf-connecting-ip"], "203.0.113.7",
            "the edge overwrites it"
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["cf-visitor"], r#"{"scheme":"https"}"#);
        assert!(h["cf-ray"].as_str().unwrap().ends_with("-AMS"));
        assert_eq!(h["cf-access-jwt-assertion"], "header.payload.signature");
    }

    // A WebSocket: 101 through the edge, then messages both ways.
    let ws_url = format!("{}/socket", edge.replacen("http://", "ws://", 1));
    let (mut ws, response) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    assert_eq!(response.status(), 101);
    let Some(Ok(Message::Text(first))) = ws.next().await else {
        panic!("no first message")
    };
    let seen: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(seen["uri"], "/socket");
    assert_eq!(seen["headers"]["host"], hostname.as_str());
    assert_eq!(seen["headers"]["cf-connecting-ip"], "203.0.113.7");
    assert_eq!(seen["headers"]["upgrade"], "websocket");
    for text in ["ping", "pong"] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .args(["-TERM", &fake.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = fake.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(fake.child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains(" INF |  https://"), "{log}");
    assert!(log.contains("Registered tunnel connection"), "{log}");
}

#[tokio::test]
async fn a_named_tunnel_runs_from_its_config_and_the_fake_can_die_on_request() {
    let origin = start_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("creds.json");
    std::fs::write(&credentials, "{}").unwrap();
    let config = dir.path().join("maestro.yml");
    std::fs::write(
        &config,
        format!(
            "tunnel: maestro\ncredentials-file: {}\ningress:\n  - hostname: maestro.example.com\n    service: {origin}\n  - service: http_status:404\n",
            credentials.display()
        ),
    )
    .unwrap();
    let edge_file = dir.path().join("edge");
    let metrics = format!("127.0.0.1:{}", free_port());
    let fake = Fake {
        child: spawn(
            &[
                "tunnel",
                "--no-autoupdate",
                "--metrics",
                &metrics,
                "--config",
                config.to_str().unwrap(),
                "run",
                "maestro",
            ],
            &[
                ("FAKE_CLOUDFLARED_EDGE_FILE", edge_file.to_str().unwrap()),
                ("FAKE_CLOUDFLARED_DIE_AFTER_MS", "1500"),
            ],
        ),
        metrics: format!("http://{metrics}"),
    };
    let http = reqwest::Client::new();
    wait_ready(&http, &fake.metrics).await;
    let quick: Value = http
        .get(format!("{}/quicktunnel", fake.metrics))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        quick["hostname"], "",
        "a named tunnel has no quick hostname"
    );
    let seen: Value = http
        .get(format!("{}/x", read_edge(&edge_file)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["headers"]["host"], "maestro.example.com");
    assert!(seen["headers"].get("cf-access-jwt-assertion").is_none());

    let mut fake = fake;
    let status = fake.child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "FAKE_CLOUDFLARED_DIE_AFTER_MS");
}

fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = spawn(args, env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{args:?} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn what_the_real_cloudflared_rejects_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let no_catch_all = dir.path().join("bad.yml");
    std::fs::write(
        &no_catch_all,
        "tunnel: t\ncredentials-file: /dev/null\ningress:\n  - hostname: a.example.com\n    service: http://127.0.0.1:1\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.yml");
    let no_creds = dir.path().join("nocreds.yml");
    std::fs::write(
        &no_creds,
        "tunnel: t\ncredentials-file: /nonexistent/creds.json\ningress:\n  - service: http://127.0.0.1:1\n",
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["tunnel", "--no-autoupdate", "--frobnicate", "run"],
            "flag provided but not defined: -frobnicate",
        ),
        (
            vec!["tunnel", "--config", missing.to_str().unwrap(), "run", "t"],
            "Cannot read configuration file",
        ),
        (
            vec!["tunnel", "--config", no_catch_all.to_str().unwrap(), "run"],
            "The last ingress rule must match all URLs",
        ),
        (
            vec!["tunnel", "--config", no_creds.to_str().unwrap(), "run"],
            "credentials file",
        ),
        (
            vec!["tunnel", "--no-autoupdate", "run"],
            "requires the ID or name of the tunnel",
        ),
        (
            vec!["tunnel", "run", "--token-file", "/nonexistent/token"],
            "Failed to read token file",
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run_to_end(&args, &[("TUNNEL_TOKEN", "")]);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(" ERR ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_command_line_is_recorded_for_tests_that_check_it() {
    let dir = tempfile::tempdir().unwrap();
    let argv = dir.path().join("argv");
    let (code, _) = run_to_end(
        &["tunnel", "--nope"],
        &[("FAKE_CLOUDFLARED_ARGV_FILE", argv.to_str().unwrap())],
    );
    assert_eq!(code, Some(1));
    let recorded = std::fs::read_to_string(argv).unwrap();
    assert_eq!(
        recorded.lines().skip(1).collect::<Vec<_>>(),
        ["tunnel", "--nope"]
    );
}
