//! End to end: the `maestro` binary's agent commands against a real server on port 0 —
//! human and `--json` output, exit codes, and the errors for bad input.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maestro_client::{Client, SessionQuery};
use maestro_protocol::{CreateProject, CreateSession, CreateTask};
use serde_json::Value;
use support::{BIN, Cli, Server};

async fn project(client: &Client, name: &str) -> String {
    client
        .create_project(&CreateProject {
            name: Some(name.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

async fn task(client: &Client, project: &str, title: &str) -> String {
    client
        .create_task(&CreateTask {
            project_id: Some(project.into()),
            title: Some(title.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

async fn session(client: &Client, project: &str, tasks: &[&str]) -> String {
    client
        .create_session(&CreateSession {
            project_id: Some(project.into()),
            task_ids: Some(tasks.iter().map(|t| t.to_string()).collect()),
            name: Some("test session".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_documents_exit_codes_and_usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let out = Cli::new(None, home.path()).run(&["--help"]).ok();
    assert!(out.stdout.contains("Exit codes:"), "{}", out.stdout);
    assert!(out.stdout.contains("3  cannot reach the server"));
    for cmd in [
        "project",
        "task",
        "session",
        "report",
        "mail",
        "team-member",
        "run",
        "claim",
    ] {
        assert!(out.stdout.contains(cmd), "--help lists {cmd}");
    }
    let out = Cli::new(None, home.path())
        .run(&["task", "--bogus"])
        .code(2);
    assert!(out.stderr.contains("--bogus"));
    Cli::new(None, home.path())
        .run(&["task", "update", "x", "--status", "nonsense"])
        .code(2);
    Cli::new(None, home.path()).run(&["run"]).code(2);
}

#[test]
fn whoami_prints_the_context_without_a_server() {
    let home = tempfile::tempdir().unwrap();
    let cli = || {
        Cli::new(Some("http://127.0.0.1:1"), home.path())
            .session("sess_1")
            .project("proj_1")
            .env("MAESTRO_TASK_IDS", "task_a, task_b")
    };
    let out = cli().run(&["whoami"]).ok();
    assert!(out.stdout.contains("Server: http://127.0.0.1:1"));
    assert!(out.stdout.contains("Session ID: sess_1"));
    assert!(out.stdout.contains("Task IDs: task_a, task_b"));
    let data = cli().run(&["--json", "whoami"]).ok().data();
    assert_eq!(data["projectId"], "proj_1");
    assert_eq!(data["taskIds"], serde_json::json!(["task_a", "task_b"]));
    assert_eq!(data["mode"], "execute");
    // Flags win over the environment.
    let data = cli()
        .run(&[
            "whoami",
            "--json",
            "--server",
            "http://x:2/",
            "--session",
            "sess_2",
        ])
        .ok()
        .data();
    assert_eq!(data["server"], "http://x:2");
    assert_eq!(data["sessionId"], "sess_2");
}

#[test]
fn an_unreachable_server_exits_3_and_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", closed_port());
    let cli = || Cli::new(Some(&url), home.path()).env("MAESTRO_RETRIES", "0");
    let out = cli().run(&["project", "list"]).code(3);
    assert!(
        out.stderr.contains("Cannot reach the Maestro server"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--server"), "{}", out.stderr);
    let out = cli().run(&["--json", "project", "list"]).code(3);
    assert_eq!(out.error_code(), "connection_refused");
    // A bad URL is a usage error.
    Cli::new(Some("localhost:3000"), home.path())
        .run(&["project", "list"])
        .code(2);
}

#[tokio::test]
async fn the_server_is_found_through_data_dir_and_the_api_url() {
    let server = Server::start().await;
    let id = project(&server.client(), "discovered").await;
    let home = server.home.path();
    let out = Cli::new(None, home)
        .env("DATA_DIR", server.dir.path().to_str().unwrap())
        .run(&["project", "list"])
        .ok();
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    let out = Cli::new(None, home)
        .env("MAESTRO_API_URL", &format!("{}/api", server.url))
        .run(&["project", "get", &id])
        .ok();
    assert!(out.stdout.contains("Name: discovered"));
    // MAESTRO_SERVER_URL beats DATA_DIR.
    Cli::new(Some(&format!("http://127.0.0.1:{}", closed_port())), home)
        .env("DATA_DIR", server.dir.path().to_str().unwrap())
        .env("MAESTRO_RETRIES", "0")
        .run(&["project", "list"])
        .code(3);
    // ~/.maestro/config stands in for unset variables.
    std::fs::create_dir_all(home.join(".maestro")).unwrap();
    std::fs::write(
        home.join(".maestro/config"),
        format!("MAESTRO_SERVER_URL={}\n", server.url),
    )
    .unwrap();
    Cli::new(None, home).run(&["project", "get", &id]).ok();
}

#[tokio::test]
async fn project_commands() {
    let server = Server::start().await;
    let out = server
        .cli()
        .run(&[
            "project",
            "create",
            "Alpha",
            "--dir",
            "/work/alpha",
            "--desc",
            "first",
        ])
        .ok();
    assert!(out.stdout.contains("Name: Alpha"), "{}", out.stdout);
    assert!(out.stdout.contains("Dir: /work/alpha"));
    let p = server
        .cli()
        .run(&["--json", "project", "create", "Beta"])
        .ok()
        .data();
    let beta = p["id"].as_str().unwrap().to_owned();
    assert!(beta.starts_with("proj_"));
    assert_eq!(
        p["workingDir"],
        std::env::current_dir().unwrap().to_str().unwrap()
    );

    let out = server.cli().run(&["project", "list"]).ok();
    assert!(out.stdout.starts_with("ID"), "{}", out.stdout);
    assert!(out.stdout.contains("Alpha") && out.stdout.contains(&beta));
    let list = server.cli().run(&["--json", "project", "list"]).ok().data();
    assert_eq!(list.as_array().unwrap().len(), 2);

    let got = server
        .cli()
        .run(&["project", "get", &beta, "--json"])
        .ok()
        .data();
    assert_eq!(got["name"], "Beta");
    let deleted = server
        .cli()
        .run(&["--json", "project", "delete", &beta])
        .ok()
        .data();
    assert_eq!(deleted["deleted"], beta.as_str());

    let out = server.cli().run(&["project", "get", &beta]).code(1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    let out = server
        .cli()
        .run(&["--json", "project", "get", &beta])
        .code(1);
    assert_eq!(out.error_code(), "resource_not_found");
    server.cli().run(&["project", "create", " "]).code(2);
}

#[tokio::test]
async fn task_commands() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "tasks").await;
    let s = session(&client, &p, &[]).await;

    // Without a project: a usage error that names the fix.
    let out = server
        .cli()
        .run(&["--json", "task", "create", "orphan"])
        .code(2);
    assert_eq!(out.error_code(), "no_context");
    assert!(out.stdout.contains("MAESTRO_PROJECT_ID"));
    server.cli().project(&p).run(&["task", "create"]).code(2);

    let cli = || server.cli().project(&p).session(&s);
    let root = cli()
        .run(&[
            "--json",
            "task",
            "create",
            "Root",
            "--priority",
            "high",
            "-d",
            "the root",
        ])
        .ok()
        .data();
    let root_id = root["id"].as_str().unwrap().to_owned();
    assert_eq!(root["priority"], "high");
    assert_eq!(root["description"], "the root");
    let out = cli()
        .run(&["task", "create", "--title", "Child", "--parent", &root_id])
        .ok();
    assert!(out.stdout.contains("Title: Child") && out.stdout.contains(&root_id));
    let child_id = cli().run(&["--json", "task", "list"]).ok().data()[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let grandchild = cli()
        .run(&[
            "--json",
            "task",
            "create",
            "Grandchild",
            "--parent",
            &child_id,
        ])
        .ok()
        .data();
    let grandchild_id = grandchild["id"].as_str().unwrap().to_owned();

    // list: a tree for humans, an array in JSON; filters.
    let out = cli().run(&["task", "list"]).ok();
    assert!(
        out.stdout
            .contains(&format!("[{root_id}] Root (todo, high)")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("└─ ["), "{}", out.stdout);
    let high = cli()
        .run(&["--json", "task", "list", "--priority", "high"])
        .ok()
        .data();
    assert_eq!(high.as_array().unwrap().len(), 1);
    let sub = cli().run(&["--json", "task", "list", &root_id]).ok().data();
    assert_eq!(sub.as_array().unwrap().len(), 2);

    // get: by id, or the only task of MAESTRO_TASK_IDS.
    let out = cli().run(&["task", "get", &root_id]).ok();
    assert!(out.stdout.contains("Status: todo") && out.stdout.contains("Description: the root"));
    let got = cli()
        .env("MAESTRO_TASK_IDS", &child_id)
        .run(&["--json", "task", "get"])
        .ok()
        .data();
    assert_eq!(got["title"], "Child");
    cli().run(&["task", "get"]).code(2);
    let out = cli()
        .run(&["--json", "task", "get", "task_missing"])
        .code(1);
    assert_eq!(out.error_code(), "resource_not_found");

    // edit / update / complete / block.
    cli().run(&["task", "edit", &root_id]).code(2);
    let edited = cli()
        .run(&[
            "--json",
            "task",
            "edit",
            &root_id,
            "--title",
            "Root 2",
            "--priority",
            "low",
        ])
        .ok()
        .data();
    assert_eq!(
        (edited["title"].as_str(), edited["priority"].as_str()),
        (Some("Root 2"), Some("low"))
    );
    let updated = cli()
        .run(&[
            "--json",
            "task",
            "update",
            &root_id,
            "--status",
            "in_progress",
        ])
        .ok()
        .data();
    assert_eq!(updated["status"], "in_progress");
    cli().run(&["task", "complete", &child_id]).ok();
    let out = cli()
        .run(&[
            "task",
            "block",
            &grandchild_id,
            "--reason",
            "waiting on API",
        ])
        .ok();
    assert!(out.stdout.contains("Reason: waiting on API"));
    assert_eq!(
        client.get_task(&child_id).await.unwrap().status,
        "completed"
    );
    assert_eq!(
        client.get_task(&grandchild_id).await.unwrap().status,
        "blocked"
    );
    // Status changes are noted in the session's timeline.
    let timeline = client.get_session(&s).await.unwrap().timeline;
    let notes: Vec<_> = timeline
        .iter()
        .filter(|e| e.kind == "task_status_changed")
        .map(|e| e.message.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        notes,
        [
            "Status changed to in_progress",
            "Status changed to completed",
            "Status changed to blocked: waiting on API"
        ]
    );

    // children / tree.
    let kids = cli()
        .run(&["--json", "task", "children", &root_id])
        .ok()
        .data();
    assert_eq!(kids.as_array().unwrap().len(), 1);
    let all = cli()
        .run(&["--json", "task", "children", &root_id, "--recursive"])
        .ok()
        .data();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let out = cli().run(&["task", "children", &grandchild_id]).ok();
    assert!(out.stdout.contains("No child tasks"));
    let tree = cli().run(&["--json", "task", "tree"]).ok().data();
    assert_eq!(tree[0]["id"], root_id.as_str());
    assert_eq!(
        tree[0]["children"][0]["children"][0]["id"],
        grandchild_id.as_str()
    );
    let shallow = cli()
        .run(&["--json", "task", "tree", "--depth", "1"])
        .ok()
        .data();
    assert_eq!(shallow[0]["children"], serde_json::json!([]));
    let from = cli()
        .run(&["--json", "task", "tree", "--root", &child_id])
        .ok()
        .data();
    assert_eq!(from.as_array().unwrap().len(), 1);
    let out = cli().run(&["task", "tree"]).ok();
    assert!(out.stdout.contains("Grandchild"));
    server.cli().run(&["task", "tree"]).code(2);

    // docs: a task lists the docs of the sessions working on it.
    client.link_task(&s, &root_id).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.md");
    std::fs::write(&file, "# Notes\nbody").unwrap();
    let doc = cli()
        .run(&[
            "--json",
            "task",
            "docs",
            "add",
            &root_id,
            "Notes",
            "--file",
            file.to_str().unwrap(),
        ])
        .ok()
        .data();
    assert_eq!(doc["content"], "# Notes\nbody");
    assert_eq!(doc["taskId"], root_id.as_str());
    let out = cli().run(&["task", "docs", "list", &root_id]).ok();
    assert!(
        out.stdout.contains("Notes") && out.stdout.contains(&s),
        "{}",
        out.stdout
    );
    let out = cli()
        .run(&[
            "--json",
            "task",
            "docs",
            "add",
            &root_id,
            "Gone",
            "--file",
            "/nonexistent/x",
        ])
        .code(1);
    assert_eq!(out.error_code(), "file_error");

    // delete --cascade counts the subtasks that went with it.
    let del = cli()
        .run(&["--json", "task", "delete", &root_id, "--cascade"])
        .ok()
        .data();
    assert_eq!(del["childrenDeleted"], 2);
    let left = cli().run(&["--json", "task", "list"]).ok().data();
    assert_eq!(left, serde_json::json!([]));
    let out = cli().run(&["task", "list"]).ok();
    assert!(out.stdout.contains("No tasks found."));
}

#[tokio::test]
async fn task_report_commands() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "reports").await;
    let t = task(&client, &p, "reported").await;
    let s = session(&client, &p, &[]).await;
    let cli = || server.cli().project(&p).session(&s);

    let out = server
        .cli()
        .run(&["--json", "task", "report", "progress", &t, "x"])
        .code(2);
    assert_eq!(out.error_code(), "no_context");
    assert!(out.stdout.contains("MAESTRO_SESSION_ID"));

    for (sub, status, kind) in [
        ("progress", "working", "progress"),
        ("blocked", "blocked", "task_blocked"),
        ("error", "failed", "error"),
        ("complete", "completed", "task_completed"),
    ] {
        let data = cli()
            .run(&["--json", "task", "report", sub, &t, &format!("{sub} note")])
            .ok()
            .data();
        assert_eq!(data["sessionStatus"], status);
        let task = client.get_task(&t).await.unwrap();
        assert_eq!(
            task.task_session_statuses.get(&s).map(String::as_str),
            Some(status)
        );
        let last = client
            .get_session(&s)
            .await
            .unwrap()
            .timeline
            .pop()
            .unwrap();
        assert_eq!(last.kind, kind);
        assert_eq!(
            last.message.as_deref(),
            Some(format!("{sub} note").as_str())
        );
        assert_eq!(last.task_id.as_deref(), Some(t.as_str()));
    }
    let out = cli().run(&["task", "report", "progress", &t, "human"]).ok();
    assert!(out.stdout.contains("Reported working"), "{}", out.stdout);
    cli()
        .run(&["task", "report", "progress", "task_missing", "x"])
        .code(1);
}

#[tokio::test]
async fn session_hook_commands() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "hooks").await;
    let t = task(&client, &p, "hooked").await;
    let sid = "sess_hook_test_1";
    let cli = || {
        server
            .cli()
            .project(&p)
            .session(sid)
            .env("MAESTRO_TASK_IDS", &t)
            .env("MAESTRO_MODE", "execute")
    };

    // Outside a session, hooks do nothing and succeed.
    for hook in ["register", "complete", "needs-input", "resume-working"] {
        let out = server.cli().run(&["session", hook]).ok();
        assert!(
            out.stderr.contains("nothing to do"),
            "{hook}: {}",
            out.stderr
        );
    }

    // register creates an unknown session, working, with the context's tasks.
    let data = cli().run(&["--json", "session", "register"]).ok().data();
    assert_eq!(
        data,
        serde_json::json!({ "sessionId": sid, "status": "registered" })
    );
    let s = client.get_session(sid).await.unwrap();
    assert_eq!(s.status, "working");
    assert_eq!(s.task_ids, [t.as_str()]);
    assert_eq!(s.name, "execute: sess_hook_test_1");
    assert_eq!(s.metadata.unwrap()["mode"], "execute");

    let data = cli()
        .run(&["--json", "session", "needs-input", "--message", "which DB?"])
        .ok()
        .data();
    assert_eq!(data["needsInput"], true);
    let s = client.get_session(sid).await.unwrap();
    let ni = s.needs_input.unwrap();
    assert!(ni.active);
    assert_eq!(ni.message.as_deref(), Some("which DB?"));
    let last = s.timeline.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.message.as_deref()),
        ("needs_input", Some("which DB?"))
    );

    // Hooks say nothing on stdout (agent tools feed it to the model or parse it).
    let out = cli().run(&["session", "resume-working"]).ok();
    assert!(out.stderr.contains("working again"), "{out:?}");
    assert_eq!(out.stdout, "");
    let s = client.get_session(sid).await.unwrap();
    assert_eq!(s.status, "working");
    assert!(!s.needs_input.unwrap().active);

    // A session that ends waiting for input waits no more (issue 19).
    cli().run(&["session", "needs-input"]).ok();
    assert!(
        client
            .get_session(sid)
            .await
            .unwrap()
            .needs_input
            .unwrap()
            .active
    );
    cli().run(&["session", "complete"]).ok();
    let s = client.get_session(sid).await.unwrap();
    assert_eq!(s.status, "completed");
    assert!(s.completed_at.is_some());
    assert!(!s.needs_input.unwrap().active, "needs-input stayed on");

    // register on a known session marks it working again (no second session).
    let out = cli().run(&["session", "register"]).ok();
    assert!(out.stderr.contains("registered"), "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(client.get_session(sid).await.unwrap().status, "working");
    let all = client
        .list_sessions(&SessionQuery {
            project_id: Some(p.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);

    // An unknown session without a project cannot be created.
    let out = server
        .cli()
        .session("sess_no_project")
        .run(&["--json", "session", "register"])
        .code(2);
    assert_eq!(out.error_code(), "no_context");
}

#[tokio::test]
async fn session_list_info_docs_and_reports() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "sessions").await;
    let t = task(&client, &p, "t").await;
    let a = session(&client, &p, &[&t]).await;
    let b = session(&client, &p, &[]).await;
    let cli = || server.cli().project(&p).session(&a);

    let out = cli().run(&["session", "list"]).ok();
    assert!(
        out.stdout.contains(&a) && out.stdout.contains(&b),
        "{}",
        out.stdout
    );
    let by_task = cli()
        .run(&["--json", "session", "list", "--task", &t])
        .ok()
        .data();
    assert_eq!(by_task.as_array().unwrap().len(), 1);
    assert_eq!(by_task[0]["id"], a.as_str());

    let out = cli().run(&["session", "info"]).ok();
    assert!(out.stdout.contains(&format!("ID: {a}")) && out.stdout.contains("Name: test session"));
    let info = cli().run(&["--json", "session", "info", &b]).ok().data();
    assert_eq!(info["id"], b.as_str());
    let out = cli()
        .run(&["--json", "session", "info", "sess_missing"])
        .code(1);
    assert_eq!(out.error_code(), "resource_not_found");
    server.cli().run(&["session", "info"]).code(2);

    // docs.
    let doc = cli()
        .run(&[
            "--json",
            "session",
            "docs",
            "add",
            "Plan",
            "--file",
            "plan.md",
            "--content",
            "step 1",
        ])
        .ok()
        .data();
    assert_eq!(
        (doc["title"].as_str(), doc["content"].as_str()),
        (Some("Plan"), Some("step 1"))
    );
    let out = cli().run(&["session", "docs", "list"]).ok();
    assert!(out.stdout.contains("plan.md"), "{}", out.stdout);
    let docs = cli()
        .run(&["--json", "session", "docs", "list"])
        .ok()
        .data();
    assert_eq!(docs.as_array().unwrap().len(), 1);

    // report and session report.
    let data = cli()
        .run(&["--json", "report", "progress", "half way"])
        .ok()
        .data();
    assert_eq!(data["sessionCompleted"], false);
    cli()
        .run(&["session", "report", "blocked", "need keys"])
        .ok();
    cli().run(&["report", "error", "it broke"]).ok();
    let kinds: Vec<_> = client
        .get_session(&a)
        .await
        .unwrap()
        .timeline
        .iter()
        .rev()
        .take(3)
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, ["error", "task_blocked", "progress"]);
    let out = cli().run(&["report", "complete", "all done"]).ok();
    assert!(out.stdout.contains("completed"));
    let s = client.get_session(&a).await.unwrap();
    assert_eq!(s.status, "completed");
    assert_eq!(s.timeline.last().unwrap().kind, "task_completed");
    let out = server
        .cli()
        .run(&["--json", "report", "progress", "x"])
        .code(2);
    assert_eq!(out.error_code(), "no_context");

    // --active drops completed sessions.
    let active = cli()
        .run(&["--json", "session", "list", "--active"])
        .ok()
        .data();
    let ids: Vec<_> = active
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [Value::String(b.clone())]);
}

#[tokio::test]
async fn session_spawn_and_watch() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "spawn").await;
    let t = task(&client, &p, "spawned task").await;

    let spawned = server
        .cli()
        .run(&[
            "--json", "session", "spawn", "--task", &t, "--name", "helper",
        ])
        .ok()
        .data();
    let sid = spawned["sessionId"].as_str().unwrap().to_owned();
    let s = client.get_session(&sid).await.unwrap();
    assert_eq!((s.status.as_str(), s.name.as_str()), ("spawning", "helper"));
    let out = server
        .cli()
        .run(&["session", "spawn", "--task", "task_missing"])
        .code(1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);

    // watch exits once every watched session has finished.
    let mut watcher = std::process::Command::new(BIN)
        .args(["--json", "session", "watch", &sid, "--timeout", "20000"])
        .env("MAESTRO_SERVER_URL", &server.url)
        .env_remove("MAESTRO_WS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Once it is connected (and has read the status), finish the session.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.ws_status().await.unwrap()["connectedClients"] == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "watch never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .cli()
        .session(&sid)
        .run(&["report", "progress", "working on it"])
        .ok();
    server
        .cli()
        .session(&sid)
        .run(&["session", "complete"])
        .ok();
    let status = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        watcher
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (watcher.wait().unwrap(), out)
    });
    let (status, out) = tokio::time::timeout(Duration::from_secs(15), status)
        .await
        .expect("watch exits when the session completes")
        .unwrap();
    assert!(status.success());
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert!(events.iter().all(|e| e["sessionId"] == sid.as_str()));
    assert!(
        events.iter().any(|e| e["event"] == "notify:progress"),
        "{out}"
    );
    let last = events.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["data"]["status"].as_str()),
        (Some("session:updated"), Some("completed")),
        "{out}"
    );

    // Watching a session that already finished returns at once.
    let out = server.cli().run(&["session", "watch", &sid]).ok();
    assert!(
        out.stdout.contains("All watched sessions have finished."),
        "{}",
        out.stdout
    );
    server.cli().run(&["session", "watch", " , "]).code(2);
}

#[tokio::test]
async fn mail_commands() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "mail").await;
    let a = session(&client, &p, &[]).await;
    let b = session(&client, &p, &[]).await;
    let as_a = || server.cli().project(&p).session(&a);
    let as_b = || server.cli().project(&p).session(&b);

    let sent = as_a()
        .run(&[
            "--json",
            "mail",
            "send",
            &b,
            "--type",
            "directive",
            "--subject",
            "Review",
            "--message",
            "please review",
            "--task-id",
            "task_1",
            "--action",
            "review",
        ])
        .ok()
        .data();
    assert_eq!(sent["toSessionId"], b.as_str());
    assert_eq!(
        sent["body"],
        serde_json::json!({ "details": "please review", "task_id": "task_1", "action": "review" })
    );
    let mail_id = sent["id"].as_str().unwrap().to_owned();

    let out = as_b().run(&["mail", "inbox"]).ok();
    assert!(
        out.stdout.contains(&mail_id) && out.stdout.contains("Review"),
        "{}",
        out.stdout
    );
    let inbox = as_b()
        .run(&["--json", "mail", "inbox", "--type", "directive"])
        .ok()
        .data();
    assert_eq!(inbox.as_array().unwrap().len(), 1);

    let reply = as_b()
        .run(&[
            "--json",
            "mail",
            "reply",
            &mail_id,
            "--message",
            "looks good",
        ])
        .ok()
        .data();
    assert_eq!(reply["type"], "response");
    assert_eq!(reply["subject"], "Re: Review");
    assert_eq!(reply["toSessionId"], a.as_str());
    assert_eq!(reply["replyToMailId"], mail_id.as_str());
    assert_eq!(reply["body"]["answer"], "looks good");

    let out = as_a()
        .run(&[
            "mail",
            "broadcast",
            "--type",
            "notification",
            "--subject",
            "hi all",
            "--message",
            "hello",
        ])
        .ok();
    assert!(out.stdout.contains("broadcast"));
    let inbox_b = as_b().run(&["--json", "mail", "inbox"]).ok().data();
    assert_eq!(inbox_b.as_array().unwrap().len(), 2);

    // Several recipients at once.
    let many = as_a()
        .run(&[
            "--json",
            "mail",
            "send",
            &format!("{a},{b}"),
            "--type",
            "query",
            "--subject",
            "q",
        ])
        .ok()
        .data();
    assert_eq!(many.as_array().unwrap().len(), 2);

    // wait --ack: the backlog once, then nothing new until the timeout.
    let first = as_b()
        .run(&["--json", "mail", "wait", "--ack", "--timeout", "1000"])
        .ok()
        .data();
    assert_eq!(first.as_array().unwrap().len(), 3);
    let out = as_b()
        .run(&["mail", "wait", "--ack", "--timeout", "1000"])
        .ok();
    assert!(out.stdout.contains("no new mail"), "{}", out.stdout);

    // wait wakes up when mail arrives.
    let waiter = as_b().run_background(&["mail", "wait", "--ack", "--timeout", "20000"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    as_a()
        .run(&[
            "mail",
            "send",
            &b,
            "--type",
            "status_update",
            "--subject",
            "ping",
            "--message",
            "x",
        ])
        .ok();
    let out = tokio::task::spawn_blocking(move || waiter.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("[status_update] ping"),
        "{text}"
    );

    // Bad input.
    as_a()
        .run(&["mail", "send", "--type", "query", "--subject", "x"])
        .code(2);
    as_a()
        .run(&["mail", "send", &b, "--type", "nonsense", "--subject", "x"])
        .code(2);
    let out = as_a()
        .run(&["--json", "mail", "reply", "mail_missing", "--message", "x"])
        .code(1);
    assert_eq!(out.error_code(), "resource_not_found");
    let out = server
        .cli()
        .session(&a)
        .run(&["--json", "mail", "inbox"])
        .code(2);
    assert_eq!(out.error_code(), "no_context");
    as_b().run(&["mail", "wait", "--timeout", "5"]).code(1);
}

/// `Cli` started in the background, for long-polls.
trait Background {
    fn run_background(self, args: &[&str]) -> std::process::Child;
}

impl Background for Cli {
    fn run_background(mut self, args: &[&str]) -> std::process::Child {
        self.command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

#[tokio::test]
async fn team_member_commands() {
    let server = Server::start().await;
    let p = project(&server.client(), "team").await;
    let cli = || server.cli().project(&p);

    let out = cli().run(&["team-member", "list"]).ok();
    assert!(out.stdout.contains("Simple Worker") && out.stdout.contains("Coordinator"));
    let list = cli().run(&["--json", "team-member", "list"]).ok().data();
    assert_eq!(list.as_array().unwrap().len(), 5);

    let m = cli()
        .run(&[
            "--json",
            "team-member",
            "create",
            "Rusty",
            "--role",
            "Porter",
            "--avatar",
            "R",
            "--mode",
            "execute",
            "--identity",
            "You port things",
        ])
        .ok()
        .data();
    let id = m["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (m["name"].as_str(), m["agentTool"].as_str()),
        (Some("Rusty"), Some("claude-code"))
    );
    let out = cli().run(&["team-member", "get", &id]).ok();
    assert!(
        out.stdout.contains("Name: R Rusty") && out.stdout.contains("Identity: You port things")
    );
    let edited = cli()
        .run(&[
            "--json",
            "team-member",
            "edit",
            &id,
            "--role",
            "Lead porter",
            "--model",
            "opus",
        ])
        .ok()
        .data();
    assert_eq!(
        (edited["role"].as_str(), edited["model"].as_str()),
        (Some("Lead porter"), Some("opus"))
    );

    cli().run(&["team-member", "edit", &id]).code(2);
    cli()
        .run(&[
            "team-member",
            "create",
            "X",
            "--role",
            "r",
            "--avatar",
            "a",
            "--mode",
            "bogus",
        ])
        .code(2);
    let out = cli()
        .run(&["--json", "team-member", "get", "tm_missing"])
        .code(1);
    assert_eq!(out.error_code(), "resource_not_found");
    let out = server.cli().run(&["--json", "team-member", "list"]).code(2);
    assert_eq!(out.error_code(), "no_context");
}

#[tokio::test]
async fn status_command() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "status").await;
    let t1 = task(&client, &p, "a").await;
    task(&client, &p, "b").await;
    let s = session(&client, &p, &[]).await;
    server
        .cli()
        .project(&p)
        .run(&["task", "complete", &t1])
        .ok();
    server
        .cli()
        .session(&s)
        .project(&p)
        .run(&["session", "register"])
        .ok();

    let out = server.cli().project(&p).run(&["status"]).ok();
    assert!(out.stdout.contains("Tasks: 2 total"), "{}", out.stdout);
    assert!(out.stdout.contains("Completed: 1") && out.stdout.contains("Active Sessions: 1"));
    let data = server
        .cli()
        .project(&p)
        .run(&["--json", "status"])
        .ok()
        .data();
    assert_eq!(
        data["tasks"]["byStatus"],
        serde_json::json!({ "completed": 1, "todo": 1 })
    );
    assert_eq!(data["sessions"]["active"], 1);
    let out = server.cli().run(&["--json", "status"]).code(2);
    assert_eq!(out.error_code(), "no_context");
}

#[tokio::test]
async fn claims_and_heartbeats() {
    let server = Server::start().await;
    let client = server.client();
    let p = project(&client, "claims").await;
    let t = task(&client, &p, "contended").await;
    let a = session(&client, &p, &[]).await;
    let b = session(&client, &p, &[]).await;

    server.cli().run(&["claim", &t]).code(2);
    server.cli().run(&["heartbeat"]).code(2);
    let probe = client
        .raw(
            maestro_client::Method::POST,
            &format!("/api/tasks/{t}/claim"),
            Some(&serde_json::json!({ "sessionId": a, "ttlMs": 1 })),
        )
        .await
        .unwrap();
    let claims_supported = !(probe.status == 404
        && probe.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no route")));
    if claims_supported {
        // Let the probe's 1 ms lease lapse.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lease = server
            .cli()
            .session(&a)
            .run(&["--json", "claim", &t, "--ttl", "30000"])
            .ok()
            .data();
        assert_eq!(lease["holder"], a.as_str());
        let token = lease["fencingToken"].as_u64().unwrap().to_string();
        let out = server
            .cli()
            .session(&b)
            .run(&["--json", "claim", &t])
            .code(1);
        assert_eq!(out.error_code(), "conflict");
        assert!(
            out.stdout.contains(&a),
            "the holder is named: {}",
            out.stdout
        );
        server
            .cli()
            .session(&a)
            .run(&["renew", &t, "--token", &token])
            .ok();
        server
            .cli()
            .session(&a)
            .run(&["release", &t, "--token", &token])
            .ok();
        server.cli().session(&b).run(&["claim", &t]).ok();
    } else {
        for args in [
            vec!["claim", t.as_str()],
            vec!["renew", t.as_str(), "--token", "1"],
            vec!["release", t.as_str(), "--token", "1"],
        ] {
            let out = server.cli().session(&a).run(&args).code(1);
            assert!(
                out.stderr.contains("does not support task claims"),
                "{}",
                out.stderr
            );
        }
        let out = server
            .cli()
            .session(&a)
            .run(&["--json", "claim", &t])
            .code(1);
        assert_eq!(out.error_code(), "unsupported");
    }

    let probe = client
        .raw(
            maestro_client::Method::POST,
            &format!("/api/sessions/{a}/heartbeat"),
            Some(&serde_json::json!({})),
        )
        .await
        .unwrap();
    if probe.status == 404
        && probe.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no route"))
    {
        let out = server.cli().session(&a).run(&["heartbeat"]).code(1);
        assert!(
            out.stderr.contains("does not support heartbeats"),
            "{}",
            out.stderr
        );
    } else {
        server.cli().session(&a).run(&["heartbeat"]).ok();
        server
            .cli()
            .session(&a)
            .run(&["--json", "heartbeat"])
            .ok()
            .data();
    }
}

/// A stand-in HTTP server that answers every request with `status` a fixed number of times,
/// then 200 `[]`, recording each request's head. It stands for a failing server, which the
/// real one cannot be made into on demand.
fn flaky_server(failures: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            log.lock().unwrap().push(head);
            let (status, body) = if n < failures {
                (
                    "503 Service Unavailable",
                    r#"{"error":true,"statusCode":503,"code":"UNAVAILABLE","message":"try later"}"#,
                )
            } else {
                ("200 OK", "[]")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn gets_are_retried_and_writes_without_a_key_are_not() {
    let home = tempfile::tempdir().unwrap();
    let (url, seen) = flaky_server(2);
    let cli = || Cli::new(Some(&url), home.path()).env("MAESTRO_RETRY_DELAY", "10");
    let out = cli().run(&["--json", "project", "list"]).ok();
    assert_eq!(out.data(), serde_json::json!([]));
    assert_eq!(seen.lock().unwrap().len(), 3, "two 503s, then the answer");

    let (url, seen) = flaky_server(10);
    let out = Cli::new(Some(&url), home.path())
        .env("MAESTRO_RETRY_DELAY", "10")
        .run(&["--json", "project", "create", "once"])
        .code(1);
    assert_eq!(out.error_code(), "server_error");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a POST without a key is sent once"
    );

    // MAESTRO_RETRIES bounds the attempts.
    let (url, seen) = flaky_server(10);
    Cli::new(Some(&url), home.path())
        .env("MAESTRO_RETRY_DELAY", "1")
        .env("MAESTRO_RETRIES", "1")
        .run(&["project", "list"])
        .code(1);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn the_token_is_sent_as_a_bearer_credential() {
    let home = tempfile::tempdir().unwrap();
    let (url, seen) = flaky_server(0);
    Cli::new(Some(&url), home.path())
        .env("MAESTRO_TOKEN", "tok-env")
        .run(&["project", "list"])
        .ok();
    std::fs::create_dir_all(home.path().join(".maestro")).unwrap();
    std::fs::write(
        home.path().join(".maestro/config"),
        "# maestro\ntoken=tok-file\n",
    )
    .unwrap();
    Cli::new(Some(&url), home.path())
        .run(&["project", "list"])
        .ok();
    let heads = seen.lock().unwrap();
    let auth = |h: &str| {
        h.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
            .map(|l| l.trim().to_owned())
    };
    assert_eq!(
        auth(&heads[0]).as_deref(),
        Some("authorization: Bearer tok-env")
    );
    assert_eq!(
        auth(&heads[1]).as_deref(),
        Some("authorization: Bearer tok-file")
    );
}
