//! `maestro approve` as Claude Code runs it (issue 16): `maestro hooks install` writes the
//! hook, and a fake hook runner does what Claude Code does with it — runs the command with
//! the documented PermissionRequest payload on stdin, in the agent's environment, and reads
//! its stdout. A human decides on the server; the runner gets the documented answer. When
//! the server is gone or nobody decides, the hook answers its fallback in time and withdraws
//! its request.

use crate::support;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maestro_client::Client;
use maestro_protocol::{
    Approval, ApprovalDecision, ApprovalStatus, CreateProject, CreateSession, DecideApproval,
};
use serde_json::{Value, json};
use support::{BIN, Server};

async fn setup(c: &Client) -> (String, String) {
    let p = c
        .create_project(&CreateProject {
            name: Some("hooks".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let s = c
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            name: Some("agent".into()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    (p, s)
}

/// What Claude Code sends a PermissionRequest hook (its documented fields).
fn payload(command: &str) -> String {
    json!({
        "session_id": "0b6e2c1d-claude",
        "transcript_path": "/tmp/transcript.jsonl",
        "cwd": "/tmp",
        "permission_mode": "default",
        "hook_event_name": "PermissionRequest",
        "tool_name": "Bash",
        "tool_input": { "command": command, "description": "Clean the build" }
    })
    .to_string()
}

/// Installs the Claude Code hooks into `project` and returns the PermissionRequest command.
fn installed_permission_hook(home: &Path, project: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "hooks",
        "install",
        "claude-code",
        "--project-dir",
        project.to_str().unwrap(),
        "--command",
        BIN,
    ];
    args.extend_from_slice(extra);
    let out = support::Cli::new(None, home).run(&args);
    assert_eq!(out.code, 0, "{out:#?}");
    let settings = project.join(".claude").join("settings.local.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&settings).unwrap()).unwrap();
    v["hooks"]["PermissionRequest"][0]["hooks"][0]["command"]
        .as_str()
        .unwrap_or_else(|| panic!("no PermissionRequest hook in {v:#}"))
        .to_owned()
}

/// Runs `command` the way a hook runner does: `sh -c`, payload on stdin, agent's environment.
fn run_hook(command: &str, home: &Path, env: &[(&str, &str)], stdin: &str) -> Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", command])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child
}

/// Waits for the hook to exit (bounded: a hook that hangs is the bug); stdout and stderr.
fn finish(mut child: Child, within: Duration) -> (i32, String, String) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the hook did not finish within {within:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn pending(c: &Client, project: &str) -> Vec<Approval> {
    let r = c
        .raw(
            reqwest::Method::GET,
            &format!("/api/approvals?projectId={project}"),
            None,
        )
        .await
        .unwrap();
    serde_json::from_value(r.body).unwrap()
}

/// The first pending approval of `project`, once it appears.
async fn appears(c: &Client, project: &str) -> Approval {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = pending(c, project).await.into_iter().next() {
            return a;
        }
        assert!(Instant::now() < deadline, "no approval appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn behavior(stdout: &str) -> Value {
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("hook stdout is not JSON ({e}): {stdout:?}"));
    assert_eq!(
        v["hookSpecificOutput"]["hookEventName"],
        "PermissionRequest"
    );
    v["hookSpecificOutput"]["decision"].clone()
}

#[tokio::test]
async fn a_decision_on_the_server_reaches_the_agent_in_its_format() {
    let server = Server::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let project = tempfile::tempdir().unwrap();
    let hook = installed_permission_hook(server.home.path(), project.path(), &[]);
    let env = [
        ("MAESTRO_SERVER_URL", server.url.as_str()),
        ("MAESTRO_SESSION_ID", s.as_str()),
        ("MAESTRO_PROJECT_ID", p.as_str()),
    ];

    // Allowed.
    let child = run_hook(&hook, server.home.path(), &env, &payload("rm -rf build/"));
    let a = appears(&c, &p).await;
    assert_eq!(a.tool_name, "Bash");
    assert_eq!(a.agent_tool, "claude-code");
    assert_eq!(a.input["command"], "rm -rf build/");
    c.decide_approval(
        &a.id,
        &DecideApproval {
            decision: ApprovalDecision::Allow,
            reason: None,
            request_id: None,
        },
    )
    .await
    .unwrap();
    let (code, stdout, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(behavior(&stdout), json!({ "behavior": "allow" }));

    // Denied, with the reason told to the agent.
    let child = run_hook(&hook, server.home.path(), &env, &payload("git push -f"));
    let a = appears(&c, &p).await;
    c.decide_approval(
        &a.id,
        &DecideApproval {
            decision: ApprovalDecision::Deny,
            reason: Some("never force-push main".into()),
            request_id: None,
        },
    )
    .await
    .unwrap();
    let (code, stdout, _) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0);
    assert_eq!(
        behavior(&stdout),
        json!({ "behavior": "deny", "message": "never force-push main" })
    );

    // Outside a Maestro session the hook answers at once and asks nothing.
    let child = run_hook(
        &hook,
        server.home.path(),
        &[("MAESTRO_SERVER_URL", server.url.as_str())],
        &payload("ls"),
    );
    let (code, stdout, _) = finish(child, Duration::from_secs(5));
    assert_eq!((code, stdout.trim()), (0, ""));
    assert!(pending(&c, &p).await.is_empty());
}

#[tokio::test]
async fn nobody_deciding_ends_in_the_fallback_and_withdraws_the_request() {
    let server = Server::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let env = [
        ("MAESTRO_SERVER_URL", server.url.as_str()),
        ("MAESTRO_SESSION_ID", s.as_str()),
    ];
    let child = run_hook(
        &format!("'{BIN}' approve --tool claude-code --timeout 1 --fallback deny"),
        server.home.path(),
        &env,
        &payload("make deploy"),
    );
    let (code, stdout, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
    let d = behavior(&stdout);
    assert_eq!(d["behavior"], "deny");
    assert!(stderr.contains("nobody decided"), "{stderr}");
    assert!(
        pending(&c, &p).await.is_empty(),
        "the request was withdrawn"
    );
    let all: Vec<Approval> = serde_json::from_value(
        c.raw(
            reqwest::Method::GET,
            &format!("/api/sessions/{s}/approvals"),
            None,
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, ApprovalStatus::Cancelled);

    // SIGTERM (a tool killing a hook past its own timeout) withdraws it too.
    let child = run_hook(
        &format!("exec '{BIN}' approve --tool claude-code"),
        server.home.path(),
        &env,
        &payload("make release"),
    );
    let a = appears(&c, &p).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, stdout, _) = finish(child, Duration::from_secs(10));
    assert_eq!(
        (code, stdout.trim()),
        (0, ""),
        "fallback ask prints nothing"
    );
    let after = c.get_approval_raw(&a.id).await;
    assert_eq!(after["status"], "cancelled");
}

#[tokio::test]
async fn an_unreachable_server_falls_back_at_once() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let env = [
        ("MAESTRO_SERVER_URL", url.as_str()),
        ("MAESTRO_SESSION_ID", "sess_gone"),
        ("MAESTRO_RETRIES", "0"),
    ];
    for (fallback, expected) in [
        ("ask", None),
        ("allow", Some("allow")),
        ("deny", Some("deny")),
    ] {
        let child = run_hook(
            &format!("'{BIN}' approve --tool claude-code --fallback {fallback}"),
            home.path(),
            &env,
            &payload("ls"),
        );
        let (code, stdout, stderr) = finish(child, Duration::from_secs(10));
        assert_eq!(code, 0, "{stderr}");
        match expected {
            None => assert_eq!(stdout.trim(), ""),
            Some(b) => assert_eq!(behavior(&stdout)["behavior"], b),
        }
        assert!(stderr.contains("cannot ask"), "{stderr}");
    }
}

/// `GET /api/approvals/:id` as JSON.
trait GetRaw {
    async fn get_approval_raw(&self, id: &str) -> Value;
}

impl GetRaw for Client {
    async fn get_approval_raw(&self, id: &str) -> Value {
        self.raw(reqwest::Method::GET, &format!("/api/approvals/{id}"), None)
            .await
            .unwrap()
            .body
    }
}

/// Claude Code keeps its own dialog open while the hook waits (issue 19): answered there, the
/// tool runs and PostToolUse fires; `--answered-at-terminal` withdraws exactly that request,
/// the phone stops showing it, and a late decision is refused.
#[tokio::test]
async fn a_request_answered_at_the_terminal_leaves_the_phone() {
    let server = Server::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let project = tempfile::tempdir().unwrap();
    let hook = installed_permission_hook(server.home.path(), project.path(), &[]);
    let env = [
        ("MAESTRO_SERVER_URL", server.url.as_str()),
        ("MAESTRO_SESSION_ID", s.as_str()),
        ("MAESTRO_PROJECT_ID", p.as_str()),
    ];
    let waiting = run_hook(&hook, server.home.path(), &env, &payload("make deploy"));
    let a = appears(&c, &p).await;
    let other = run_hook(&hook, server.home.path(), &env, &payload("make clean"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending(&c, &p).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second request did not appear"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let settled = format!("{BIN} approve --tool claude-code --answered-at-terminal");
    let post_tool_use = json!({
        "session_id": "0b6e2c1d-claude", "cwd": "/tmp", "hook_event_name": "PostToolUse",
        "tool_name": "Bash", "tool_input": { "command": "make deploy" },
        "tool_response": { "stdout": "", "stderr": "", "interrupted": false }
    });
    let (code, stdout, stderr) = finish(
        run_hook(
            &settled,
            server.home.path(),
            &env,
            &post_tool_use.to_string(),
        ),
        Duration::from_secs(10),
    );
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    let ended: Approval = serde_json::from_value(
        c.raw(
            reqwest::Method::GET,
            &format!("/api/approvals/{}", a.id),
            None,
        )
        .await
        .unwrap()
        .body,
    )
    .unwrap();
    assert_eq!(ended.status, ApprovalStatus::Cancelled);
    assert_eq!(
        ended.reason.as_deref(),
        Some(maestro_protocol::ANSWERED_AT_TERMINAL)
    );
    let still: Vec<String> = pending(&c, &p)
        .await
        .into_iter()
        .map(|a| a.summary)
        .collect();
    assert_eq!(still, ["make clean"], "only the answered call leaves");
    let late = c
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
    assert_eq!(late.status().map(|s| s.as_u16()), Some(409));
    // The waiting hook ends too (its answer no longer matters to Claude Code).
    let (code, _, stderr) = finish(waiting, Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");

    // A turn that ends (Stop: no tool named) withdraws whatever is still pending.
    let stop = json!({ "session_id": "0b6e2c1d-claude", "hook_event_name": "Stop" });
    let (code, stdout, _) = finish(
        run_hook(&settled, server.home.path(), &env, &stop.to_string()),
        Duration::from_secs(10),
    );
    assert_eq!((code, stdout.as_str()), (0, ""));
    assert!(pending(&c, &p).await.is_empty());
    let (code, _, stderr) = finish(other, Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
}

/// `maestro approve --mcp` speaks MCP on stdio: Claude Code's `--permission-prompt-tool` for
/// `claude -p`. The phone's decision comes back as Claude Code's permission JSON.
#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_permission_prompt_tool_asks_the_phone() {
    let server = Server::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let mut child = Command::new(BIN)
        .args(["approve", "--tool", "claude-code", "--mcp"])
        .env_clear()
        .env("HOME", server.home.path())
        .env("MAESTRO_SERVER_URL", &server.url)
        .env("MAESTRO_SESSION_ID", &s)
        .env("MAESTRO_PROJECT_ID", &p)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut rpc = |msg: Value| -> Option<Value> {
        use std::io::BufRead;
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        msg.get("id")?;
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        Some(serde_json::from_str(&line).unwrap())
    };
    let init = rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "claude-code", "version": "2.1.332"}}}))
    .unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert!(init["result"]["capabilities"]["tools"].is_object());
    assert!(rpc(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).is_none());
    let list = rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})).unwrap();
    assert_eq!(list["result"]["tools"][0]["name"], "approve");

    let call = |id: u64, command: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "approve",
            "arguments": {"tool_name": "Bash", "input": {"command": command},
                          "tool_use_id": "toolu_1"}}})
    };
    let decide = |decision: ApprovalDecision, reason: Option<&str>| {
        let (c, p, reason) = (c.clone(), p.clone(), reason.map(str::to_owned));
        async move {
            let a = appears(&c, &p).await;
            c.decide_approval(
                &a.id,
                &DecideApproval {
                    decision,
                    reason,
                    request_id: None,
                },
            )
            .await
            .unwrap();
        }
    };
    let phone = tokio::spawn(decide(ApprovalDecision::Allow, None));
    let answer = tokio::task::block_in_place(|| rpc(call(3, "cargo test"))).unwrap();
    phone.await.unwrap();
    let text: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        text,
        json!({"behavior": "allow", "updatedInput": {"command": "cargo test"}})
    );

    let phone = tokio::spawn(decide(ApprovalDecision::Deny, Some("not now")));
    let answer = tokio::task::block_in_place(|| rpc(call(4, "git push"))).unwrap();
    phone.await.unwrap();
    let text: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, json!({"behavior": "deny", "message": "not now"}));

    let unknown = rpc(json!({"jsonrpc": "2.0", "id": 5, "method": "resources/list"})).unwrap();
    assert_eq!(unknown["error"]["code"], -32601);
    drop(stdin);
    let (code, _, _) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0);
}
