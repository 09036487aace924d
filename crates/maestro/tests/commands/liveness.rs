//! Liveness end to end: a real agent process that heartbeats is SIGKILLed and the server
//! notices (once, even with two servers); a live agent survives a Redis restart and a server
//! restart without being declared dead.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateSession, CreateTask, UpdateTask};
use maestro_testkit::process::{MaestroProcess, free_port};
use maestro_testkit::redis::RedisServer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TTL: &str = "2000";
const FAST: [(&str, &str); 3] = [
    ("HEARTBEAT_TTL_MS", TTL),
    ("HEARTBEAT_GRACE_MS", "500"),
    ("SWEEP_INTERVAL_MS", "50"),
];

fn serve(dir: &Path, extra: &[(&str, &str)]) -> MaestroProcess {
    let mut env: Vec<(&str, &str)> = FAST.to_vec();
    env.extend_from_slice(extra);
    MaestroProcess::start(Path::new(env!("CARGO_BIN_EXE_maestro")), dir, &env)
}

/// An "agent": a shell loop that beats every 200 ms with curl, until killed.
struct Agent(Child);

impl Agent {
    fn start(url: &str, session: &str) -> Self {
        let script = format!(
            "while :; do curl -s -o /dev/null -X POST -H 'content-type: application/json' -d '{{}}' {url}/api/sessions/{session}/heartbeat; sleep 0.2; done"
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        Self(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A project with a task and a working session that reports on it.
async fn working_session(c: &Client) -> (String, String, String) {
    let p = c
        .create_project(&CreateProject {
            name: Some("live".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let t = c
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("t".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let s = c
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![t.clone()]),
            status: Some("working".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    c.update_task(
        &t,
        &UpdateTask {
            update_source: Some("session".into()),
            session_id: Some(s.clone()),
            session_status: Some("working".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (p, t, s)
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Every event frame until a pong.
async fn drain(ws: &mut Ws) -> Vec<Value> {
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("pong")
            .unwrap()
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "pong" {
            return out;
        }
        out.push(v);
    }
}

fn count(frames: &[Value], event: &str) -> usize {
    frames.iter().filter(|f| f["event"] == event).count()
}

async fn assert_failed_once(clients: &[&Client], wss: &mut [Ws], s: &str, t: &str) {
    let c = clients[0];
    wait_until("session failed", Duration::from_secs(15), async || {
        c.get_session(s).await.unwrap().status == "failed"
    })
    .await;
    let session = c.get_session(s).await.unwrap();
    assert_eq!(
        session.failure_reason.as_deref(),
        Some("agent_disconnected")
    );
    assert_eq!(session.online, Some(false));
    assert_eq!(
        c.get_task(t).await.unwrap().task_session_statuses[s],
        "failed"
    );
    // Give any duplicate a chance to show up, then count on every instance.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for ws in wss.iter_mut() {
        let frames = drain(ws).await;
        assert_eq!(
            count(&frames, "notify:session_failed"),
            1,
            "exactly one notify:session_failed"
        );
        assert_eq!(count(&frames, "task:claim_released"), 1);
        let failed = frames
            .iter()
            .find(|f| f["event"] == "notify:session_failed")
            .unwrap();
        assert_eq!(failed["data"]["reason"], "agent_disconnected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_is_noticed_once_local() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("a"), &[]);
    let c = Client::new(server.url()).unwrap();
    let (_, t, s) = working_session(&c).await;
    let mut agent = Agent::start(server.url(), &s);
    wait_until("agent online", Duration::from_secs(10), async || {
        c.get_session(&s).await.unwrap().online == Some(true)
    })
    .await;
    c.raw(
        reqwest::Method::POST,
        &format!("/api/tasks/{t}/claim"),
        Some(&json!({"sessionId": s})),
    )
    .await
    .unwrap();
    let mut ws = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .unwrap()
        .0;
    // Alive for a few TTLs: nothing happens.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(c.get_session(&s).await.unwrap().status, "working");
    agent.kill();
    assert_failed_once(&[&c], std::slice::from_mut(&mut ws), &s, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_is_noticed_once_across_two_redis_instances() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    // Servers sharing a store share its hash key.
    let key = dir.path().join("hash-key");
    let key = key.to_str().unwrap();
    let a = serve(
        &dir.path().join("a"),
        &[("REDIS_URL", &url), ("HASH_KEY_FILE", key)],
    );
    let b = serve(
        &dir.path().join("b"),
        &[("REDIS_URL", &url), ("HASH_KEY_FILE", key)],
    );
    let (ca, cb) = (Client::new(a.url()).unwrap(), Client::new(b.url()).unwrap());
    let (_, t, s) = working_session(&ca).await;
    let mut agent = Agent::start(a.url(), &s);
    wait_until("agent online", Duration::from_secs(10), async || {
        cb.get_session(&s).await.unwrap().online == Some(true)
    })
    .await;
    ca.raw(
        reqwest::Method::POST,
        &format!("/api/tasks/{t}/claim"),
        Some(&json!({"sessionId": s})),
    )
    .await
    .unwrap();
    // The agent asked a human before it died: nobody is left to act on the answer.
    let asked = ca
        .raw(
            reqwest::Method::POST,
            &format!("/api/sessions/{s}/approvals"),
            Some(&json!({"agentTool": "claude-code", "toolName": "Bash", "input": {"command": "make"}})),
        )
        .await
        .unwrap();
    assert_eq!(asked.status.as_u16(), 201, "{}", asked.body);
    let mut wss = vec![
        tokio_tungstenite::connect_async(a.ws_url())
            .await
            .unwrap()
            .0,
        tokio_tungstenite::connect_async(b.ws_url())
            .await
            .unwrap()
            .0,
    ];
    agent.kill();
    assert_failed_once(&[&cb, &ca], &mut wss, &s, &t).await;
    let approval = cb
        .raw(
            reqwest::Method::GET,
            &format!("/api/approvals/{}", asked.body["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap()
        .body;
    assert_eq!(approval["status"], "cancelled", "{approval}");
    assert_eq!(approval["reason"], "the agent stopped responding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_agent_survives_redis_restart() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    let server = serve(&dir.path().join("a"), &[("REDIS_URL", &url)]);
    let c = Client::new(server.url()).unwrap();
    let (_, _, s) = working_session(&c).await;
    let _agent = Agent::start(server.url(), &s);
    wait_until("agent online", Duration::from_secs(10), async || {
        c.get_session(&s).await.unwrap().online == Some(true)
    })
    .await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(3500)).await; // well past TTL + grace
    redis.restart();
    wait_until("Redis back", Duration::from_secs(10), async || {
        c.ready().await.is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let session = c.get_session(&s).await.unwrap();
    assert_eq!(session.status, "working", "a live agent was declared dead");
    assert_eq!(session.online, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_agent_survives_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let mut server = serve(&dir.path().join("a"), &[("PORT", &port)]);
    let c = Client::new(server.url()).unwrap();
    let (_, _, s) = working_session(&c).await;
    let _agent = Agent::start(server.url(), &s);
    wait_until("agent online", Duration::from_secs(10), async || {
        c.get_session(&s).await.unwrap().online == Some(true)
    })
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(3500)).await; // the agent's beats fail meanwhile
    let _server = serve(&dir.path().join("a"), &[("PORT", &port)]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let session = c.get_session(&s).await.unwrap();
    assert_eq!(
        session.status, "working",
        "a live agent was declared dead after a restart"
    );
    assert_eq!(session.online, Some(true));
}
