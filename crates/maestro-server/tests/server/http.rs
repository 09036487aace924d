//! Cross-cutting HTTP behaviour: the operational endpoints, and every way a request can be
//! malformed — bad JSON, oversize body, wrong field types, invalid enums, bad ids, unknown
//! routes and methods — each answered with the one JSON error shape and leaving no trace
//! (lists unchanged, no WebSocket frame, no gap in the event sequence).
//!
//! Requests no typed client would send go through `raw_http` on a bare socket.

use crate::common;

use common::{TestServer, api_err, assert_error_body, snapshot};
use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateSession, CreateTask, Project, Session, Task};
use serde_json::json;

struct Fixture {
    server: TestServer,
    api: Client,
    project: Project,
    task: Task,
    session: Session,
}

async fn fixture() -> Fixture {
    let server = TestServer::start().await;
    let api = server.client();
    let project = api
        .create_project(&CreateProject {
            name: Some("P".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let task = api
        .create_task(&CreateTask {
            project_id: Some(project.id.clone()),
            title: Some("T".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let session = api
        .create_session(&CreateSession {
            project_id: Some(project.id.clone()),
            task_ids: Some(vec![task.id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    Fixture {
        server,
        api,
        project,
        task,
        session,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_endpoints() {
    let server = TestServer::start().await;
    let api = server.client();

    let h = api.health().await.unwrap();
    assert_eq!(h.status, "ok");
    assert!(h.timestamp > 0);
    assert!(h.uptime >= 0.0);
    let raw = server.raw("GET", "/health", None, "").await;
    assert_eq!(raw.status, 200);
    assert_eq!(
        common::keys(&raw.json()),
        common::set(&["status", "timestamp", "uptime"])
    );
    assert!(
        raw.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        raw.headers
    );

    // A browser at `/agents` learns what this is and where the API reference is (`/` is the
    // web app, see web.rs; the legacy WebSocket on `/` is an upgrade, answered before
    // routing: see below).
    let index = server.raw("GET", "/agents", None, "").await;
    assert_eq!(index.status, 200);
    assert!(
        index
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/html")),
        "{:?}",
        index.headers
    );
    let page = String::from_utf8(index.body).unwrap();
    assert!(page.contains("<title>Maestro</title>") && page.contains("href=\"/api/docs\""));

    let r = api.ready().await.unwrap();
    let backend = if common::redis::enabled() {
        "redis"
    } else {
        "local"
    };
    assert_eq!((r.status.as_str(), r.backend.as_str()), ("ready", backend));

    let none = api.ws_status().await.unwrap();
    assert_eq!(none, json!({ "connectedClients": 0, "clients": [] }));
    let ws1 = server.ws().await;
    let ws2 = server.ws_at("/any/path").await;
    let two = api.ws_status().await.unwrap();
    let open = json!({ "readyState": 1, "readyStateText": "OPEN" });
    assert_eq!(
        two,
        json!({ "connectedClients": 2, "clients": [open.clone(), open] })
    );
    ws1.close().await;
    ws2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let Fixture {
        server,
        api,
        task,
        session,
        ..
    } = fixture().await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    let task_path = format!("/api/tasks/{}", task.id);
    let session_path = format!("/api/sessions/{}", session.id);
    let timeline_path = format!("/api/sessions/{}/timeline", session.id);
    for (method, path, body) in [
        ("POST", "/api/projects", "{bad"),
        ("POST", "/api/projects", "{\"name\": \"x\""),
        ("POST", "/api/projects", "{\"name\": \"x\"} trailing"),
        ("POST", "/api/tasks", "not json at all"),
        ("PATCH", task_path.as_str(), "{\"status\": }"),
        ("PATCH", session_path.as_str(), "[1,2"),
        (
            "POST",
            timeline_path.as_str(),
            "{'message': 'single quotes'}",
        ),
    ] {
        let r = server
            .raw(method, path, Some("application/json"), body)
            .await;
        // Upstream answered 500 INTERNAL_ERROR (contract §7.25); Maestro answers 400.
        assert_eq!(r.status, 400, "{method} {path} {body:?}: {:?}", r.json());
        assert_error_body(&r.json(), 400, "VALIDATION_ERROR");
    }
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_is_413() {
    let Fixture {
        server,
        api,
        project,
        task,
        ..
    } = fixture().await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    // ~2 MiB against the default 1 MiB limit, in otherwise valid requests.
    let big = "x".repeat(2 * 1024 * 1024);
    let create = json!({ "projectId": project.id, "title": "big", "description": big });
    let r = server
        .raw(
            "POST",
            "/api/tasks",
            Some("application/json"),
            create.to_string(),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_error_body(&r.json(), 413, "PAYLOAD_TOO_LARGE");
    let patch = json!({ "description": big });
    let r = server
        .raw(
            "PATCH",
            &format!("/api/tasks/{}", task.id),
            Some("application/json"),
            patch.to_string(),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_error_body(&r.json(), 413, "PAYLOAD_TOO_LARGE");

    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
    // Just under the limit is fine.
    let fits =
        json!({ "projectId": project.id, "title": "fits", "description": "y".repeat(1000 * 1000) });
    let r = server
        .raw(
            "POST",
            "/api/tasks",
            Some("application/json"),
            fits.to_string(),
        )
        .await;
    assert_eq!(r.status, 201);
    let f = ws.expect_events(&["task:created"]).await;
    assert_eq!(f[0]["data"]["title"], "fits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_field_types_are_400() {
    let Fixture {
        server,
        api,
        project,
        task,
        session,
    } = fixture().await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    let t = format!("/api/tasks/{}", task.id);
    let s = format!("/api/sessions/{}", session.id);
    let p = format!("/api/projects/{}", project.id);
    let cases: Vec<(&str, String, serde_json::Value)> = vec![
        ("POST", "/api/projects".into(), json!({ "name": 5 })),
        ("POST", "/api/projects".into(), json!(["name"])),
        ("POST", "/api/projects".into(), json!("just a string")),
        ("PUT", p.clone(), json!({ "workingDir": ["a"] })),
        (
            "POST",
            "/api/tasks".into(),
            json!({ "projectId": project.id, "title": "x", "skillIds": "not-an-array" }),
        ),
        (
            "POST",
            "/api/tasks".into(),
            json!({ "projectId": project.id, "title": true }),
        ),
        ("PATCH", t.clone(), json!({ "pinned": "yes" })),
        ("PATCH", t.clone(), json!({ "status": 3 })),
        (
            "PATCH",
            t.clone(),
            json!({ "taskSessionStatuses": ["working"] }),
        ),
        (
            "POST",
            "/api/sessions".into(),
            json!({ "projectId": project.id, "taskIds": "task_1" }),
        ),
        ("PATCH", s.clone(), json!({ "env": { "A": 1 } })),
        ("PATCH", s.clone(), json!({ "needsInput": true })),
        ("PATCH", s.clone(), json!({ "status": null, "events": {} })),
        (
            "POST",
            format!("{s}/timeline"),
            json!({ "message": { "text": "hi" } }),
        ),
        ("POST", format!("{s}/events"), json!({ "type": 1 })),
        (
            "POST",
            format!("{s}/docs"),
            json!({ "title": "t", "filePath": 7 }),
        ),
    ];
    for (method, path, body) in &cases {
        let r = server
            .raw(method, path, Some("application/json"), body.to_string())
            .await;
        assert_eq!(r.status, 400, "{method} {path} {body}: {:?}", r.json());
        assert_error_body(&r.json(), 400, "VALIDATION_ERROR");
    }
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_enum_values_are_400() {
    let Fixture {
        server,
        api,
        project,
        task,
        session,
    } = fixture().await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    // Upstream stored any string (contract §7.8); Maestro validates.
    let t = format!("/api/tasks/{}", task.id);
    let s = format!("/api/sessions/{}", session.id);
    let cases: Vec<(&str, String, serde_json::Value)> = vec![
        ("PATCH", t.clone(), json!({ "status": "nonsense" })),
        ("PATCH", t.clone(), json!({ "priority": "urgent" })),
        (
            "PATCH",
            t.clone(),
            json!({ "updateSource": "session", "sessionId": session.id, "sessionStatus": "done" }),
        ),
        (
            "POST",
            "/api/tasks".into(),
            json!({ "projectId": project.id, "title": "x", "priority": "p0" }),
        ),
        ("PATCH", s.clone(), json!({ "status": "paused" })),
        (
            "POST",
            "/api/sessions".into(),
            json!({ "projectId": project.id, "taskIds": [], "status": "paused" }),
        ),
    ];
    for (method, path, body) in &cases {
        let r = server
            .raw(method, path, Some("application/json"), body.to_string())
            .await;
        assert_eq!(r.status, 400, "{method} {path} {body}: {:?}", r.json());
        assert_error_body(&r.json(), 400, "VALIDATION_ERROR");
    }
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_400() {
    let Fixture {
        server,
        api,
        task,
        session,
        ..
    } = fixture().await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    // Through the typed client (which percent-encodes, so each id stays one path segment).
    // `.` and `..` included: URL parsers resolve such segments, percent-encoded or not, so
    // `get_project("..")` once requested `/api/` and `unlink_task("..", t)` `DELETE
    // /api/tasks/t`.
    for bad in [
        "a.b",
        "a/b",
        "a b",
        "é",
        "%2e%2e",
        ".",
        "..",
        "...",
        "%2E",
        &"x".repeat(129),
    ] {
        api_err(api.get_project(bad).await, 400, "VALIDATION_ERROR");
        api_err(api.get_task(bad).await, 400, "VALIDATION_ERROR");
        api_err(api.get_session(bad).await, 400, "VALIDATION_ERROR");
        api_err(api.task_children(bad).await, 400, "VALIDATION_ERROR");
        api_err(api.delete_task(bad).await, 400, "VALIDATION_ERROR");
        api_err(api.delete_session(bad).await, 400, "VALIDATION_ERROR");
        api_err(
            api.link_task(&session.id, bad).await,
            400,
            "VALIDATION_ERROR",
        );
        api_err(
            api.unlink_task(bad, &task.id).await,
            400,
            "VALIDATION_ERROR",
        );
    }
    // Raw paths: encoded dots reach the server decoded as `..` and are refused, not resolved.
    for path in [
        "/api/projects/%2e%2e".to_owned(),
        "/api/projects/a.b".to_owned(),
        "/api/tasks/%2e%2e/children".to_owned(),
        "/api/tasks/%2E%2E%2Fetc".to_owned(),
        "/api/sessions/%2e%2e".to_owned(),
        "/api/sessions/%2e%2e/docs".to_owned(),
    ] {
        let r = server.raw("GET", &path, None, "").await;
        assert_eq!(r.status, 400, "GET {path}: {:?}", r.json());
        assert_error_body(&r.json(), 400, "VALIDATION_ERROR");
    }
    let r = server
        .raw(
            "POST",
            &format!("/api/sessions/{}/modal/%2e%2e/close", session.id),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    let r = server
        .raw(
            "DELETE",
            &format!("/api/sessions/{}/tasks/%2e%2e", session.id),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let Fixture {
        server,
        api,
        task,
        session,
        ..
    } = fixture().await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    // Upstream answered unknown routes with Express's HTML page (contract §7.25, golden
    // call 35); Maestro answers JSON.
    for (method, path) in [
        ("GET", "/api/nonexistent"),
        ("GET", "/nope"),
        ("POST", "/api/tasks/x/y/z"),
        ("GET", "/api"),
    ] {
        let r = server.raw(method, path, None, "").await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert!(
            r.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "{method} {path}: {:?}",
            r.headers
        );
        let body = r.json();
        assert_error_body(&body, 404, "NOT_FOUND");
    }
    let t = format!("/api/tasks/{}", task.id);
    let s = format!("/api/sessions/{}", session.id);
    for (method, path) in [
        ("DELETE", "/api/projects"),
        ("PATCH", "/api/projects"),
        ("PUT", t.as_str()),
        ("POST", t.as_str()),
        ("PUT", s.as_str()),
        ("DELETE", "/health"),
        ("POST", "/ws-status"),
    ] {
        let r = server
            .raw(method, path, Some("application/json"), "{}")
            .await;
        assert_eq!(r.status, 405, "{method} {path}: {:?}", r.json());
        assert_error_body(&r.json(), 405, "METHOD_NOT_ALLOWED");
    }
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenient_bodies() {
    let Fixture {
        server,
        api,
        project,
        task,
        session,
    } = fixture().await;
    let mut ws = server.ws().await;

    // A body without `Content-Type: application/json` is refused (a cross-site form or
    // `text/plain` post must not get in) and changes nothing.
    for content_type in [None, Some("text/plain")] {
        let r = server
            .raw(
                "POST",
                "/api/tasks",
                content_type,
                json!({ "projectId": project.id, "title": "t" }).to_string(),
            )
            .await;
        assert_eq!(r.status, 415, "{content_type:?}");
        assert_error_body(&r.json(), 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    ws.assert_quiet().await;

    // Unknown fields: accepted and ignored, as upstream clients expect.
    let r = server
        .raw(
            "POST",
            "/api/tasks",
            Some("application/json"),
            json!({ "projectId": project.id, "title": "t", "bogusField": 1, "status": "completed", "model": "opus" })
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let created = r.json();
    assert!(created.get("bogusField").is_none());
    assert!(created.get("model").is_none());
    assert_eq!(created["status"], "todo", "status on create is ignored");
    ws.expect_events(&["task:created"]).await;

    // An empty body reads as {}.
    let r = server
        .raw("PATCH", &format!("/api/tasks/{}", task.id), None, "")
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    ws.expect_events(&["task:updated"]).await;
    let r = server
        .raw(
            "POST",
            &format!("/api/sessions/{}/tasks/{}", session.id, task.id),
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    ws.expect_events(&["session:task_added", "task:session_added"])
        .await;
    let r = server
        .raw("POST", "/api/projects", Some("application/json"), "")
        .await;
    assert_eq!(r.status, 400);
    assert_error_body(&r.json(), 400, "VALIDATION_ERROR");
    assert_eq!(r.json()["message"], "Project name is required");
    ws.assert_quiet().await;
    assert_eq!(api.list_projects().await.unwrap().len(), 1);
}
