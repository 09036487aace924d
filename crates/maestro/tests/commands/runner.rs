//! End to end: runners start, stop and lose real processes. `maestro serve` with its own
//! runner, and `maestro runner` processes beside it, run fake agents (shell scripts) from an
//! agents file; the tests check the processes themselves (their pids, files they write) and
//! what the server says about their sessions.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maestro_client::Client;
use maestro_protocol::{
    CreateProject, CreateTask, NeedsInput, Session, SpawnRequest, UpdateSession,
};
use support::{BIN, Server};

const WAIT: Duration = Duration::from_secs(20);

/// An agents file with the fake agents the tests use; `marks` is where they leave traces.
fn agents_file(dir: &Path, marks: &Path) -> PathBuf {
    let marks = marks.display();
    let file = dir.join("agents.toml");
    std::fs::write(
        &file,
        format!(
            r#"
# Leaves its pid in marks/<session>, then waits; ignores SIGINT (Stop must climb the ladder).
[agents.stubborn]
command = ["sh", "-c", "trap '' INT; echo $$ >> {marks}/$MAESTRO_SESSION_ID; echo started; exec sleep 600"]
prompt = "none"
resume = ["sh", "-c", "echo resumed >> {marks}/$MAESTRO_SESSION_ID.resumed; exec sleep 600"]

# Prints its prompt (passed as an argument) and the directory it runs in, then exits 0.
[agents.echo]
command = ["sh", "-c", "echo \"prompt=$0 cwd=$(pwd)\" > {marks}/$MAESTRO_SESSION_ID; exit 0"]

[agents.missing]
command = ["surely-not-installed-agent"]

# The real bash, interactive, with a plain prompt.
[agents.shell]
command = ["env", "PS1=$ ", "bash", "--norc", "--noprofile", "-i"]
prompt = "none"
"#
        ),
    )
    .unwrap();
    file
}

/// A project working in `working_dir`, with one task.
async fn project_and_task(c: &Client, working_dir: &str, title: &str) -> (String, String) {
    let project = c
        .create_project(&CreateProject {
            name: Some("fleet".into()),
            working_dir: Some(working_dir.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let task = c
        .create_task(&CreateTask {
            project_id: Some(project.clone()),
            title: Some(title.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    (project, task)
}

struct Fleet {
    server: Server,
    marks: tempfile::TempDir,
    agents: PathBuf,
    project: String,
    task: String,
}

impl Fleet {
    async fn start(extra: &[(&str, &str)], working_dir: Option<&Path>) -> Fleet {
        let marks = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        let agents = agents_file(conf.path(), marks.path());
        let agents_str = agents.to_str().unwrap().to_owned();
        let mut env = vec![
            ("RUNNER", "on"),
            ("AGENTS_FILE", agents_str.as_str()),
            ("MAESTRO_MACHINE_ID", "serve-machine"),
            ("STOP_GRACE_MS", "200"),
        ];
        env.extend_from_slice(extra);
        let server = Server::start_with_env(&env).await;
        std::mem::forget(conf); // the agents file must outlive the server
        let c = server.client();
        let wd = working_dir
            .map(|p| p.to_str().unwrap().to_owned())
            .unwrap_or_else(|| marks.path().to_str().unwrap().to_owned());
        let (project, task) = project_and_task(&c, &wd, "Make the build green").await;
        Fleet {
            server,
            marks,
            agents,
            project,
            task,
        }
    }

    fn client(&self) -> Client {
        self.server.client()
    }

    async fn spawn(&self, tool: &str, extra: SpawnRequest) -> String {
        self.client()
            .spawn(
                &SpawnRequest {
                    project_id: Some(self.project.clone()),
                    task_ids: Some(vec![self.task.clone()]),
                    agent_tool: Some(tool.into()),
                    ..extra
                },
                None,
            )
            .await
            .unwrap()
            .session_id
    }

    async fn until(&self, sid: &str, what: &str, ok: impl Fn(&Session) -> bool) -> Session {
        let c = self.client();
        let deadline = Instant::now() + WAIT;
        loop {
            let s = c.get_session(sid).await.unwrap();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{sid} never became {what}: {} {:?} {:?}",
                s.status,
                s.failure_reason,
                s.timeline.iter().map(|t| &t.message).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pids the agent of `sid` wrote, once it wrote one.
    async fn pids(&self, sid: &str) -> Vec<i32> {
        let file = self.marks.path().join(sid);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && !text.trim().is_empty()
            {
                return text.lines().map(|l| l.trim().parse().unwrap()).collect();
            }
            assert!(
                Instant::now() < deadline,
                "the agent of {sid} never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `maestro runner` as its own process, on machine `machine`.
    fn runner(&self, name: &str, machine: &str, ttl_ms: &str) -> Running {
        let child = Command::new(BIN)
            .args(["runner", "--name", name])
            .env("MAESTRO_SERVER_URL", &self.server.url)
            .env("MAESTRO_MACHINE_ID", machine)
            .env("AGENTS_FILE", &self.agents)
            .env("MAESTRO_HEARTBEAT_TTL_MS", ttl_ms)
            .env("HOME", self.server.home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start maestro runner");
        Running(child)
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(pid: i32) -> bool {
    // Zombies count as gone: /proc/<pid>/stat's state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(") ").next().unwrap_or("").chars().next();
            state != Some('Z')
        })
        .unwrap_or(false)
}

async fn until_gone(pid: i32) {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runner_online(c: &Client, machine: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = c
            .list_runners()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.online && r.machine_id == machine)
            .count();
        if n >= count {
            return;
        }
        assert!(Instant::now() < deadline, "no runner online on {machine}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_starts_the_agent_and_stop_stops_one_that_ignores_sigint() {
    let fleet = Fleet::start(&[], None).await;
    let c = fleet.client();
    runner_online(&c, "serve-machine", 1).await;
    let sid = fleet.spawn("stubborn", SpawnRequest::default()).await;
    let pids = fleet.pids(&sid).await;
    assert_eq!(pids.len(), 1, "one agent for one spawn: {pids:?}");
    let s = fleet
        .until(&sid, "working", |s| s.status == "working")
        .await;
    let meta = s.metadata.unwrap();
    assert_eq!(meta["launcher"], "runner");
    assert_eq!(meta["pid"], pids[0]);
    assert!(alive(pids[0]));

    c.stop_session(&sid, None).await.unwrap();
    let s = fleet
        .until(&sid, "stopped", |s| s.status == "stopped")
        .await;
    assert!(s.completed_at.is_some());
    until_gone(pids[0]).await;

    // Resume starts it again, with the agent's resume command.
    c.resume_session(&sid).await.unwrap();
    let resumed = fleet.marks.path().join(format!("{sid}.resumed"));
    let deadline = Instant::now() + WAIT;
    while !resumed.exists() {
        assert!(
            Instant::now() < deadline,
            "resume never ran the resume command"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet
        .until(&sid, "working again", |s| s.status == "working")
        .await;
    c.stop_session(&sid, None).await.unwrap();
    fleet
        .until(&sid, "stopped again", |s| s.status == "stopped")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_and_the_worktree_reach_the_agent() {
    // A real repository, so the spawn can ask for a worktree.
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(repo.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["commit", "-q", "--allow-empty", "-m", "start"]);
    let fleet = Fleet::start(&[], Some(repo.path())).await;
    runner_online(&fleet.client(), "serve-machine", 1).await;
    let sid = fleet
        .spawn(
            "echo",
            SpawnRequest {
                worktree: Some(true),
                ..Default::default()
            },
        )
        .await;
    let s = fleet
        .until(&sid, "completed", |s| s.status == "completed")
        .await;
    let worktree = s.metadata.unwrap()["worktree"]
        .as_str()
        .expect("the worktree is recorded")
        .to_owned();
    let trace = std::fs::read_to_string(fleet.marks.path().join(&sid)).unwrap();
    assert!(trace.contains("prompt=Task "), "{trace}");
    assert!(trace.contains("Make the build green"), "{trace}");
    assert!(trace.contains(&format!("cwd={worktree}")), "{trace}");
    let branch = Command::new("git")
        .args(["-C", &worktree, "branch", "--show-current"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&branch.stdout).trim(),
        format!("maestro/{sid}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_missing_on_path_fails_the_session_with_the_reason() {
    let fleet = Fleet::start(&[], None).await;
    runner_online(&fleet.client(), "serve-machine", 1).await;
    let sid = fleet.spawn("missing", SpawnRequest::default()).await;
    let s = fleet.until(&sid, "failed", |s| s.status == "failed").await;
    let reason = s.failure_reason.unwrap();
    assert!(
        reason.starts_with("agent_not_found: surely-not-installed-agent is not on PATH on "),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_start_exactly_one_agent_per_spawn() {
    let fleet = Fleet::start(&[], None).await;
    let c = fleet.client();
    // A second runner on the same machine competes with the server's own for every spawn.
    let _second = fleet.runner("second", "serve-machine", "15000");
    runner_online(&c, "serve-machine", 2).await;
    // Spawned from the phone (`session:spawn` on /mobile).
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let ack = mobile_action(
            &fleet.server.url,
            &fleet.project,
            "session:spawn",
            serde_json::json!({
                "projectId": fleet.project,
                "taskIds": [fleet.task],
                "agentTool": "stubborn",
            }),
        )
        .await;
        let ack: serde_json::Value = serde_json::from_str(&ack).unwrap();
        let ack = &ack[0];
        assert_eq!(ack["ok"], true, "{ack}");
        sessions.push(ack["sessionId"].as_str().unwrap().to_owned());
    }
    let mut runners_used = std::collections::BTreeSet::new();
    for sid in &sessions {
        let pids = fleet.pids(sid).await;
        let s = fleet.until(sid, "working", |s| s.status == "working").await;
        runners_used.insert(s.metadata.unwrap()["runnerId"].as_str().unwrap().to_owned());
        // Give a second launch time to show itself, then count again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = fleet.pids(sid).await;
        assert_eq!(again.len(), 1, "{sid} was started {} times", again.len());
        assert_eq!(pids, again);
    }
    for sid in &sessions {
        c.stop_session(sid, Some(100)).await.unwrap();
    }
    for sid in &sessions {
        fleet.until(sid, "stopped", |s| s.status == "stopped").await;
    }
    eprintln!("runners used: {runners_used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_fails_its_sessions_as_runner_lost() {
    let fleet = Fleet::start(
        &[
            ("HEARTBEAT_TTL_MS", "600"),
            ("HEARTBEAT_GRACE_MS", "200"),
            ("SWEEP_INTERVAL_MS", "50"),
        ],
        None,
    )
    .await;
    let c = fleet.client();
    let mut remote = fleet.runner("remote", "other-machine", "600");
    runner_online(&c, "other-machine", 1).await;
    let sid = fleet
        .spawn(
            "stubborn",
            SpawnRequest {
                machine_id: Some("other-machine".into()),
                ..Default::default()
            },
        )
        .await;
    let pid = fleet.pids(&sid).await[0];
    let s = fleet
        .until(&sid, "working", |s| s.status == "working")
        .await;
    assert_eq!(s.metadata.unwrap()["machineId"], "other-machine");
    remote.0.kill().unwrap(); // SIGKILL
    remote.0.wait().unwrap();
    let s = fleet.until(&sid, "failed", |s| s.status == "failed").await;
    assert_eq!(s.failure_reason.as_deref(), Some("runner_lost"));
    // Its terminal closed with it: the agent got SIGHUP.
    until_gone(pid).await;
    let runners = c.list_runners().await.unwrap();
    let r = runners
        .iter()
        .find(|r| r.machine_id == "other-machine")
        .unwrap();
    assert!(!r.online);
}

/// A viewer of a session's terminal over the real WebSocket.
struct Viewer {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    screen: vt100::Parser,
    /// The `code`s of the `error` messages received.
    errors: Vec<String>,
}

impl Viewer {
    async fn open(server_url: &str, sid: &str) -> (Viewer, serde_json::Value) {
        let url = format!(
            "{}/api/sessions/{sid}/terminal",
            server_url.replacen("http://", "ws://", 1)
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        use futures_util::StreamExt;
        let hello = match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                serde_json::from_str::<serde_json::Value>(&t).unwrap()
            }
            other => panic!("expected hello, got {other:?}"),
        };
        assert_eq!(hello["type"], "hello", "{hello}");
        let rows = hello["rows"].as_u64().unwrap_or(24).max(1) as u16;
        let cols = hello["cols"].as_u64().unwrap_or(80).max(1) as u16;
        let screen = vt100::Parser::new(
            std::num::NonZeroU16::new(rows).unwrap(),
            std::num::NonZeroU16::new(cols).unwrap(),
            0,
        );
        (
            Viewer {
                ws,
                screen,
                errors: Vec::new(),
            },
            hello,
        )
    }

    async fn send_text(&mut self, v: serde_json::Value) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
            .await
            .unwrap();
    }

    async fn type_keys(&mut self, keys: &str) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::binary(
                keys.as_bytes().to_vec(),
            ))
            .await
            .unwrap();
    }

    /// Reads until the screen shows `text` (or a text message satisfies `until`).
    async fn until_screen(&mut self, what: impl Fn(&str) -> bool) -> String {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let contents = self.screen.screen().contents();
            if what(&contents) {
                return contents;
            }
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("the screen never matched; it shows:\n{contents}"));
            match msg {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                    self.screen.process(&b)
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "snapshot" {
                        self.screen.process(b"\x1bc");
                    }
                    if v["type"] == "error" {
                        self.errors
                            .push(v["code"].as_str().unwrap_or("").to_owned());
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the terminal closed: {other:?}\n{contents}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_watches_and_types_into_a_spawned_shell() {
    let fleet = Fleet::start(&[], None).await;
    let c = fleet.client();
    runner_online(&c, "serve-machine", 1).await;
    // The real bash in a pseudo-terminal.
    let sid = fleet.spawn("shell", SpawnRequest::default()).await;
    fleet
        .until(&sid, "working", |s| s.status == "working")
        .await;
    let (mut viewer, hello) = Viewer::open(&fleet.server.url, &sid).await;
    assert_eq!(hello["canType"], true, "local trust may type");
    viewer.until_screen(|s| s.contains("$")).await;
    // Typing needs control first.
    viewer.type_keys("echo nope\r").await;
    viewer
        .send_text(serde_json::json!({ "type": "take-control" }))
        .await;
    viewer.type_keys("echo hi-from-the-phone\r").await;
    let screen = viewer
        .until_screen(|s| s.lines().any(|l| l.trim() == "hi-from-the-phone"))
        .await;
    assert!(
        !screen.lines().any(|l| l.trim() == "nope"),
        "typed without control: {screen}"
    );
    assert_eq!(viewer.errors, ["not_in_control"]);
    // A late viewer gets the screen as it is.
    let (mut late, _) = Viewer::open(&fleet.server.url, &sid).await;
    late.until_screen(|s| s.lines().any(|l| l.trim() == "hi-from-the-phone"))
        .await;
    c.stop_session(&sid, Some(200)).await.unwrap();
    fleet
        .until(&sid, "stopped", |s| s.status == "stopped")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_the_phone_is_typed_into_a_spawned_agent() {
    let fleet = Fleet::start(&[], None).await;
    let c = fleet.client();
    runner_online(&c, "serve-machine", 1).await;
    let sid = fleet.spawn("shell", SpawnRequest::default()).await;
    fleet
        .until(&sid, "working", |s| s.status == "working")
        .await;
    let (mut viewer, _) = Viewer::open(&fleet.server.url, &sid).await;
    viewer.until_screen(|s| s.contains("$")).await;
    // The agent asks (as its hook would), and the phone answers through
    // `session:reply-input` on /mobile (Engine.IO polling here).
    c.update_session(
        &sid,
        &UpdateSession {
            needs_input: Some(NeedsInput {
                active: true,
                message: Some("Which command?".into()),
                since: None,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ack = reply_input(&fleet, &sid, "echo replied-from-phone").await;
    assert!(ack.contains("\"ok\":true"), "{ack}");
    viewer
        .until_screen(|s| s.lines().any(|l| l.trim() == "replied-from-phone"))
        .await;
    c.stop_session(&sid, Some(200)).await.unwrap();
    fleet
        .until(&sid, "stopped", |s| s.status == "stopped")
        .await;
}

/// `session:reply-input` on `/mobile`; the ack packet.
async fn reply_input(fleet: &Fleet, sid: &str, message: &str) -> String {
    mobile_action(
        &fleet.server.url,
        &fleet.project,
        "session:reply-input",
        serde_json::json!({ "sessionId": sid, "message": message }),
    )
    .await
}

/// One client action on `/mobile` over Engine.IO long-polling, as the phone sends it; the
/// ack's JSON.
async fn mobile_action(
    server: &str,
    project: &str,
    event: &str,
    data: serde_json::Value,
) -> String {
    let http = reqwest::Client::new();
    let base = format!("{server}/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let open: serde_json::Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    let url = format!("{base}&sid={}", open["sid"].as_str().unwrap());
    let post = |body: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(&url)
                .header("content-type", "text/plain;charset=UTF-8")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    post(format!(
        "40/mobile,{}",
        serde_json::json!({ "projectId": project })
    ))
    .await;
    let mut got = String::new();
    let deadline = Instant::now() + WAIT;
    while !got.contains("40/mobile,") {
        assert!(Instant::now() < deadline, "no connect: {got}");
        got.push_str(&http.get(&url).send().await.unwrap().text().await.unwrap());
    }
    post(format!("42/mobile,1{}", serde_json::json!([event, data]))).await;
    loop {
        assert!(Instant::now() < deadline, "no ack: {got}");
        let text = http.get(&url).send().await.unwrap().text().await.unwrap();
        if let Some(ack) = text.split('\u{1e}').find(|p| p.starts_with("43/mobile,1")) {
            return ack.trim_start_matches("43/mobile,1").to_owned();
        }
        got.push_str(&text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_start_one_agent_per_spawn_and_share_its_terminal() {
    use maestro_testkit::process::MaestroProcess;
    use maestro_testkit::redis::RedisServer;
    let dir = tempfile::tempdir().unwrap();
    let marks = tempfile::tempdir().unwrap();
    let agents = agents_file(dir.path(), marks.path());
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    // Servers sharing a store share its hash key.
    let key = dir.path().join("hash-key");
    let env = [
        ("REDIS_URL", url.as_str()),
        ("HASH_KEY_FILE", key.to_str().unwrap()),
        ("RUNNER", "on"),
        ("AGENTS_FILE", agents.to_str().unwrap()),
        ("MAESTRO_MACHINE_ID", "shared-machine"),
        ("STOP_GRACE_MS", "200"),
    ];
    let bin = Path::new(BIN);
    let a = MaestroProcess::start(bin, &dir.path().join("a"), &env);
    let b = MaestroProcess::start(bin, &dir.path().join("b"), &env);
    let (ca, cb) = (Client::new(a.url()).unwrap(), Client::new(b.url()).unwrap());
    // Each server runs a runner for the same machine: both compete for every spawn.
    runner_online(&ca, "shared-machine", 2).await;
    let (project, task) = project_and_task(&ca, marks.path().to_str().unwrap(), "t").await;
    let mut sessions = Vec::new();
    for i in 0..6 {
        let c = if i % 2 == 0 { &ca } else { &cb };
        let spawned = c
            .spawn(
                &SpawnRequest {
                    project_id: Some(project.clone()),
                    task_ids: Some(vec![task.clone()]),
                    agent_tool: Some("stubborn".into()),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        sessions.push(spawned.session_id);
    }
    let pids_of = |sid: &str| -> Vec<i32> {
        std::fs::read_to_string(marks.path().join(sid))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    for sid in &sessions {
        while pids_of(sid).is_empty() {
            assert!(Instant::now() < deadline, "{sid} never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for sid in &sessions {
        assert_eq!(pids_of(sid).len(), 1, "{sid} was started more than once");
    }
    // A viewer on each server sees the same terminal, wherever its runner is.
    let sid = &sessions[0];
    for server in [a.url(), b.url()] {
        let (mut viewer, _) = Viewer::open(server, sid).await;
        viewer.until_screen(|s| s.contains("started")).await;
    }
    for sid in &sessions {
        cb.stop_session(sid, Some(100)).await.unwrap();
    }
    for sid in &sessions {
        let deadline = Instant::now() + WAIT;
        while ca.get_session(sid).await.unwrap().status != "stopped" {
            assert!(Instant::now() < deadline, "{sid} never stopped");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pid = pids_of(sid)[0];
        until_gone(pid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_run_at_the_desk_streams_its_terminal_and_stops_from_the_phone() {
    let fleet = Fleet::start(&[("RUNNER", "off")], None).await;
    let c = fleet.client();
    let mut desk = Command::new(BIN)
        .args(["run", "--project", &fleet.project, "--"])
        .args(["sh", "-c", "trap '' INT; echo at-the-desk; exec sleep 600"])
        .env("MAESTRO_SERVER_URL", &fleet.server.url)
        .env("HOME", fleet.server.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let sid = loop {
        let sessions = c.list_sessions(&Default::default()).await.unwrap();
        if let Some(s) = sessions.iter().find(|s| s.online == Some(true)) {
            break s.id.clone();
        }
        assert!(Instant::now() < deadline, "maestro run never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (mut viewer, _) = Viewer::open(&fleet.server.url, &sid).await;
    viewer.until_screen(|s| s.contains("at-the-desk")).await;
    c.stop_session(&sid, None).await.unwrap();
    fleet
        .until(&sid, "stopped", |s| s.status == "stopped")
        .await;
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = desk.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "maestro run did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status:?}");
}
