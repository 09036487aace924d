//! The OpenAPI description: committed copy up to date, every documented route served, every
//! upstream route documented.
//!
//! Regenerate the committed copy with `cargo xtask openapi`.

use crate::common;

use std::path::PathBuf;

use common::TestServer;
use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

/// The spec as committed: pretty JSON with a generated-by marker.
fn generated() -> String {
    let mut spec: Value = serde_json::from_str(
        &maestro_server::http::openapi()
            .to_json()
            .expect("spec serialises"),
    )
    .unwrap();
    spec.as_object_mut().unwrap().insert(
        "x-generated-by".into(),
        Value::String("cargo xtask openapi; do not edit by hand".into()),
    );
    serde_json::to_string_pretty(&spec).unwrap() + "\n"
}

#[test]
fn committed_spec_is_up_to_date() {
    let fresh = generated();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path(), &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/openapi.json is out of date: run `cargo xtask openapi` and commit the result"
    );
}

fn documented_routes() -> Vec<(String, String)> {
    let spec: Value = serde_json::from_str(&generated()).unwrap();
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// Every documented route answers with something other than "no such route" / 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let server = TestServer::start().await;
    let routes = documented_routes();
    for (method, path) in routes {
        // Fill path parameters with a well-formed id that names nothing.
        let concrete: String = path
            .split('/')
            .map(|seg| {
                if seg == "{entity_type}" {
                    "task".to_owned()
                } else if seg == "{mode}" {
                    "execute".to_owned()
                } else if seg.starts_with('{') {
                    "x_unknown".to_owned()
                } else {
                    seg.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if concrete.starts_with("/api/mail/wait") {
            continue; // a long-poll; served, see the mail tests
        }
        let resp = server
            .raw(&method, &concrete, Some("application/json"), "{}")
            .await;
        assert_ne!(
            resp.status, 405,
            "{method} {path} is documented but not routed"
        );
        if resp.status == 404 {
            let body = resp.json();
            assert!(
                !body["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no route"),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

/// Every route of the upstream API (contract §2) is documented (and so served).
#[test]
fn every_upstream_route_is_documented() {
    let upstream = [
        "GET /health",
        "GET /ws-status",
        "GET /api/projects",
        "POST /api/projects",
        "GET /api/projects/{id}",
        "PUT /api/projects/{id}",
        "DELETE /api/projects/{id}",
        "GET /api/tasks",
        "POST /api/tasks",
        "GET /api/tasks/{id}",
        "PATCH /api/tasks/{id}",
        "DELETE /api/tasks/{id}",
        "GET /api/tasks/{id}/children",
        "POST /api/tasks/{id}/timeline",
        "GET /api/tasks/{id}/docs",
        "POST /api/sessions",
        "GET /api/sessions",
        "GET /api/sessions/{id}",
        "PATCH /api/sessions/{id}",
        "DELETE /api/sessions/{id}",
        "POST /api/sessions/{id}/events",
        "POST /api/sessions/{id}/timeline",
        "POST /api/sessions/{id}/docs",
        "GET /api/sessions/{id}/docs",
        "POST /api/sessions/{id}/tasks/{task_id}",
        "DELETE /api/sessions/{id}/tasks/{task_id}",
        "POST /api/sessions/{id}/modal",
        "POST /api/sessions/{id}/modal/{modal_id}/actions",
        "POST /api/sessions/{id}/modal/{modal_id}/close",
        "POST /api/sessions/spawn",
        "POST /api/mail",
        "GET /api/mail/inbox/{id}",
        "GET /api/mail/wait/{id}",
        "GET /api/mail/{id}",
        "DELETE /api/mail/{id}",
        "GET /api/team-members",
        "POST /api/team-members",
        "GET /api/team-members/{id}",
        "PATCH /api/team-members/{id}",
        "DELETE /api/team-members/{id}",
        "POST /api/team-members/{id}/archive",
        "POST /api/team-members/{id}/unarchive",
        "POST /api/team-members/{id}/reset",
        "GET /api/ordering/{entity_type}/{project_id}",
        "PUT /api/ordering/{entity_type}/{project_id}",
        "GET /api/skills",
        "GET /api/skills/{id}",
        "GET /api/skills/mode/{mode}",
        "POST /api/skills/{id}/reload",
        "GET /api/workflow-templates",
        "GET /api/workflow-templates/{id}",
    ];
    assert_eq!(upstream.len(), 51, "upstream has 51 endpoints");
    let documented: Vec<String> = documented_routes()
        .into_iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    for route in upstream {
        assert!(
            documented.iter().any(|d| d == route),
            "{route} is not documented"
        );
    }
}
