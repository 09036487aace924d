//! `maestro tunnel` end to end, with the fake `cloudflared` (maestro-testkit) first on `PATH`:
//! it really proxies to the server, adding Cloudflare's headers, so a request through its
//! "edge" is a remote request as far as the server can tell.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use maestro_testkit::cloudflared::path_with_fake_cloudflared;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_maestro");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `maestro tunnel`, its stdout lines and the files the fake writes.
struct Tunnel {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // cloudflared is killed with its parent only on a clean exit; here the parent was
        // SIGKILLed, so stop the fake too.
        if let Some(pid) = self.file("pid") {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}

impl Tunnel {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with(free_port(), args, env, None)
    }

    /// Starts `maestro tunnel <args>` for a server on `port`; `path` replaces the PATH that has
    /// the fake first.
    fn start_with(port: u16, args: &[&str], env: &[(&str, &str)], path: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let path = match path {
            Some(p) => p.as_os_str().to_owned(),
            None => path_with_fake_cloudflared(&d.join("bin")),
        };
        let mut cmd = Command::new(BIN);
        cmd.arg("tunnel")
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", d)
            .env("PORT", port.to_string())
            .env("DATA_DIR", d.join("data"))
            .env("SESSION_DIR", d.join("sessions"))
            .env("SKILLS_DIR", d.join("skills"))
            .env("LOG_LEVEL", "warn")
            .env("FAKE_CLOUDFLARED_EDGE_FILE", d.join("edge"))
            .env("FAKE_CLOUDFLARED_PID_FILE", d.join("pid"))
            .env("FAKE_CLOUDFLARED_ARGV_FILE", d.join("argv"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let lines = pipe_lines(child.stdout.take().unwrap());
        let stderr = pipe_lines(child.stderr.take().unwrap());
        Self {
            child,
            dir,
            port,
            lines,
            stderr,
        }
    }

    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(name)).ok()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The next stdout line satisfying `pred`, within 30 s.
    fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no such line on stdout; stderr: {}",
                    self.stderr.try_iter().collect::<Vec<_>>().join("\n")
                ),
            }
        }
    }

    /// The next stderr line satisfying `pred`, within 30 s.
    fn wait_stderr(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no such line on stderr"),
            }
        }
    }

    /// The public URL from the next "reachable at" line.
    fn wait_url(&self) -> String {
        let line = self.wait_line(|l| l.starts_with("Maestro is reachable at "));
        line.trim_start_matches("Maestro is reachable at ")
            .trim()
            .to_owned()
    }

    fn local(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then the exit status within 30 s.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "maestro tunnel did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn pipe_lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid.trim()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Waits until `pid` is gone (a zombie is reaped by its parent, which waits for it).
fn wait_gone(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_quick_tunnel_prints_its_url_and_a_pairing_and_the_edge_needs_a_credential() {
    let mut tunnel = Tunnel::start(&["--quick"], &[]);
    let url = tunnel.wait_url();
    assert!(
        url.starts_with("https://") && url.ends_with(".trycloudflare.com"),
        "{url}"
    );
    tunnel.wait_line(|l| l.contains("hostname changes every time"));
    let pair_line = tunnel.wait_line(|l| l.contains("/pair#c="));
    let pair_url = pair_line.trim();
    assert!(
        pair_url.starts_with(&format!("{url}/pair#c=")),
        "{pair_url}"
    );
    let code = pair_url.split("#c=").nth(1).unwrap();
    tunnel.wait_line(|l| l.contains('▄') || l.contains('▀'));

    let edge = tunnel.file("edge").expect("the fake's edge address");
    let http = reqwest::Client::new();
    // Through the tunnel, without a credential: refused.
    let refused = http
        .get(format!("{edge}/api/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // On this machine, directly: local trust, as before.
    let local = http
        .get(format!("{}/api/projects", tunnel.local()))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);

    // The phone pairs through the tunnel with the printed code, then is let in.
    let paired = http
        .post(format!("{edge}/api/auth/pair"))
        .json(&json!({ "code": code, "deviceName": "test phone", "returnToken": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(paired.status(), 200);
    let paired: Value = paired.json().await.unwrap();
    let token = paired["token"].as_str().unwrap();
    let allowed = http
        .get(format!("{edge}/api/projects"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);

    // Live events through the tunnel: refused without a credential; with the device's cookie,
    // /mobile connects and replays what happened since `lastSeq`.
    let project: Value = http
        .post(format!("{}/api/projects", tunnel.local()))
        .json(&json!({ "name": "p", "workingDir": "/tmp" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let project = project["id"].as_str().unwrap();
    http.post(format!("{}/api/tasks", tunnel.local()))
        .json(&json!({ "projectId": project, "title": "while away" }))
        .send()
        .await
        .unwrap();
    let auth = json!({ "projectId": project, "lastSeq": 0 });
    let refused = mobile_through(&edge, &auth, None).await.err().unwrap();
    assert!(refused.starts_with("UNAUTHORIZED"), "{refused}");
    let cookie = format!("maestro_device={token}");
    let replayed = mobile_through(&edge, &auth, Some(&cookie)).await.unwrap();
    assert!(
        replayed
            .iter()
            .any(|m| m.contains("\"task:created\"") && m.contains("while away")),
        "{replayed:?}"
    );

    // SIGTERM stops the tunnel and cloudflared with it.
    let cloudflared = tunnel.file("pid").unwrap();
    assert!(alive(&cloudflared));
    let status = tunnel.terminate();
    assert!(status.success(), "{status}");
    wait_gone(&cloudflared);
}

/// Connects a Socket.IO WebSocket to `/mobile` through the fake edge with `auth` (and the
/// cookie, if any): the packets that follow the namespace's acceptance (the replay), or the
/// `connect_error` message.
async fn mobile_through(
    edge: &str,
    auth: &Value,
    cookie: Option<&str>,
) -> Result<Vec<String>, String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        edge.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let open = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => break t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no open packet: {other:?}"),
        }
    };
    assert!(open.starts_with('0'), "{open}");
    ws.send(Message::Text(format!("40/mobile,{auth}").into()))
        .await
        .unwrap();
    let mut after = Vec::new();
    let mut accepted = false;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        let Message::Text(t) = msg else { continue };
        let t = t.to_string();
        if let Some(rest) = t.strip_prefix("44/mobile,") {
            let v: Value = serde_json::from_str(rest).unwrap();
            return Err(v["message"].as_str().unwrap().to_owned());
        }
        if t.starts_with("40/mobile,") {
            accepted = true;
        } else if accepted {
            after.push(t);
            if after.iter().any(|m| m.contains("task:created")) {
                break;
            }
        }
    }
    assert!(accepted, "no answer to the namespace connect");
    Ok(after)
}

#[tokio::test]
async fn a_cloudflared_that_dies_is_started_again_with_a_new_hostname_and_pairing() {
    let tunnel = Tunnel::start(&["--quick"], &[]);
    let first_url = tunnel.wait_url();
    tunnel.wait_line(|l| l.contains("/pair#c="));
    let first_pid = tunnel.file("pid").unwrap();
    let first_edge = tunnel.file("edge").unwrap();

    assert!(
        Command::new("kill")
            .args(["-9", first_pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let second_url = tunnel.wait_url();
    assert_ne!(second_url, first_url, "a quick tunnel's hostname is new");
    let pair_line = tunnel.wait_line(|l| l.contains("/pair#c="));
    assert!(
        pair_line
            .trim()
            .starts_with(&format!("{second_url}/pair#c="))
    );
    let second_pid = tunnel.file("pid").unwrap();
    let second_edge = tunnel.file("edge").unwrap();
    assert_ne!(second_pid, first_pid);
    assert_ne!(second_edge, first_edge);
    assert!(alive(&second_pid));

    // The new edge reaches the (restarted) server, which still wants a credential.
    let http = reqwest::Client::new();
    let refused = http
        .get(format!("{second_edge}/api/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let ready = http
        .get(format!("{}/health", tunnel.local()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[test]
fn without_cloudflared_it_says_how_to_install_it() {
    let empty = tempfile::tempdir().unwrap();
    let mut tunnel = Tunnel::start_with(free_port(), &["--quick"], &[], Some(empty.path()));
    let status = tunnel.child.wait().unwrap();
    assert!(!status.success());
    let stderr: Vec<String> = tunnel.stderr.iter().collect();
    let stderr = stderr.join("\n");
    assert!(stderr.contains("cloudflared is not installed"), "{stderr}");
    assert!(stderr.contains("brew install cloudflared"), "{stderr}");
    assert!(stderr.contains("apt-get install cloudflared"), "{stderr}");
    assert!(
        stderr.contains("https://github.com/cloudflare/cloudflared/releases"),
        "{stderr}"
    );
    assert!(
        !tunnel.path("data/server-url").exists(),
        "no server was started"
    );
}

#[test]
fn auth_cannot_be_turned_off_and_a_tunnel_kind_is_required() {
    for (args, expected) in [
        (vec!["--quick", "--auth", "off"], "invalid value 'off'"),
        (vec![], "choose a tunnel"),
        (vec!["--token-file", "/dev/null"], "--hostname <HOSTNAME>"),
    ] {
        let mut tunnel = Tunnel::start(&args, &[]);
        let status = tunnel.child.wait().unwrap();
        assert!(!status.success(), "{args:?}");
        let stderr = tunnel.stderr.iter().collect::<Vec<_>>().join("\n");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_dashboard_tunnel_token_is_passed_as_a_file_or_the_environment_never_as_an_argument() {
    let secret = "eyJhIjoiYWNjb3VudCIsInQiOiJ0dW5uZWwiLCJzIjoic2VjcmV0In0";
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, secret).unwrap();
    let token_path = token_file.to_str().unwrap();

    for (args, env) in [
        (
            vec![
                "--token-file",
                token_path,
                "--hostname",
                "maestro.example.com",
            ],
            vec![],
        ),
        (
            vec!["--hostname", "maestro.example.com"],
            vec![("TUNNEL_TOKEN", secret)],
        ),
    ] {
        // The dashboard's ingress, which the fake cannot fetch, points at the server's port.
        let port = free_port();
        let origin = format!("http://127.0.0.1:{port}");
        let mut env = env;
        env.extend([
            ("FAKE_CLOUDFLARED_ORIGIN", origin.as_str()),
            ("FAKE_CLOUDFLARED_HOSTNAME", "maestro.example.com"),
        ]);
        let tunnel = Tunnel::start_with(port, &args, &env, None);
        let url = tunnel.wait_url();
        assert_eq!(url, "https://maestro.example.com");
        tunnel.wait_line(|l| l.starts_with("  https://maestro.example.com/pair#c="));
        let argv = tunnel.file("argv").unwrap();
        assert!(
            !argv.contains(secret),
            "the token is on the command line: {argv}"
        );
        let argv: Vec<&str> = argv.lines().skip(1).collect();
        if args.contains(&"--token-file") {
            assert_eq!(
                argv[argv.len() - 3..],
                ["run", "--token-file", token_path],
                "{argv:?}"
            );
        } else {
            assert_eq!(argv.last(), Some(&"run"), "{argv:?}");
        }
        let edge = tunnel.file("edge").unwrap();
        let refused = reqwest::get(format!("{edge}/api/projects")).await.unwrap();
        assert_eq!(refused.status(), 401);
    }
}

#[tokio::test]
async fn a_named_tunnel_runs_from_a_generated_ingress_config() {
    let creds_dir = tempfile::tempdir().unwrap();
    let creds = creds_dir.path().join("6ff42ae2.json");
    std::fs::write(
        &creds,
        r#"{"AccountTag":"a","TunnelSecret":"s","TunnelID":"t"}"#,
    )
    .unwrap();
    let tunnel = Tunnel::start(
        &[
            "--name",
            "laptop",
            "--hostname",
            "Maestro.Example.com",
            "--credentials-file",
            creds.to_str().unwrap(),
        ],
        &[],
    );
    let url = tunnel.wait_url();
    assert_eq!(url, "https://maestro.example.com");
    tunnel.wait_line(|l| l.contains("/pair#c="));

    let config_path = tunnel.path("data/tunnel/laptop.yml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let doc = &yaml_rust2::YamlLoader::load_from_str(&config).unwrap()[0];
    assert_eq!(doc["tunnel"].as_str(), Some("laptop"));
    assert_eq!(doc["credentials-file"].as_str(), creds.to_str());
    let ingress = doc["ingress"].as_vec().unwrap();
    assert_eq!(ingress[0]["hostname"].as_str(), Some("maestro.example.com"));
    assert_eq!(
        ingress[0]["service"].as_str().map(str::to_owned),
        Some(tunnel.local())
    );
    assert_eq!(ingress[1]["service"].as_str(), Some("http_status:404"));

    let argv = tunnel.file("argv").unwrap();
    let argv: Vec<&str> = argv.lines().skip(1).collect();
    assert_eq!(
        argv[argv.len() - 4..],
        ["--config", config_path.to_str().unwrap(), "run", "laptop"]
    );
    let edge = tunnel.file("edge").unwrap();
    let refused = reqwest::get(format!("{edge}/api/projects")).await.unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn a_running_server_is_attached_to_told_the_public_url_and_left_running() {
    let server_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = maestro_testkit::process::MaestroProcess::start(
        Path::new(BIN),
        server_dir.path(),
        &[("PORT", &port.to_string())],
    );
    let mut tunnel = Tunnel::start_with(port, &["--quick"], &[], None);
    tunnel.wait_line(|l| {
        l == format!("Using the Maestro server already running at http://127.0.0.1:{port}.")
    });
    let url = tunnel.wait_url();
    let pairing = tunnel.wait_line(|l| l.contains("/pair#c="));
    assert!(pairing.contains(&format!("{url}/pair#c=")), "{pairing}");
    // The running server was told the tunnel's URL: it answers that host (401, not 421: a
    // credential is still needed).
    let edge = tunnel.file("edge").unwrap();
    let refused = reqwest::get(format!("{edge}/api/projects")).await.unwrap();
    assert_eq!(refused.status(), 401);
    let host = url.trim_start_matches("https://").to_owned();
    let through_host = || {
        let host = host.clone();
        let base = server.url().to_owned();
        async move {
            reqwest::Client::new()
                .get(format!("{base}/health"))
                .header("host", host)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(through_host().await, 200);

    let status = tunnel.terminate();
    assert!(status.success(), "{status}");
    let health = reqwest::get(format!("{}/health", server.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the attached server keeps running");
    // The tunnel is gone: so is the server's trust in its host.
    assert_eq!(through_host().await, 421);
}

#[test]
fn a_cloudflared_that_keeps_dying_is_restarted_with_growing_backoff() {
    let tunnel = Tunnel::start(&["--quick"], &[("FAKE_CLOUDFLARED_DIE_AFTER_MS", "300")]);
    let restarts = |delay: &'static str| {
        move |l: &str| {
            l.starts_with("maestro: cloudflared exited (exit status: 1)")
                && l.ends_with(&format!("starting it again in {delay}"))
        }
    };
    let started = Instant::now();
    tunnel.wait_stderr(restarts("1s"));
    tunnel.wait_stderr(restarts("2s"));
    tunnel.wait_stderr(restarts("4s"));
    // Two waits (1 s, 2 s) happened between the first and the third death.
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn with_auth_required_the_tunnel_still_pairs_using_the_owner_token() {
    let tunnel = Tunnel::start(&["--quick"], &[("AUTH", "required")]);
    let url = tunnel.wait_url();
    let pair_line = tunnel.wait_line(|l| l.contains("/pair#c="));
    assert!(pair_line.trim().starts_with(&format!("{url}/pair#c=")));
    let local = reqwest::get(format!("{}/api/projects", tunnel.local()))
        .await
        .unwrap();
    assert_eq!(
        local.status(),
        401,
        "AUTH=required: even local requests need one"
    );
}
