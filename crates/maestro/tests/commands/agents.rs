//! The real agent CLIs (issue 19): Claude Code, Codex and Gemini CLI as npm publishes them, at
//! the versions pinned in `tests/agents/package.json`, each driven through its own terminal
//! under `maestro run` after `maestro hooks install`, talking to a scripted model of ours on
//! loopback. What the documentation promised is checked against what the programs do.
//!
//! Runs only from `cargo xtask test` (step "real agent CLIs"), which installs the CLIs into
//! the target directory and sets `MAESTRO_AGENT_CLIS` to that directory. Without the variable
//! every test here returns at once (nothing is installed on a developer's machine); with it, a
//! CLI that is missing fails the test.
//!
//! Layout: [`model`] is the scripted model server (Anthropic Messages, OpenAI Responses and
//! Gemini generateContent, streaming); [`Desk`] is the person at the terminal (a PTY running
//! `maestro run -- <cli>`, its screen parsed by `vt100`); the phone is a `respond`-scoped
//! token on the REST API the web app uses.

use crate::support;

use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maestro_client::{Client, SessionQuery};
use maestro_protocol::{
    ANSWERED_AT_TERMINAL, Approval, ApprovalDecision, ApprovalStatus, CreateProject, CreateToken,
    DecideApproval, Scope, Session,
};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::{Value, json};
use support::{BIN, Server};

/// Set by xtask: the directory whose `node_modules/.bin` holds the pinned CLIs.
const CLIS_VAR: &str = "MAESTRO_AGENT_CLIS";
/// Generous: the machine is shared and the CLIs start slowly.
const PATIENCE: Duration = Duration::from_secs(90);

/// The CLI `bin` directory, or `None` outside the harness step.
fn clis() -> Option<PathBuf> {
    let dir = std::env::var_os(CLIS_VAR)?;
    let bin = PathBuf::from(dir).join("node_modules/.bin");
    for name in ["claude", "codex", "gemini"] {
        assert!(
            bin.join(name).exists(),
            "{CLIS_VAR} is set but {} is missing: run `cargo xtask test` (it installs them)",
            bin.join(name).display()
        );
    }
    Some(bin)
}

/// The version a CLI reports, printed for the harness's log.
fn version(bin: &Path, name: &str) -> String {
    let out = std::process::Command::new(bin.join(name))
        .arg("--version")
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("{name} --version: {e}"));
    assert!(out.status.success(), "{name} --version failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn step(tool: &str, scenario: &str) {
    eprintln!("[agents] {tool}: {scenario} …");
}

fn passed(tool: &str, scenario: &str) {
    eprintln!("[agents] {tool}: {scenario}: ok");
}

// ---------------------------------------------------------------------------------------
// The scripted model.

mod model {
    //! A model that asks for one shell command and then finishes. The command is the text
    //! after `MAESTRO_TEST run: ` in the conversation; once the conversation holds the
    //! command's result (or its refusal), the model answers "Finished." Everything the CLIs
    //! send is kept, so a test can check what reached the model (a deny's reason).

    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    pub const MARK: &str = "MAESTRO_TEST run: ";

    #[derive(Default)]
    pub struct Log {
        /// (path, body) of every request.
        pub requests: Vec<(String, String)>,
    }

    #[derive(Clone)]
    pub struct Model {
        pub url: String,
        pub log: Arc<Mutex<Log>>,
    }

    impl Model {
        /// Whether any request body sent to the model contains `text`.
        pub fn received(&self, text: &str) -> bool {
            self.log
                .lock()
                .unwrap()
                .requests
                .iter()
                .any(|(_, b)| b.contains(text))
        }
    }

    impl Model {
        /// The end of the last request's body (for a failure's message).
        pub fn last_tail(&self, n: usize) -> String {
            let log = self.log.lock().unwrap();
            let Some((path, body)) = log.requests.last() else {
                return "(no request)".into();
            };
            let start = body.len().saturating_sub(n);
            let start = (start..body.len())
                .find(|i| body.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{path} … {}", &body[start..])
        }
    }

    pub async fn start() -> Model {
        let log = Arc::new(Mutex::new(Log::default()));
        let app = Router::new().fallback(handle).with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Model { url, log }
    }

    /// The command the latest prompt asks for, unless the model asked for it already in this
    /// conversation (then its outcome, run or refused, is in the conversation too; where the
    /// CLI puts it varies, so the test is that the command appears beyond the prompt).
    fn wanted(body: &str) -> Option<String> {
        let at = body.rfind(MARK)? + MARK.len();
        let rest = &body[at..];
        let end = rest.find(['"', '\\', '\n']).unwrap_or(rest.len());
        let command = rest[..end].trim().to_owned();
        (body.matches(&command).count() < 2).then_some(command)
    }

    async fn handle(State(log): State<Arc<Mutex<Log>>>, uri: Uri, body: Bytes) -> Response {
        let text = String::from_utf8_lossy(&body).into_owned();
        let path = uri.path().to_owned();
        if let Some(dir) = std::env::var_os("MAESTRO_AGENTS_DUMP") {
            let n = log.lock().unwrap().requests.len();
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{n:03}.json")),
                &text,
            );
        }
        let n = {
            let mut log = log.lock().unwrap();
            log.requests.push((uri.to_string(), text.clone()));
            log.requests.len()
        };
        let req: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // Every tool call gets its own id, as a model's do.
        if path.ends_with("/messages") {
            anthropic(&req, &text, n)
        } else if path.ends_with("/responses") {
            openai(&req, &text, n)
        } else if path.contains(":streamGenerateContent") || path.contains(":generateContent") {
            gemini(&path, &req, &text)
        } else {
            (StatusCode::NOT_FOUND, "{}").into_response()
        }
    }

    fn sse(events: Vec<(Option<&str>, Value)>) -> Response {
        let mut out = String::new();
        for (name, data) in events {
            if let Some(n) = name {
                out.push_str(&format!("event: {n}\n"));
            }
            out.push_str(&format!("data: {data}\n\n"));
        }
        ([(header::CONTENT_TYPE, "text/event-stream")], out).into_response()
    }

    // Anthropic Messages, streamed.
    fn anthropic(req: &Value, text: &str, n: usize) -> Response {
        let tools: Vec<&str> = req["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        let command = tools.contains(&"Bash").then(|| wanted(text)).flatten();
        let (block, delta, stop) = match &command {
            Some(c) => {
                let input = json!({ "command": c, "description": "Run the test command" });
                (
                    json!({ "type": "tool_use", "id": format!("toolu_maestro_{n}"), "name": "Bash",
                        "input": {} }),
                    json!({ "type": "input_json_delta", "partial_json": input.to_string() }),
                    "tool_use",
                )
            }
            None => (
                json!({ "type": "text", "text": "" }),
                json!({ "type": "text_delta", "text": "Finished." }),
                "end_turn",
            ),
        };
        let model = req["model"].as_str().unwrap_or("claude");
        sse(vec![
            (
                Some("message_start"),
                json!({ "type": "message_start", "message": { "id": "msg_maestro", "type": "message",
                    "role": "assistant", "model": model, "content": [], "stop_reason": null,
                    "stop_sequence": null, "usage": { "input_tokens": 10, "output_tokens": 1 } } }),
            ),
            (
                Some("content_block_start"),
                json!({ "type": "content_block_start", "index": 0, "content_block": block }),
            ),
            (
                Some("content_block_delta"),
                json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
            ),
            (
                Some("content_block_stop"),
                json!({ "type": "content_block_stop", "index": 0 }),
            ),
            (
                Some("message_delta"),
                json!({ "type": "message_delta", "delta": { "stop_reason": stop, "stop_sequence": null },
                    "usage": { "output_tokens": 5 } }),
            ),
            (Some("message_stop"), json!({ "type": "message_stop" })),
        ])
    }

    // OpenAI Responses, streamed.
    fn openai(req: &Value, text: &str, n: usize) -> Response {
        let tools: Vec<String> = req["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let shell = ["shell_command", "exec_command", "shell"]
            .into_iter()
            .find(|n| tools.iter().any(|t| t == n));
        let command = shell.and_then(|s| wanted(text).map(|c| (s, c)));
        let model = req["model"].as_str().unwrap_or("gpt");
        let item = match &command {
            Some((tool, c)) => {
                let args = match *tool {
                    "shell" => json!({ "command": ["bash", "-lc", c] }),
                    // Escalation makes Codex ask (its sandbox would run the command silently).
                    "exec_command" => json!({ "cmd": c, "sandbox_permissions": "require_escalated",
                        "justification": "Run the test command" }),
                    _ => json!({ "command": c }),
                };
                json!({ "type": "function_call", "id": format!("fc_maestro_{n}"),
                    "call_id": format!("call_maestro_{n}"), "name": tool,
                    "arguments": args.to_string(), "status": "completed" })
            }
            None => json!({ "type": "message", "id": "msg_maestro", "role": "assistant",
                "status": "completed",
                "content": [{ "type": "output_text", "text": "Finished.", "annotations": [] }] }),
        };
        let response = |status: &str, output: Value| {
            json!({ "id": "resp_maestro", "object": "response", "created_at": 0,
                "status": status, "model": model, "output": output,
                "usage": { "input_tokens": 10, "input_tokens_details": { "cached_tokens": 0 },
                    "output_tokens": 5, "output_tokens_details": { "reasoning_tokens": 0 },
                    "total_tokens": 15 } })
        };
        sse(vec![
            (
                Some("response.created"),
                json!({ "type": "response.created", "response": response("in_progress", json!([])) }),
            ),
            (
                Some("response.output_item.added"),
                json!({ "type": "response.output_item.added", "output_index": 0, "item": item }),
            ),
            (
                Some("response.output_item.done"),
                json!({ "type": "response.output_item.done", "output_index": 0, "item": item }),
            ),
            (
                Some("response.completed"),
                json!({ "type": "response.completed", "response": response("completed", json!([item])) }),
            ),
        ])
    }

    // Gemini generateContent / streamGenerateContent (SSE with `alt=sse`).
    fn gemini(path: &str, req: &Value, text: &str) -> Response {
        let has_shell = text.contains("\"run_shell_command\"");
        let command = has_shell.then(|| wanted(text)).flatten();
        let part = match command {
            Some(c) => json!({ "functionCall": { "name": "run_shell_command",
                "args": { "command": c, "description": "Run the test command" } } }),
            None => json!({ "text": "Finished." }),
        };
        let _ = req;
        let chunk = json!({
            "candidates": [{ "content": { "role": "model", "parts": [part] },
                "finishReason": "STOP", "index": 0 }],
            "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5,
                "totalTokenCount": 15 },
            "modelVersion": "gemini-test",
        });
        if path.contains(":streamGenerateContent") {
            sse(vec![(None, chunk)])
        } else {
            (
                [(header::CONTENT_TYPE, "application/json")],
                chunk.to_string(),
            )
                .into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// The desk: a terminal running `maestro run -- <cli>`.

struct Desk {
    screen: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
    /// Held for the child's life: closing it hangs up the terminal.
    _master: Box<dyn portable_pty::MasterPty + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    name: String,
}

impl Desk {
    fn start(name: &str, cwd: &Path, env: &[(String, String)], argv: &[String]) -> Desk {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 120,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        let mut cmd = CommandBuilder::new(BIN);
        cmd.env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.cwd(cwd);
        cmd.args(argv);
        let child = pty.slave.spawn_command(cmd).expect("spawn maestro run");
        drop(pty.slave);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            NonZeroU16::new(40).unwrap(),
            NonZeroU16::new(120).unwrap(),
            0,
        )));
        let mut reader = pty.master.try_clone_reader().unwrap();
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().process(&buf[..n]);
            }
        });
        let writer = pty.master.take_writer().unwrap();
        Desk {
            screen,
            writer,
            _master: pty.master,
            child,
            name: name.to_owned(),
        }
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn keys(&mut self, s: &str) {
        self.writer.write_all(s.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Presses `key` until the screen satisfies `done`: a dialog drops the keys that arrive
    /// while it is still mounting, so a key is pressed again (every half second) while nothing
    /// has happened. Only for keys that are harmless once the dialog has gone.
    async fn press_until(&mut self, key: &str, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let t = self.text();
            if done(&t) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: pressed {key:?} for {what}; the screen:\n{t}",
                self.name
            );
            self.keys(key);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Types a line as a person would: the text, then Enter once the text is on screen. A
    /// terminal that dropped the keys (still starting) gets them again.
    async fn say(&mut self, line: &str) {
        let probe: String = line.chars().take(24).collect();
        let deadline = Instant::now() + PATIENCE;
        'typing: loop {
            self.keys(line);
            let retry = Instant::now() + Duration::from_secs(5);
            while Instant::now() < retry {
                if self.text().contains(&probe) {
                    break 'typing;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the typed text {probe:?} never showed; the screen:\n{}",
                self.name,
                self.text()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.keys("\r");
    }

    /// Waits until the screen satisfies `ok`.
    async fn until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let t = self.text();
            if ok(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{}: waited for {what}; the screen:\n{t}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for `maestro run` to exit and returns its code.
    async fn exited(&mut self) -> u32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.exit_code();
            }
            assert!(
                Instant::now() < deadline,
                "{}: maestro run did not exit; the screen:\n{}",
                self.name,
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Waits for an async condition.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The world around the agent: server, project, phone, model.

struct World {
    server: Server,
    owner: Client,
    phone: Client,
    model: model::Model,
    project_id: String,
    project: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let server = Server::start().await;
        let owner = server.client();
        let project = tempfile::tempdir().unwrap();
        let project_id = owner
            .create_project(&CreateProject {
                name: Some("agents".into()),
                working_dir: Some(project.path().to_string_lossy().into_owned()),
                ..Default::default()
            })
            .await
            .unwrap()
            .id;
        let token = owner
            .create_token(&CreateToken {
                scope: Some(Scope::Respond),
                name: Some("phone".into()),
                expires_in_days: None,
            })
            .await
            .unwrap()
            .token;
        let phone = Client::new(&server.url).unwrap().with_token(token);
        World {
            owner,
            phone,
            model: model::start().await,
            project_id,
            project,
            home: tempfile::tempdir().unwrap(),
            server,
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn dir(&self) -> &Path {
        self.project.path()
    }

    /// The environment every CLI gets: a private HOME, no telemetry, no update checks.
    fn env(&self, bin: &Path) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env = vec![
            ("PATH".to_owned(), path),
            ("HOME".to_owned(), self.home().display().to_string()),
            ("MAESTRO_SERVER_URL".to_owned(), self.server.url.clone()),
            ("MAESTRO_PROJECT_ID".to_owned(), self.project_id.clone()),
        ];
        for (k, v) in [
            ("TERM", "xterm-256color"),
            ("LANG", "C.UTF-8"),
            ("MAESTRO_HEARTBEAT_TTL_MS", "60000"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("NO_UPDATE_NOTIFIER", "1"),
        ] {
            env.push((k.to_owned(), v.to_owned()));
        }
        env
    }

    /// `maestro hooks install <tool>` in the project, as a user would run it.
    fn install_hooks(&self, tool: &str, extra_env: &[(&str, &str)]) -> String {
        let mut cli = support::Cli::new(None, self.home());
        for (k, v) in extra_env {
            cli = cli.env(k, v);
        }
        let out = cli.run(&[
            "hooks",
            "install",
            tool,
            "--project-dir",
            self.dir().to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
    }

    async fn sessions(&self) -> Vec<Session> {
        self.owner
            .list_sessions(&SessionQuery {
                project_id: Some(self.project_id.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// The one session named `name`.
    async fn session(&self, name: &str) -> Session {
        eventually(&format!("session {name}"), || async {
            self.sessions().await.into_iter().find(|s| s.name == name)
        })
        .await
    }

    async fn session_until(&self, id: &str, what: &str, ok: impl Fn(&Session) -> bool) -> Session {
        eventually(what, || async {
            let s = self.owner.get_session(id).await.unwrap();
            ok(&s).then_some(s)
        })
        .await
    }

    /// The pending approval of `session` whose summary is `summary`, as the phone sees it.
    async fn pending(&self, desk: &Desk, session: &str, summary: &str) -> Approval {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self
                .phone_pending()
                .await
                .into_iter()
                .find(|a| a.session_id == session && a.summary == summary);
            if let Some(a) = found {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no pending approval for {summary:?}; pending: {:?}\nthe screen:\n{}",
                desk.name,
                self.phone_pending().await,
                desk.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every pending approval of the project, through the phone's token.
    async fn phone_pending(&self) -> Vec<Approval> {
        let r = self
            .phone
            .raw(
                reqwest::Method::GET,
                &format!("/api/approvals?projectId={}", self.project_id),
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        serde_json::from_value(r.body).unwrap()
    }

    async fn decide(&self, id: &str, decision: ApprovalDecision, reason: Option<&str>) {
        self.phone
            .decide_approval(
                id,
                &DecideApproval {
                    decision,
                    reason: reason.map(str::to_owned),
                    request_id: None,
                },
            )
            .await
            .unwrap();
    }

    async fn approval(&self, id: &str) -> Approval {
        let r = self
            .owner
            .raw(reqwest::Method::GET, &format!("/api/approvals/{id}"), None)
            .await
            .unwrap();
        serde_json::from_value(r.body).unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}

impl World {
    /// The phone denies `id` with `reason`: the model reads the reason and `file` is not made.
    async fn deny_reaches_model(&self, desk: &Desk, id: &str, reason: &str, file: &str) {
        self.decide(id, ApprovalDecision::Deny, Some(reason)).await;
        let deadline = Instant::now() + PATIENCE;
        while !self.model.received(reason) {
            assert!(
                Instant::now() < deadline,
                "{}: the reason never reached the model; its last request ended: {}\nthe screen:\n{}",
                desk.name,
                self.model.last_tail(3000),
                desk.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!self.file(file).exists(), "a denied command ran");
    }

    /// Quits the agent with `command` at the desk: `maestro run` exits, and the session is
    /// completed with its needs-input flag off.
    async fn quit(&self, desk: &mut Desk, session: &str, command: &str) {
        desk.say(command).await;
        desk.exited().await;
        let s = self
            .session_until(session, "completed", |s| s.status == "completed")
            .await;
        assert!(!needs_input(&s), "needs-input stayed on: {s:?}");
    }
}

fn needs_input(s: &Session) -> bool {
    s.needs_input.as_ref().is_some_and(|n| n.active)
}

// ---------------------------------------------------------------------------------------
// Claude Code.

fn claude_setup(w: &World) {
    // What a person has done once on this machine: onboarding, this project trusted, the API
    // key accepted, manual permission mode (so dialogs appear).
    let key = "sk-ant-maestro-test-0000000000000000";
    let tail: String = key
        .chars()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut projects = serde_json::Map::new();
    projects.insert(
        w.dir().display().to_string(),
        json!({ "hasTrustDialogAccepted": true }),
    );
    let state = json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "customApiKeyResponses": { "approved": [tail], "rejected": [] },
        "projects": projects,
    });
    std::fs::write(w.home().join(".claude.json"), state.to_string()).unwrap();
    std::fs::create_dir_all(w.home().join(".claude")).unwrap();
    std::fs::write(
        w.home().join(".claude/settings.json"),
        json!({ "permissions": { "defaultMode": "default" } }).to_string(),
    )
    .unwrap();
}

fn claude_env(w: &World, bin: &Path) -> Vec<(String, String)> {
    let mut env = w.env(bin);
    env.push(("ANTHROPIC_BASE_URL".into(), w.model.url.clone()));
    env.push((
        "ANTHROPIC_API_KEY".into(),
        "sk-ant-maestro-test-0000000000000000".into(),
    ));
    env
}

/// Gets past what Claude Code shows before its prompt.
async fn claude_ready(desk: &mut Desk) {
    let t = desk
        .until("Claude Code's prompt", |t| {
            t.contains("? for shortcuts")
                || t.contains("manual mode")
                || t.contains("Make auto mode your default")
        })
        .await;
    if t.contains("Make auto mode your default") {
        desk.press_until("\x1b", "the auto-mode question to go", |t| {
            !t.contains("Make auto mode your default")
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code() {
    let Some(bin) = clis() else { return };
    let tool = "claude-code";
    eprintln!("[agents] {tool}: installed {}", version(&bin, "claude"));
    let w = World::new().await;
    claude_setup(&w);
    step(tool, "hooks install");
    let said = w.install_hooks(tool, &[]);
    assert!(said.contains("PermissionRequest"), "{said}");
    passed(tool, "hooks install");

    let argv: Vec<String> = ["run", "--name", "claude", "--", "claude"]
        .map(str::to_owned)
        .to_vec();
    let mut desk = Desk::start("claude", w.dir(), &claude_env(&w, &bin), &argv);
    claude_ready(&mut desk).await;
    let s = w.session("claude").await;

    step(tool, "allow from the phone runs the command");
    desk.say(&format!("{}touch allowed.txt", model::MARK)).await;
    let a = w.pending(&desk, &s.id, "touch allowed.txt").await;
    w.session_until(&s.id, "working while asking", |s| s.status == "working")
        .await;
    // The phone answers while Claude's own dialog is up, as it is when a person looks.
    desk.until("Claude's own dialog", |t| {
        t.contains("Do you want to proceed?")
    })
    .await;
    w.decide(&a.id, ApprovalDecision::Allow, None).await;
    eventually("allowed.txt", || async {
        w.file("allowed.txt").exists().then_some(())
    })
    .await;
    desk.until("the model's last word", |t| t.contains("Finished."))
        .await;
    w.session_until(&s.id, "needs input after the turn (Stop)", needs_input)
        .await;
    // The hooks said nothing into the conversation.
    assert!(
        !w.model.received("registered (working)"),
        "hook stdout reached the model"
    );
    assert!(
        !w.model.received("is working again"),
        "hook stdout reached the model"
    );
    passed(tool, "allow from the phone runs the command");

    step(tool, "deny from the phone with a reason");
    desk.say(&format!("{}touch denied.txt", model::MARK)).await;
    w.session_until(&s.id, "working again (UserPromptSubmit)", |s| {
        !needs_input(s)
    })
    .await;
    let a = w.pending(&desk, &s.id, "touch denied.txt").await;
    desk.until("Claude's own dialog", |t| {
        t.contains("Do you want to proceed?")
    })
    .await;
    w.deny_reaches_model(
        &desk,
        &a.id,
        "not on a Monday, says the phone",
        "denied.txt",
    )
    .await;
    passed(tool, "deny from the phone with a reason");

    step(tool, "answered at the desk");
    desk.until("the turn to end", |t| {
        t.matches("Finished.").count() >= 2 || t.contains("? for shortcuts")
    })
    .await;
    desk.say(&format!("{}touch desk.txt", model::MARK)).await;
    let a = w.pending(&desk, &s.id, "touch desk.txt").await;
    desk.until("Claude's own dialog", |t| {
        t.contains("Do you want to proceed?")
    })
    .await;
    desk.press_until("1", "Yes in Claude's dialog", |t| {
        !t.contains("Do you want to proceed?")
    })
    .await;
    eventually("desk.txt", || async {
        w.file("desk.txt").exists().then_some(())
    })
    .await;
    let ended = eventually("the approval to end on the server", || async {
        let a = w.approval(&a.id).await;
        (a.status != ApprovalStatus::Pending).then_some(a)
    })
    .await;
    assert_eq!(ended.status, ApprovalStatus::Cancelled, "{ended:?}");
    assert_eq!(ended.reason.as_deref(), Some(ANSWERED_AT_TERMINAL));
    assert!(
        w.phone_pending().await.iter().all(|p| p.id != a.id),
        "still on the phone"
    );
    let late = w
        .phone
        .decide_approval(
            &a.id,
            &DecideApproval {
                decision: ApprovalDecision::Deny,
                reason: None,
                request_id: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(late.status().map(|s| s.as_u16()), Some(409), "{late}");
    passed(tool, "answered at the desk");

    step(tool, "lifecycle: session end");
    w.session_until(&s.id, "needs input after the turn", needs_input)
        .await;
    w.quit(&mut desk, &s.id, "/exit").await;
    passed(tool, "lifecycle: session end");
}

// ---------------------------------------------------------------------------------------
// Codex.

fn codex_setup(w: &World) -> PathBuf {
    // Once on this machine: the project trusted; the model provider is ours.
    let home = w.home().join(".codex");
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        r#"model = "gpt-maestro-test"
model_provider = "maestro-test"
approval_policy = "on-request"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[model_providers.maestro-test]
name = "Maestro's scripted model"
base_url = "{}/v1"
wire_api = "responses"
env_key = "MAESTRO_TEST_MODEL_KEY"

[analytics]
enabled = false

[projects."{}"]
trust_level = "trusted"
"#,
        w.model.url,
        w.dir().display()
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    home
}

fn codex_env(w: &World, bin: &Path, codex_home: &Path) -> Vec<(String, String)> {
    let mut env = w.env(bin);
    env.push((
        "CODEX_HOME".into(),
        codex_home.to_string_lossy().into_owned(),
    ));
    env.push(("MAESTRO_TEST_MODEL_KEY".into(), "sk-maestro-test".into()));
    env
}

/// Gets past what Codex asks once (the new hooks) to its prompt. `review`: whether this start
/// must ask (the first after `hooks install`); later starts must not.
async fn codex_ready(desk: &mut Desk, review: bool) {
    if review {
        let t = desk
            .until("Codex's hook review", |t| t.contains("Hooks need review"))
            .await;
        // What `maestro hooks install` tells the user to answer.
        assert!(t.contains("Trust all and continue"), "{t}");
        desk.press_until("2", "the choice", |t| t.contains("› 2. Trust all"))
            .await;
        desk.press_until("\r", "the review to close", |t| {
            !t.contains("Hooks need review")
        })
        .await;
    }
    desk.until("Codex's prompt", |t| {
        !t.contains("Hooks need review") && t.contains("? for shortcuts")
    })
    .await;
    // The splash shows the prompt line before the review (if any) is drawn over it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !desk.text().contains("Hooks need review"),
        "{}: Codex asked again:\n{}",
        desk.name,
        desk.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn codex() {
    let Some(bin) = clis() else { return };
    let tool = "codex";
    eprintln!("[agents] {tool}: installed {}", version(&bin, "codex"));
    let w = World::new().await;
    let codex_home = codex_setup(&w);
    step(tool, "hooks install");
    let said = w.install_hooks(tool, &[("CODEX_HOME", &codex_home.to_string_lossy())]);
    assert!(said.contains("Trust all and continue"), "{said}");
    passed(tool, "hooks install");

    let env = codex_env(&w, &bin, &codex_home);
    let start = |name: &str| {
        let argv: Vec<String> = ["run", "--name", name, "--", "codex"]
            .map(str::to_owned)
            .to_vec();
        Desk::start(name, w.dir(), &env, &argv)
    };
    let mut a = start("codex-a");
    codex_ready(&mut a, true).await;
    let mut b = start("codex-b");
    codex_ready(&mut b, false).await;
    let (sa, sb) = (w.session("codex-a").await, w.session("codex-b").await);

    step(
        tool,
        "two agents at once file approvals under their own sessions",
    );
    a.say(&format!("{}touch codex-a.txt", model::MARK)).await;
    b.say(&format!("{}touch codex-b.txt", model::MARK)).await;
    let pa = w.pending(&a, &sa.id, "touch codex-a.txt").await;
    let pb = w.pending(&b, &sb.id, "touch codex-b.txt").await;
    assert_eq!(pa.agent_tool, "codex");
    for p in w.phone_pending().await {
        let own = if p.summary.contains("codex-a") {
            &sa.id
        } else {
            &sb.id
        };
        assert_eq!(&p.session_id, own, "{p:?} filed under the wrong session");
    }
    passed(
        tool,
        "two agents at once file approvals under their own sessions",
    );

    step(tool, "allow from the phone runs the command");
    w.decide(&pa.id, ApprovalDecision::Allow, None).await;
    eventually("codex-a.txt", || async {
        w.file("codex-a.txt").exists().then_some(())
    })
    .await;
    w.session_until(
        &sa.id,
        "codex-a needs input after the turn (Stop)",
        needs_input,
    )
    .await;
    a.until("Codex's last word", |t| t.contains("Finished."))
        .await;
    assert!(
        !a.text().contains("invalid stop hook JSON"),
        "Codex rejected the Stop hook:\n{}",
        a.text()
    );
    passed(tool, "allow from the phone runs the command");

    step(tool, "deny from the phone with a reason");
    w.deny_reaches_model(
        &b,
        &pb.id,
        "codex-b may not touch files today",
        "codex-b.txt",
    )
    .await;
    let sb_now = w.owner.get_session(&sb.id).await.unwrap();
    assert_eq!(sb_now.status, "working", "{sb_now:?}");
    passed(tool, "deny from the phone with a reason");

    step(tool, "the desk interrupts instead");
    w.session_until(&sb.id, "codex-b needs input", needs_input)
        .await;
    b.say(&format!("{}touch codex-desk.txt", model::MARK)).await;
    w.session_until(&sb.id, "codex-b working again (UserPromptSubmit)", |s| {
        !needs_input(s)
    })
    .await;
    let pd = w.pending(&b, &sb.id, "touch codex-desk.txt").await;
    b.keys("\x1b");
    let ended = eventually("the approval to end on the server", || async {
        let a = w.approval(&pd.id).await;
        (a.status != ApprovalStatus::Pending).then_some(a)
    })
    .await;
    assert_eq!(ended.status, ApprovalStatus::Cancelled, "{ended:?}");
    assert!(w.phone_pending().await.iter().all(|p| p.id != pd.id));
    assert!(!w.file("codex-desk.txt").exists());
    passed(tool, "the desk interrupts instead");

    step(tool, "lifecycle: session end");
    w.quit(&mut a, &sa.id, "/exit").await;
    w.quit(&mut b, &sb.id, "/exit").await;
    passed(tool, "lifecycle: session end");
}

// ---------------------------------------------------------------------------------------
// Gemini CLI.

fn gemini_setup(w: &World) {
    // Once on this machine: an API key chosen, this folder trusted, no usage statistics.
    let dir = w.home().join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    let settings = json!({
        "security": { "auth": { "selectedType": "gemini-api-key" } },
        "privacy": { "usageStatisticsEnabled": false },
        "general": { "disableAutoUpdate": true, "disableUpdateNag": true },
        "telemetry": { "enabled": false },
    });
    std::fs::write(dir.join("settings.json"), settings.to_string()).unwrap();
    let mut trusted = serde_json::Map::new();
    trusted.insert(w.dir().display().to_string(), json!("TRUST_FOLDER"));
    std::fs::write(
        dir.join("trustedFolders.json"),
        Value::Object(trusted).to_string(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini() {
    let Some(bin) = clis() else { return };
    let tool = "gemini";
    eprintln!("[agents] {tool}: installed {}", version(&bin, "gemini"));
    let w = World::new().await;
    gemini_setup(&w);
    step(tool, "hooks install");
    let said = w.install_hooks(tool, &[]);
    assert!(said.contains("trust"), "{said}");
    passed(tool, "hooks install");

    let mut env = w.env(&bin);
    env.push(("GEMINI_API_KEY".into(), "maestro-test-key".into()));
    env.push(("GOOGLE_GEMINI_BASE_URL".into(), w.model.url.clone()));
    // A fixed model: "auto" first asks a router model to classify the prompt.
    let argv: Vec<String> = [
        "run",
        "--name",
        "gemini",
        "--",
        "gemini",
        "-m",
        "gemini-2.5-flash",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut desk = Desk::start("gemini", w.dir(), &env, &argv);
    desk.until("Gemini's prompt", |t| t.contains("Type your message"))
        .await;
    let s = w.session("gemini").await;

    step(tool, "deny from the phone with a reason");
    desk.say(&format!("{}touch gemini.txt", model::MARK)).await;
    let p = w.pending(&desk, &s.id, "touch gemini.txt").await;
    assert_eq!(p.agent_tool, "gemini");
    w.session_until(&s.id, "working (BeforeAgent)", |s| {
        s.status == "working" && !needs_input(s)
    })
    .await;
    w.deny_reaches_model(
        &desk,
        &p.id,
        "gemini may not touch files today",
        "gemini.txt",
    )
    .await;
    passed(tool, "deny from the phone with a reason");

    step(tool, "lifecycle: needs input, session end");
    w.session_until(
        &s.id,
        "needs input after the turn (AfterAgent)",
        needs_input,
    )
    .await;
    w.quit(&mut desk, &s.id, "/quit").await;
    passed(tool, "lifecycle: needs input, session end");
}

/// `claude -p` calls no permission hook; `maestro approve --mcp` as its
/// `--permission-prompt-tool` brings the question to the phone anyway.
#[tokio::test(flavor = "multi_thread")]
async fn claude_code_headless() {
    let Some(bin) = clis() else { return };
    let tool = "claude-code -p";
    let w = World::new().await;
    claude_setup(&w);
    step(
        tool,
        "--permission-prompt-tool maestro approve --mcp, allowed from the phone",
    );
    let mcp = json!({ "mcpServers": { "maestro": {
        "command": BIN, "args": ["approve", "--tool", "claude-code", "--mcp"] } } });
    let argv: Vec<String> = vec![
        "run".into(),
        "--name".into(),
        "headless".into(),
        "--".into(),
        "claude".into(),
        "-p".into(),
        format!("{}touch headless.txt", model::MARK),
        "--mcp-config".into(),
        mcp.to_string(),
        "--permission-prompt-tool".into(),
        "mcp__maestro__approve".into(),
    ];
    let mut desk = Desk::start("claude -p", w.dir(), &claude_env(&w, &bin), &argv);
    let s = w.session("headless").await;
    let a = w.pending(&desk, &s.id, "touch headless.txt").await;
    w.decide(&a.id, ApprovalDecision::Allow, None).await;
    eventually("headless.txt", || async {
        w.file("headless.txt").exists().then_some(())
    })
    .await;
    assert_eq!(desk.exited().await, 0, "{}", desk.text());
    passed(
        tool,
        "--permission-prompt-tool maestro approve --mcp, allowed from the phone",
    );
}
