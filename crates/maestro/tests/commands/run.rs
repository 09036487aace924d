//! End to end: `maestro run -- <agent>` against a real server. The agent is a small shell
//! script in a pseudo-terminal; the test talks to it through `maestro run`'s stdin/stdout
//! (no TTY here, so the plain pipe-through-pty path) and checks what the server saw.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use maestro_client::{Client, SessionQuery};
use maestro_protocol::{
    CreateProject, CreateSession, CreateTask, NeedsInput, Session, UpdateSession,
};
use serde_json::json;
use support::{BIN, Server};
use tokio_tungstenite::tungstenite::Message;

/// Prints, waits for a line, echoes it and exits 3.
const SCRIPT: &str = r#"echo "ready $MAESTRO_SESSION_ID"; read line; echo "got: $line"; exit 3"#;

async fn fixture(client: &Client) -> (String, String) {
    let p = client
        .create_project(&CreateProject {
            name: Some("run".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let t = client
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("agent task".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    (p, t)
}

/// A child process that is killed if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `maestro run` with piped stdin/stdout and a clean environment.
fn maestro_run(server: &Server, env: &[(&str, &str)], args: &[&str]) -> Running {
    maestro_run_in(server, None, env, args)
}

/// [`maestro_run`] in the directory `cwd`.
fn maestro_run_in(
    server: &Server,
    cwd: Option<&std::path::Path>,
    env: &[(&str, &str)],
    args: &[&str],
) -> Running {
    let mut cmd = Command::new(BIN);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    for v in [
        "MAESTRO_SESSION_ID",
        "MAESTRO_PROJECT_ID",
        "MAESTRO_TASK_IDS",
        "MAESTRO_WS_URL",
        "DATA_DIR",
        "MAESTRO_API_URL",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("HOME", server.home.path())
        .env("MAESTRO_SERVER_URL", &server.url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("spawn maestro run"))
}

/// Lines of the agent's output, read on a thread.
fn lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line.trim_end_matches('\r').to_owned()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`.
#[track_caller]
fn expect_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line containing {needle:?}; saw {seen:?}");
}

fn wait(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited normally");
        }
        assert!(Instant::now() < deadline, "maestro run did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn only_session(client: &Client, project: &str) -> Session {
    let sessions = client
        .list_sessions(&SessionQuery {
            project_id: Some(project.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    sessions.into_iter().next().unwrap()
}

#[tokio::test]
async fn run_registers_pipes_input_and_reports_failure_with_the_exit_code() {
    let server = Server::start().await;
    let client = server.client();
    let (p, t) = fixture(&client).await;
    let mut child = maestro_run(
        &server,
        &[],
        &[
            "run",
            "--project",
            &p,
            "--task",
            &t,
            "--",
            "sh",
            "-c",
            SCRIPT,
        ],
    );
    let out = lines(child.stdout.take().unwrap());
    let ready = expect_line(&out, "ready ");

    // The session was created, is working, and the agent sees its id.
    let s = only_session(&client, &p).await;
    assert_eq!(s.status, "working");
    assert_eq!(s.task_ids, [t.as_str()]);
    assert_eq!(ready, format!("ready {}", s.id));

    // A line on stdin reaches the agent through the pty.
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello agent\n")
        .unwrap();
    expect_line(&out, "got: hello agent");
    let code = tokio::task::spawn_blocking(move || wait(&mut child))
        .await
        .unwrap();
    assert_eq!(code, 3, "the agent's exit code is propagated");

    // Reported before maestro run exited: no waiting for heartbeat expiry.
    let s = client.get_session(&s.id).await.unwrap();
    assert_eq!(s.status, "failed");
    let last = s.timeline.last().unwrap();
    assert_eq!(last.kind, "error");
    assert_eq!(last.message.as_deref(), Some("Agent exited with status 3"));
    assert_eq!(last.metadata.as_ref().unwrap()["exitCode"], 3);
}

#[tokio::test]
async fn run_on_a_known_session_reports_completed() {
    let server = Server::start().await;
    let client = server.client();
    let (p, t) = fixture(&client).await;
    let s = client
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![t.clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut child = maestro_run(
        &server,
        &[("MAESTRO_SESSION_ID", &s.id)],
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo \"task=$MAESTRO_TASK_IDS project=$MAESTRO_PROJECT_ID\"",
        ],
    );
    let out = lines(child.stdout.take().unwrap());
    expect_line(&out, &format!("task={t} project={p}"));
    let code = tokio::task::spawn_blocking(move || wait(&mut child))
        .await
        .unwrap();
    assert_eq!(code, 0);
    let s = client.get_session(&s.id).await.unwrap();
    assert_eq!(s.status, "completed");
    assert_eq!(s.timeline.last().unwrap().kind, "session_stopped");
}

#[tokio::test]
async fn run_forwards_sigterm_to_the_agent() {
    let server = Server::start().await;
    let client = server.client();
    let (p, _) = fixture(&client).await;
    let script = r#"trap 'echo "got TERM"; exit 7' TERM; echo ready; while :; do sleep 0.1; done"#;
    let mut child = maestro_run(
        &server,
        &[],
        &["run", "--project", &p, "--", "sh", "-c", script],
    );
    let out = lines(child.stdout.take().unwrap());
    expect_line(&out, "ready");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    expect_line(&out, "got TERM");
    let code = tokio::task::spawn_blocking(move || wait(&mut child))
        .await
        .unwrap();
    assert_eq!(code, 7);
    assert_eq!(only_session(&client, &p).await.status, "failed");
}

#[tokio::test]
async fn run_of_a_missing_program_fails_the_session_with_127() {
    let server = Server::start().await;
    let client = server.client();
    let (p, _) = fixture(&client).await;
    let mut child = maestro_run(
        &server,
        &[],
        &["run", "--project", &p, "--", "/nonexistent/agent-binary"],
    );
    let code = tokio::task::spawn_blocking(move || wait(&mut child))
        .await
        .unwrap();
    assert_eq!(code, 127);
    let s = only_session(&client, &p).await;
    assert_eq!(s.status, "failed");
    let last = s.timeline.last().unwrap();
    assert!(
        last.message
            .as_deref()
            .unwrap()
            .starts_with("Agent could not start")
    );
}

#[tokio::test]
async fn run_without_session_or_project_is_a_usage_error() {
    let server = Server::start().await;
    let mut child = maestro_run(&server, &[], &["run", "--", "true"]);
    let code = tokio::task::spawn_blocking(move || wait(&mut child))
        .await
        .unwrap();
    assert_eq!(code, 2);
}

#[tokio::test]
async fn killing_run_with_sigkill_reports_nothing() {
    let server = Server::start().await;
    let client = server.client();
    let (p, _) = fixture(&client).await;
    let mut child = maestro_run(
        &server,
        &[],
        &[
            "run",
            "--project",
            &p,
            "--",
            "sh",
            "-c",
            "echo ready; sleep 30",
        ],
    );
    let out = lines(child.stdout.take().unwrap());
    expect_line(&out, "ready");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // No completed/failed report was sent; the heartbeat just stops (expiry is issue 6's).
    let s = only_session(&client, &p).await;
    assert_eq!(s.status, "working");
    assert!(
        s.timeline
            .iter()
            .all(|e| e.kind != "error" && e.kind != "session_stopped")
    );
}

/// Marks `session` as waiting for input, as `maestro session needs-input` (the hooks) does.
async fn ask(client: &Client, session: &str) {
    client
        .update_session(
            session,
            &UpdateSession {
                needs_input: Some(NeedsInput {
                    active: true,
                    message: Some("Which database?".into()),
                    since: None,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// Sends `session:reply-input` as a phone would: Socket.IO `/mobile`, spoken directly on
/// the wire (Engine.IO 4 over a WebSocket), and returns the ack.
async fn reply_from_mobile(server: &Server, project: &str, session: &str, message: &str) -> String {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        server.url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let open = ws.next().await.unwrap().unwrap();
    assert!(
        open.to_text().unwrap().starts_with('0'),
        "Engine.IO open: {open:?}"
    );
    let auth = json!({ "projectId": project });
    ws.send(Message::text(format!("40/mobile,{auth}")))
        .await
        .unwrap();
    loop {
        let msg = ws.next().await.unwrap().unwrap();
        let text = msg.to_text().unwrap();
        assert!(!text.starts_with("44/mobile"), "connect refused: {text}");
        if text.starts_with("40/mobile") {
            break;
        }
    }
    let reply = json!(["session:reply-input", { "sessionId": session, "message": message }]);
    ws.send(Message::text(format!("42/mobile,1{reply}")))
        .await
        .unwrap();
    loop {
        let msg = ws.next().await.unwrap().unwrap();
        let text = msg.to_text().unwrap().to_owned();
        if text == "2" {
            ws.send(Message::text("3")).await.unwrap();
        } else if text.starts_with("43/mobile,1") {
            return text;
        }
    }
}

/// The whole reply path: a phone's `session:reply-input` becomes a `session:input` event,
/// which `maestro run` (subscribed to its session on the legacy WebSocket) types into the
/// agent's terminal. A reply to another session is not typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_input_from_mobile_reaches_the_agent() {
    let server = Server::start().await;
    let client = server.client();
    let (p, t) = fixture(&client).await;
    let other = client
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![]),
            status: Some("working".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut child = maestro_run(
        &server,
        &[],
        &[
            "run",
            "--project",
            &p,
            "--task",
            &t,
            "--",
            "sh",
            "-c",
            SCRIPT,
        ],
    );
    let out = lines(child.stdout.take().unwrap());
    let ready = expect_line(&out, "ready ");
    let sid = ready.trim_start_matches("ready ").to_owned();
    assert_eq!(client.get_session(&sid).await.unwrap().status, "working");
    // Let maestro run's WebSocket connect and subscribe before the replies go out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.ws_status().await.unwrap()["connectedClients"] == 0 {
        assert!(
            Instant::now() < deadline,
            "maestro run never opened its WebSocket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A reply is accepted only while the session waits for input, as the agent's hook says.
    for session in [&other.id, &sid] {
        ask(&client, session).await;
    }
    let ack = reply_from_mobile(&server, &p, &other.id, "not for you").await;
    assert!(ack.contains("\"ok\":true"), "{ack}");
    let ack = reply_from_mobile(&server, &p, &sid, "use postgres").await;
    assert!(ack.contains("\"ok\":true"), "{ack}");

    assert_eq!(expect_line(&out, "got: "), "got: use postgres");
    let code = tokio::task::spawn_blocking(move || wait(&mut child))
        .await
        .unwrap();
    assert_eq!(code, 3);
    let s = client.get_session(&sid).await.unwrap();
    assert_eq!(s.status, "failed");
    assert!(s.timeline.iter().any(|e| e.kind == "user_reply"));
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn run_reports_its_work_tree_for_review_when_the_server_is_on_another_machine() {
    let server = Server::start_with_env(&[("MAESTRO_MACHINE_ID", "server-machine")]).await;
    let client = server.client();
    let (p, t) = fixture(&client).await;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("a.txt"), "one\n").unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "initial"]);
    // The agent edits a file and adds one, then waits for a line.
    let script =
        r#"echo edited >> a.txt; printf 'x\ny\n' > 'b c.txt'; echo ready; read line; exit 0"#;
    let mut child = maestro_run_in(
        &server,
        Some(repo.path()),
        &[("MAESTRO_MACHINE_ID", "laptop-machine")],
        &[
            "run",
            "--project",
            &p,
            "--task",
            &t,
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let out = lines(child.stdout.take().unwrap());
    expect_line(&out, "ready");
    let s = only_session(&client, &p).await;
    // The server is not on this machine: it answers from what `maestro run` reported.
    let deadline = Instant::now() + Duration::from_secs(20);
    let changes = loop {
        match client.session_changes(&s.id).await {
            Ok(c) if c.total_files == 2 => break c,
            other => {
                assert!(Instant::now() < deadline, "no report of 2 files: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(changes.machine_id, "laptop-machine");
    assert_eq!(changes.branch.as_deref(), Some("main"));
    assert_eq!((changes.additions, changes.deletions), (3, 0));
    let diff = client.session_diff(&s.id, "a.txt").await.unwrap();
    let added: Vec<&str> = diff.hunks[0]
        .lines
        .iter()
        .filter(|l| l.kind == maestro_protocol::LineKind::Add)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(added, ["edited"]);
    let new = client.session_diff(&s.id, "b c.txt").await.unwrap();
    assert_eq!(new.hunks[0].lines.len(), 2);
    child.stdin.as_mut().unwrap().write_all(b"done\n").unwrap();
    let code = tokio::task::spawn_blocking(move || wait(&mut child))
        .await
        .unwrap();
    assert_eq!(code, 0);
}
