//! `POST /api/sessions/spawn`: validation codes in upstream's order, the event sequence, the
//! server-written manifest, idempotency keys, and that failure leaves nothing behind.

use crate::common;

use common::{TestServer, api_err, snapshot};
use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateSession, CreateTask, SpawnRequest};
use serde_json::Value;

async fn setup(c: &Client) -> (String, Vec<String>) {
    let p = c
        .create_project(&CreateProject {
            name: Some("spawn".into()),
            working_dir: Some("/work/here".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..2 {
        let t = c
            .create_task(&CreateTask {
                project_id: Some(p.id.clone()),
                title: Some(format!("task {i}")),
                ..Default::default()
            })
            .await
            .unwrap();
        tasks.push(t.id);
    }
    (p.id, tasks)
}

fn req(p: &str, tasks: &[String]) -> SpawnRequest {
    SpawnRequest {
        project_id: Some(p.into()),
        task_ids: Some(tasks.to_vec()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_creates_session_manifest_and_events() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, tasks) = setup(c).await;
    let mut ws = server.ws().await;
    let r = c
        .spawn(
            &SpawnRequest {
                team_member_id: Some(format!("tm_{p}_coordinator")),
                ..req(&p, &tasks)
            },
            None,
        )
        .await
        .unwrap();
    assert!(r.success);
    assert_eq!(r.session.status, "spawning");
    assert_eq!(r.session.name, format!("Coordinate for {}", tasks[0]));
    assert_eq!(
        r.session.team_member_id.as_deref(),
        Some(format!("tm_{p}_coordinator").as_str())
    );
    assert_eq!(r.session.env["MAESTRO_SESSION_ID"], r.session_id);
    assert_eq!(r.session.env["MAESTRO_MODE"], "coordinate");

    let frames = ws
        .expect_events(&[
            "session:updated",
            "session:spawn",
            "task:session_added",
            "task:session_added",
        ])
        .await;
    let spawn = &frames[1]["data"];
    assert_eq!(spawn["command"], "maestro orchestrator init");
    assert_eq!(spawn["cwd"], "/work/here");
    assert_eq!(spawn["_isSpawnCreated"], true);
    assert_eq!(spawn["parentSessionId"], Value::Null);
    assert_eq!(spawn["manifest"]["mode"], "coordinate");
    assert_eq!(spawn["manifest"]["tasks"].as_array().unwrap().len(), 2);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(&r.manifest_path).expect("manifest written"))
            .unwrap();
    assert_eq!(manifest["manifestVersion"], "1.0");
    assert_eq!(manifest["session"]["workingDirectory"], "/work/here");
    assert_eq!(manifest["teamMemberName"], "Coordinator");
    assert_eq!(manifest, spawn["manifest"]);
    #[cfg(unix)]
    {
        // The manifest and its directory are the owner's alone.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = std::path::Path::new(&r.manifest_path);
        assert_eq!(mode(path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    for t in &tasks {
        assert!(
            c.get_task(t)
                .await
                .unwrap()
                .session_ids
                .contains(&r.session_id)
        );
    }
    let stored = c.get_session(&r.session_id).await.unwrap();
    assert_eq!(stored, r.session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_codes_in_upstream_order() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, tasks) = setup(c).await;
    let before = snapshot(c).await;
    let cases: Vec<(SpawnRequest, u16, &str)> = vec![
        (SpawnRequest::default(), 400, "missing_project_id"),
        (
            SpawnRequest {
                task_ids: Some(vec![]),
                ..req(&p, &[])
            },
            400,
            "invalid_task_ids",
        ),
        (
            SpawnRequest {
                spawn_source: Some("cron".into()),
                ..req(&p, &tasks)
            },
            400,
            "invalid_spawn_source",
        ),
        (
            SpawnRequest {
                spawn_source: Some("session".into()),
                ..req(&p, &tasks)
            },
            400,
            "missing_session_id",
        ),
        (
            SpawnRequest {
                spawn_source: Some("session".into()),
                session_id: Some("sess_nope".into()),
                ..req(&p, &tasks)
            },
            404,
            "parent_session_not_found",
        ),
        (
            SpawnRequest {
                mode: Some("dance".into()),
                ..req(&p, &tasks)
            },
            400,
            "invalid_mode",
        ),
        (req(&p, &["task_nope".into()]), 404, "task_not_found"),
        (req("proj_nope", &tasks), 404, "project_not_found"),
    ];
    for (r, status, code) in cases {
        let body = api_err(c.spawn(&r, None).await, status, code);
        if code == "task_not_found" {
            assert!(body.details.unwrap()["taskId"].is_string());
        }
    }
    assert_eq!(snapshot(c).await, before, "failed spawns changed nothing");
    assert!(
        !server.dir().join("sessions").exists()
            || std::fs::read_dir(server.dir().join("sessions"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_spawn_records_parent() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, tasks) = setup(c).await;
    let parent = c
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![tasks[0].clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = c
        .spawn(
            &SpawnRequest {
                spawn_source: Some("session".into()),
                session_id: Some(parent.id.clone()),
                session_name: Some("helper".into()),
                ..req(&p, &tasks[1..])
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.session.name, "helper");
    assert_eq!(
        r.session.metadata.as_ref().unwrap()["spawnedBy"],
        parent.id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_yields_one_session() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, tasks) = setup(c).await;
    let first = c.spawn(&req(&p, &tasks), Some("retry-1")).await.unwrap();
    let again = c.spawn(&req(&p, &tasks), Some("retry-1")).await.unwrap();
    assert_eq!(first.session_id, again.session_id);
    // Concurrent retries with one key also make one session.
    let mut joins = Vec::new();
    for _ in 0..8 {
        let (c, r) = (server.client(), req(&p, &tasks));
        joins.push(tokio::spawn(async move {
            c.spawn(&r, Some("burst")).await.unwrap().session_id
        }));
    }
    let mut ids = Vec::new();
    for j in joins {
        ids.push(j.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let sessions = c.list_sessions(&Default::default()).await.unwrap();
    assert_eq!(sessions.len(), 2, "one session per key");
    // Only the two winners' manifests remain.
    let dirs = std::fs::read_dir(server.dir().join("sessions"))
        .unwrap()
        .count();
    assert_eq!(dirs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_failure_leaves_no_session() {
    let dir = tempfile::tempdir().unwrap();
    // SESSION_DIR is a file, so the manifest cannot be written.
    std::fs::write(dir.path().join("sessions"), b"not a directory").unwrap();
    let server = TestServer::start_in(dir.path()).await;
    let c = server.api();
    let (p, tasks) = setup(c).await;
    let before = snapshot(c).await;
    api_err(
        c.spawn(&req(&p, &tasks), Some("k")).await,
        500,
        "manifest_generation_failed",
    );
    assert_eq!(snapshot(c).await, before);
    assert!(
        c.list_sessions(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_provider_keys_in_session_or_event() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, tasks) = setup(c).await;
    let mut ws = server.ws().await;
    let r = c.spawn(&req(&p, &tasks), None).await.unwrap();
    let frames = ws
        .expect_events(&["session:updated", "session:spawn"])
        .await;
    let all = format!(
        "{} {} {:?}",
        serde_json::to_string(&frames).unwrap(),
        serde_json::to_string(&r.session).unwrap(),
        r.session.env
    );
    for key in [
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
    ] {
        assert!(!all.contains(key), "{key} leaked");
    }
}
