//! The read-mostly catalog: `/api/ordering`, `/api/skills` (read from `SKILLS_DIR`, which
//! `Config::for_dir` puts at `<dir>/skills`) and `/api/workflow-templates`.

use crate::common;

use std::path::Path;

use axum::http::Method;
use common::{TestServer, assert_error_body, keys, set};
use maestro_client::RawResponse;
use serde_json::{Value, json};

async fn call(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> RawResponse {
    server
        .api()
        .raw(method, path, body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn get(server: &TestServer, path: &str) -> RawResponse {
    call(server, Method::GET, path, None).await
}

#[track_caller]
fn ok(res: &RawResponse) -> &Value {
    assert_eq!(res.status, 200, "{}", res.body);
    &res.body
}

#[track_caller]
fn err(res: &RawResponse, status: u16, code: &str) {
    assert_eq!(res.status.as_u16(), status, "{}", res.body);
    assert_error_body(&res.body, status, code);
}

// --- ordering ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_defaults_saves_and_survives_restart() {
    let server = TestServer::start().await;
    let mut ws = server.ws().await;

    let empty = get(&server, "/api/ordering/task/proj_1").await;
    assert_eq!(
        *ok(&empty),
        json!({"projectId": "proj_1", "entityType": "task", "orderedIds": [], "updatedAt": 0})
    );

    let ids = json!(["task_b", "task_a", "task-c"]);
    let put = call(
        &server,
        Method::PUT,
        "/api/ordering/task/proj_1",
        Some(json!({"orderedIds": ids, "ignored": true})),
    )
    .await;
    let saved = ok(&put).clone();
    assert_eq!(
        keys(&saved),
        set(&["projectId", "entityType", "orderedIds", "updatedAt"])
    );
    assert_eq!(saved["projectId"], "proj_1");
    assert_eq!(saved["entityType"], "task");
    assert_eq!(saved["orderedIds"], ids);
    assert!(saved["updatedAt"].as_i64().unwrap() > 0, "{saved}");
    ws.assert_quiet().await; // orderings emit no events, as upstream

    assert_eq!(*ok(&get(&server, "/api/ordering/task/proj_1").await), saved);
    // Scoped by entity type and project.
    assert_eq!(
        ok(&get(&server, "/api/ordering/session/proj_1").await)["orderedIds"],
        json!([])
    );
    assert_eq!(
        ok(&get(&server, "/api/ordering/task/proj_2").await)["updatedAt"],
        0
    );

    // A second PUT replaces the list; an empty list is allowed.
    let cleared = call(
        &server,
        Method::PUT,
        "/api/ordering/session/proj_1",
        Some(json!({"orderedIds": []})),
    )
    .await;
    assert_eq!(ok(&cleared)["orderedIds"], json!([]));
    assert!(ok(&cleared)["updatedAt"].as_i64().unwrap() > 0);

    let server = server.restart().await;
    assert_eq!(
        *ok(&get(&server, "/api/ordering/task/proj_1").await),
        saved,
        "orderings are durable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_rejects_bad_input() {
    let server = TestServer::start().await;
    let put = |path: &'static str, body: Value| {
        let server = &server;
        async move { call(server, Method::PUT, path, Some(body)).await }
    };
    let good = json!({"orderedIds": ["a"]});

    for path in [
        "/api/ordering/widget/proj_1",
        "/api/ordering/Task/proj_1",
        "/api/ordering/task/bad.id",
        "/api/ordering/task/..%2f..%2fetc",
    ] {
        err(&get(&server, path).await, 400, "VALIDATION_ERROR");
        err(
            &call(&server, Method::PUT, path, Some(good.clone())).await,
            400,
            "VALIDATION_ERROR",
        );
    }

    for body in [
        json!({}),
        json!({"orderedIds": null}),
        json!({"orderedIds": "task_1"}),
        json!({"orderedIds": {"0": "task_1"}}),
        json!({"orderedIds": [1, 2]}),
        json!({"orderedIds": ["ok", "../x"]}),
        json!({"orderedIds": [""]}),
    ] {
        let res = put("/api/ordering/task/proj_1", body.clone()).await;
        assert_eq!(res.status, 400, "{body} -> {}", res.body);
        assert_error_body(&res.body, 400, "VALIDATION_ERROR");
    }
    let missing = put("/api/ordering/task/proj_1", json!({})).await;
    assert!(
        missing.body["message"]
            .as_str()
            .unwrap()
            .contains("orderedIds"),
        "{}",
        missing.body
    );

    // Nothing was saved by the failed requests.
    assert_eq!(
        ok(&get(&server, "/api/ordering/task/proj_1").await)["updatedAt"],
        0
    );
}

// --- skills -----------------------------------------------------------------------------

fn write_skill(skills: &Path, dir: &str, text: &str) {
    std::fs::create_dir_all(skills.join(dir)).unwrap();
    std::fs::write(skills.join(dir).join("SKILL.md"), text).unwrap();
}

/// `alpha` (custom, full front matter), `conductor` (orchestrator), `broken` (unclosed front
/// matter), `.x` (hidden), `not.an-id` (valid skill, but its name is not a valid id), plus a
/// directory without `SKILL.md` and a stray file.
fn populate(skills: &Path) {
    write_skill(
        skills,
        "alpha",
        "---\nname: Alpha\ndescription: Does alpha things\nversion: 1.2.0\n\
         triggers: [alpha, a]\nscope: project\noutput-format: markdown\nlanguage: rust\n\
         framework: axum\ntags: [one, two]\ncategory: dev\nlicense: MIT\n---\n\n# Alpha\nStep one.\n",
    );
    write_skill(
        skills,
        "conductor",
        "---\nname: Conductor\ndescription: Leads the band\nrole: orchestrator\n---\nCoordinate.\n",
    );
    write_skill(
        skills,
        "broken",
        "---\nname: Broken\ndescription: never closed\n",
    );
    write_skill(
        skills,
        ".x",
        "---\nname: Hidden\ndescription: not listed\n---\n",
    );
    write_skill(
        skills,
        "not.an-id",
        "---\nname: Dotted\ndescription: a name no id can address\n---\n",
    );
    std::fs::create_dir_all(skills.join("empty-dir")).unwrap();
    std::fs::write(skills.join("README.md"), "not a skill").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_list_get_mode_reload() {
    let server = TestServer::start().await;
    let skills = server.dir().join("skills");
    populate(&skills);

    // List: sorted by id; hidden, broken and non-skill entries skipped.
    let list = ok(&get(&server, "/api/skills").await).clone();
    let ids: Vec<_> = list.as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&json!("alpha"), &json!("conductor")]);
    assert_eq!(
        list[0],
        json!({
            "id": "alpha", "name": "Alpha", "description": "Does alpha things",
            "version": "1.2.0", "triggers": ["alpha", "a"], "scope": "project",
            "outputFormat": "markdown", "language": "rust", "framework": "axum",
            "tags": ["one", "two"], "category": "dev", "license": "MIT",
            "content": "# Alpha\nStep one.", "hasReferences": false, "referenceCount": 0
        })
    );
    assert_eq!(
        list[1],
        json!({
            "id": "conductor", "name": "Conductor", "description": "Leads the band",
            "version": "1.0.0", "role": "orchestrator", "content": "Coordinate.",
            "hasReferences": false, "referenceCount": 0
        })
    );

    // One skill.
    assert_eq!(
        *ok(&get(&server, "/api/skills/alpha").await),
        json!({
            "id": "alpha", "name": "Alpha", "description": "Does alpha things",
            "type": "custom", "version": "1.2.0", "instructions": "# Alpha\nStep one."
        })
    );
    assert_eq!(
        ok(&get(&server, "/api/skills/conductor").await)["type"],
        "mode"
    );

    // By mode.
    assert_eq!(
        *ok(&get(&server, "/api/skills/mode/coordinate").await),
        json!([{
            "id": "conductor", "name": "Conductor", "description": "Leads the band",
            "type": "mode", "version": "1.0.0"
        }])
    );
    assert_eq!(
        *ok(&get(&server, "/api/skills/mode/execute").await),
        json!([{
            "id": "alpha", "name": "Alpha", "description": "Does alpha things",
            "type": "custom", "version": "1.2.0"
        }])
    );
    err(
        &get(&server, "/api/skills/mode/review").await,
        400,
        "VALIDATION_ERROR",
    );

    // Reload.
    let reloaded = call(&server, Method::POST, "/api/skills/alpha/reload", None).await;
    assert_eq!(
        *ok(&reloaded),
        json!({
            "id": "alpha", "name": "Alpha", "description": "Does alpha things",
            "type": "custom", "version": "1.2.0", "reloaded": true
        })
    );

    // No cache: an edit on disk is visible on the next request.
    write_skill(
        &skills,
        "alpha",
        "---\nname: Alpha 2\ndescription: Changed\nrole: orchestrator\n---\nNew.\n",
    );
    let after = ok(&call(&server, Method::POST, "/api/skills/alpha/reload", None).await).clone();
    assert_eq!(after["name"], "Alpha 2");
    assert_eq!(after["type"], "mode");
    assert_eq!(
        ok(&get(&server, "/api/skills/alpha").await)["instructions"],
        "New."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_not_found_and_traversal() {
    let server = TestServer::start().await;
    let skills = server.dir().join("skills");
    populate(&skills);
    // A SKILL.md outside SKILLS_DIR that a traversal would reach.
    write_skill(
        server.dir(),
        "outside",
        "---\nname: Outside\ndescription: must not be served\n---\n",
    );

    for id in ["nope", "broken", "empty-dir", "README"] {
        let res = get(&server, &format!("/api/skills/{id}")).await;
        err(&res, 404, "NOT_FOUND");
        assert_eq!(
            res.body["message"],
            format!("Skill with id '{id}' not found")
        );
        err(
            &call(
                &server,
                Method::POST,
                &format!("/api/skills/{id}/reload"),
                None,
            )
            .await,
            404,
            "NOT_FOUND",
        );
    }

    // Through the typed client's raw call ...
    err(
        &get(&server, "/api/skills/..%2f..%2fetc").await,
        400,
        "VALIDATION_ERROR",
    );
    // ... and byte for byte, so no client-side URL normalisation hides a dot segment.
    for id in [
        "..%2f..%2fetc",
        "..%2F..%2Foutside",
        "..%5coutside",
        ".x",
        "%2e%2e",
        "a%20b",
    ] {
        for (method, path) in [
            ("GET", format!("/api/skills/{id}")),
            ("POST", format!("/api/skills/{id}/reload")),
        ] {
            let res = server.raw(method, &path, None, Vec::new()).await;
            assert_eq!(res.status, 400, "{method} {path}: {:?}", res.json());
            assert_error_body(&res.json(), 400, "VALIDATION_ERROR");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_dir_missing_means_no_skills() {
    let server = TestServer::start().await;
    assert!(!server.dir().join("skills").exists());
    assert_eq!(*ok(&get(&server, "/api/skills").await), json!([]));
    assert_eq!(
        *ok(&get(&server, "/api/skills/mode/execute").await),
        json!([])
    );
    err(&get(&server, "/api/skills/alpha").await, 404, "NOT_FOUND");
}

// --- workflow templates -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_templates_list_filter_get() {
    let server = TestServer::start().await;
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let all = ok(&get(&server, "/api/workflow-templates").await).clone();
    assert_eq!(
        ids(&all),
        [
            "execute-simple",
            "execute-tree",
            "execute-recruit",
            "coordinate-default",
            "coordinate-batching",
            "coordinate-dag"
        ]
    );
    for t in all.as_array().unwrap() {
        assert_eq!(
            keys(t),
            set(&["id", "name", "description", "mode", "phases", "builtIn"])
        );
        assert_eq!(t["builtIn"], true);
        for phase in t["phases"].as_array().unwrap() {
            assert_eq!(keys(phase), set(&["name", "instruction"]));
            assert!(
                phase["instruction"].as_str().unwrap().contains("maestro "),
                "{phase}"
            );
        }
    }

    let execute = ok(&get(&server, "/api/workflow-templates?mode=execute").await).clone();
    assert_eq!(
        ids(&execute),
        ["execute-simple", "execute-tree", "execute-recruit"]
    );
    let coordinate = ok(&get(&server, "/api/workflow-templates?mode=coordinate").await).clone();
    assert_eq!(
        ids(&coordinate),
        [
            "coordinate-default",
            "coordinate-batching",
            "coordinate-dag"
        ]
    );
    assert!(
        coordinate
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["mode"] == "coordinate")
    );
    // Any other mode is ignored.
    assert_eq!(
        *ok(&get(&server, "/api/workflow-templates?mode=bogus").await),
        all
    );

    let dag = ok(&get(&server, "/api/workflow-templates/coordinate-dag").await).clone();
    assert_eq!(dag, all[5]);
    assert_eq!(dag["name"], "Coordinate DAG");
    assert_eq!(dag["mode"], "coordinate");
    let phases: Vec<_> = dag["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["analyze", "build_dag", "execute_wave", "verify", "complete"]
    );

    // Upstream's recruiter default points here; upstream answered 404.
    let recruit = ok(&get(&server, "/api/workflow-templates/execute-recruit").await).clone();
    assert_eq!(recruit["mode"], "execute");

    let missing = get(&server, "/api/workflow-templates/nope").await;
    err(&missing, 404, "NOT_FOUND");
    assert_eq!(missing.body["message"], "Template with id 'nope' not found");
}
