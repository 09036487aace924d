//! `/api/projects`: create, list, get, update, delete, with the `project:*` frames a legacy
//! WebSocket client receives (global scope: `projectId` null, own gap-free `seq`).

use crate::common;

use axum::http::Method;
use common::{TestServer, api_err, snapshot, to_json};
use maestro_protocol::{CreateProject, CreateSession, CreateTask, UpdateProject};
use serde_json::json;

fn named(name: &str) -> CreateProject {
    CreateProject {
        name: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_get_update() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut ws = server.ws().await;

    let p = api
        .create_project(&CreateProject {
            name: Some("  Alpha  ".into()),
            working_dir: Some("/projects/alpha".into()),
            description: Some("first".into()),
            machine_id: None,
        })
        .await
        .unwrap();
    assert!(p.id.starts_with("proj_"), "{}", p.id);
    assert_eq!(p.name, "Alpha", "name is trimmed on create");
    assert_eq!(p.working_dir, "/projects/alpha");
    assert_eq!(p.description, "first");
    assert_eq!(p.created_at, p.updated_at);
    let f = ws.expect_events(&["project:created"]).await;
    assert_eq!(f[0]["data"], to_json(&p), "frame carries the project");
    assert_eq!(f[0]["projectId"], json!(null));
    assert_eq!(f[0]["seq"], 1, "first event of the global scope");

    // Defaults for the optional fields.
    let q = api.create_project(&named("Beta")).await.unwrap();
    assert_eq!((q.working_dir.as_str(), q.description.as_str()), ("", ""));
    let f = ws.expect_events(&["project:created"]).await;
    assert_eq!(f[0]["seq"], 2);

    assert_eq!(
        api.list_projects().await.unwrap(),
        vec![p.clone(), q.clone()]
    );
    assert_eq!(api.get_project(&p.id).await.unwrap(), p);

    let updated = api
        .update_project(
            &p.id,
            &UpdateProject {
                name: Some("Alpha 2".into()),
                description: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "Alpha 2");
    assert_eq!(updated.description, "renamed");
    assert_eq!(
        updated.working_dir, "/projects/alpha",
        "untouched field kept"
    );
    assert_eq!(updated.created_at, p.created_at);
    assert!(updated.updated_at >= p.updated_at);
    let f = ws.expect_events(&["project:updated"]).await;
    assert_eq!(f[0]["data"], to_json(&updated));
    assert_eq!(f[0]["seq"], 3);
    assert_eq!(api.get_project(&p.id).await.unwrap(), updated);

    // Keys other than name/workingDir/description are ignored (upstream stored the raw body,
    // contract §7.4).
    let raw = server
        .api()
        .raw(
            Method::PUT,
            &format!("/api/projects/{}", p.id),
            Some(&json!({ "id": "proj_other", "createdAt": 1, "extra": true })),
        )
        .await
        .unwrap();
    assert_eq!(raw.status.as_u16(), 200);
    assert_eq!(raw.body["id"], p.id.as_str());
    assert_eq!(raw.body["createdAt"], p.created_at);
    assert!(raw.body.get("extra").is_none(), "{}", raw.body);
    ws.expect_events(&["project:updated"]).await;

    // An empty PUT still bumps updatedAt and emits.
    let same = api
        .update_project(&p.id, &UpdateProject::default())
        .await
        .unwrap();
    assert_eq!(same.name, "Alpha 2");
    ws.expect_events(&["project:updated"]).await;
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_change_nothing() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = api.create_project(&named("Alpha")).await.unwrap();
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    let e = api_err(
        api.create_project(&CreateProject::default()).await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(e.message, "Project name is required");
    api_err(
        api.create_project(&named("   ")).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.update_project(
            &p.id,
            &UpdateProject {
                name: Some(" ".into()),
                ..Default::default()
            },
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    let e = api_err(api.get_project("proj_nope").await, 404, "NOT_FOUND");
    assert_eq!(e.message, "Project with id 'proj_nope' not found");
    api_err(
        api.update_project("proj_nope", &UpdateProject::default())
            .await,
        404,
        "NOT_FOUND",
    );
    api_err(api.delete_project("proj_nope").await, 404, "NOT_FOUND");

    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
    // The next event continues the global sequence: nothing was emitted in between.
    api.create_project(&named("Gamma")).await.unwrap();
    let f = ws.expect_events(&["project:created"]).await;
    assert_eq!(f[0]["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_only_when_empty() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = api.create_project(&named("Alpha")).await.unwrap();
    let task = api
        .create_task(&CreateTask {
            project_id: Some(p.id.clone()),
            title: Some("t".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ws = server.ws().await;

    let e = api_err(api.delete_project(&p.id).await, 422, "BUSINESS_RULE_ERROR");
    assert_eq!(e.message, "Cannot delete project with existing tasks");
    ws.assert_quiet().await;

    api.delete_task(&task.id).await.unwrap();
    ws.expect_events(&["task:deleted"]).await;
    let s = api
        .create_session(&CreateSession {
            project_id: Some(p.id.clone()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap();
    ws.expect_events(&["session:created"]).await;
    let e = api_err(api.delete_project(&p.id).await, 422, "BUSINESS_RULE_ERROR");
    assert_eq!(e.message, "Cannot delete project with existing sessions");
    ws.assert_quiet().await;

    api.delete_session(&s.id).await.unwrap();
    ws.expect_events(&["session:deleted"]).await;
    let d = api.delete_project(&p.id).await.unwrap();
    assert!(d.success);
    assert_eq!(d.id, p.id);
    let f = ws.expect_events(&["project:deleted"]).await;
    assert_eq!(f[0]["data"], json!({ "id": p.id }));
    assert_eq!(f[0]["projectId"], json!(null));
    assert_eq!(f[0]["seq"], 2, "project:created was 1 (before connecting)");
    api_err(api.get_project(&p.id).await, 404, "NOT_FOUND");
    assert!(api.list_projects().await.unwrap().is_empty());
    ws.assert_quiet().await;
}
