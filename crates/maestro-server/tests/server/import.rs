//! `maestro import`: an upstream data directory (contract §5.1 layout, legacy files and a
//! corrupt one included) is reproduced through the API; a second import changes nothing.

use crate::common;

use std::path::Path;

use common::TestServer;
use serde_json::{Value, json};

fn write(dir: &Path, rel: &str, v: &Value) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// An upstream `DATA_DIR` as upstream leaves it on disk.
fn upstream_dir(dir: &Path) {
    let p = "proj_1700000000000_aaaaaaaaa";
    write(
        dir,
        &format!("projects/{p}.json"),
        &json!({
            "id": p, "name": "Imported", "workingDir": "/src/app", "description": "from upstream",
            "createdAt": 1_700_000_000_000i64, "updatedAt": 1_700_000_000_500i64, "customKey": 1
        }),
    );
    write(
        dir,
        &format!("tasks/{p}/task_1.json"),
        &json!({
            "id": "task_1", "projectId": p, "parentId": null, "title": "Root", "description": "",
            "status": "in_progress", "priority": "high", "createdAt": 1_700_000_001_000i64,
            "updatedAt": 1_700_000_001_000i64, "startedAt": 1_700_000_001_000i64, "completedAt": null,
            "initialPrompt": "", "sessionIds": ["sess_1"], "skillIds": [], "agentIds": [],
            "dependencies": [], "referenceTaskIds": [], "taskSessionStatuses": {"sess_1": "working"}
        }),
    );
    // Legacy flat layout with the old single `sessionStatus`.
    write(
        dir,
        "tasks/task_2.json",
        &json!({
            "id": "task_2", "projectId": p, "parentId": "task_1", "title": "Child",
            "status": "todo", "priority": "low", "createdAt": 1_700_000_002_000i64,
            "updatedAt": 1_700_000_002_000i64, "sessionIds": ["sess_1"], "sessionStatus": "blocked"
        }),
    );
    // A team-member task, which upstream deletes at every start.
    write(
        dir,
        &format!("tasks/{p}/task_tm.json"),
        &json!({
            "id": "task_tm", "projectId": p, "title": "member", "taskType": "team-member",
            "status": "todo", "priority": "medium", "createdAt": 1, "updatedAt": 1
        }),
    );
    // Corrupt.
    std::fs::write(
        dir.join(format!("tasks/{p}/task_bad.json")),
        b"{\"id\": \"task_bad\", ",
    )
    .unwrap();
    // Legacy session: `taskId`, no name, a provider key in env, a `strategy`.
    write(
        dir,
        "sessions/sess_1.json",
        &json!({
            "id": "sess_1", "projectId": p, "taskId": "task_1", "status": "working",
            "startedAt": 1_700_000_003_000i64, "lastActivity": 1_700_000_004_000i64,
            "completedAt": null, "hostname": "mac", "platform": "darwin", "strategy": "simple",
            "env": {"ANTHROPIC_API_KEY": "sk-secret", "MAESTRO_MODE": "execute"},
            "events": [], "docs": [],
            "timeline": [{"id": "evt_1", "type": "session_started", "timestamp": 1_700_000_003_000i64, "message": "Session created"}]
        }),
    );
    write(
        dir,
        "mail/mail_1.json",
        &json!({
            "id": "mail_1", "projectId": p, "fromSessionId": "sess_x", "toSessionId": "sess_1",
            "replyToMailId": null, "type": "directive", "subject": "do it", "body": {"details": "now"},
            "createdAt": 1_700_000_005_000i64
        }),
    );
    write(
        dir,
        &format!("ordering/task/{p}.json"),
        &json!({
            "projectId": p, "entityType": "task", "orderedIds": ["task_2", "task_1"], "updatedAt": 1_700_000_006_000i64
        }),
    );
    write(
        dir,
        &format!("team-members/{p}/tm_1700000007000_bbbbbbbbb.json"),
        &json!({
            "id": "tm_1700000007000_bbbbbbbbb", "projectId": p, "name": "Rusty", "role": "Porter",
            "identity": "", "avatar": "R", "model": "opus", "mode": "execute", "skillIds": [],
            "isDefault": false, "status": "active",
            "createdAt": "2023-11-14T22:13:27.000Z", "updatedAt": "2023-11-14T22:13:27.000Z"
        }),
    );
    write(
        dir,
        &format!("team-members/{p}/tm_{p}_coordinator.override.json"),
        &json!({
            "model": "opus", "projectId": p, "updatedAt": "2023-11-15T00:00:00.000Z"
        }),
    );
    std::fs::create_dir_all(dir.join("modals")).unwrap();
    std::fs::write(dir.join("modals/m.html"), b"<p>ignored</p>").unwrap();
}

async fn import(server_dir: &Path, upstream: &Path) -> maestro_server::import::ImportReport {
    let config = common::config_for(server_dir).expand_paths();
    let domain = maestro_server::open(&config, "http://localhost:0".into()).unwrap();
    let report = maestro_server::import::import_upstream(&domain, upstream)
        .await
        .unwrap();
    domain.store.close().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_every_entity_kind_and_is_idempotent() {
    let upstream = tempfile::tempdir().unwrap();
    upstream_dir(upstream.path());
    let server_dir = tempfile::tempdir().unwrap();

    let report = import(server_dir.path(), upstream.path()).await;
    assert_eq!(report.imported["projects"], 1);
    assert_eq!(report.imported["tasks"], 2);
    assert_eq!(report.imported["sessions"], 1);
    assert_eq!(report.imported["mail"], 1);
    assert_eq!(report.imported["orderings"], 1);
    assert_eq!(report.imported["teamMembers"], 2);
    assert_eq!(report.migrated_away, 1);
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(report.skipped[0].path.ends_with("task_bad.json"));

    let server = TestServer::start_in(server_dir.path()).await;
    let c = server.api();
    let p = "proj_1700000000000_aaaaaaaaa";
    let project = c.get_project(p).await.unwrap();
    assert_eq!(project.working_dir, "/src/app");
    let tasks = c
        .list_tasks(&maestro_client::TaskQuery {
            project_id: Some(p.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["task_1", "task_2"]
    );
    assert_eq!(tasks[1].task_session_statuses["sess_1"], "blocked");
    assert_eq!(c.task_children("task_1").await.unwrap().len(), 1);
    let s = c.get_session("sess_1").await.unwrap();
    assert_eq!(s.task_ids, ["task_1"]);
    assert_eq!(s.name, "Session sess_1");
    assert!(!s.env.contains_key("ANTHROPIC_API_KEY"));
    assert_eq!(s.env["MAESTRO_MODE"], "execute");
    let inbox = c.inbox("sess_1", &[("projectId", p)]).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].body["details"], "now");
    let ordering = c
        .raw(
            reqwest::Method::GET,
            &format!("/api/ordering/task/{p}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(ordering.body["orderedIds"], json!(["task_2", "task_1"]));
    let members = c.list_team_members(p).await.unwrap();
    assert_eq!(members.len(), 6);
    let coordinator = members
        .iter()
        .find(|m| m.id == format!("tm_{p}_coordinator"))
        .unwrap();
    assert_eq!(coordinator.model.as_deref(), Some("opus"));
    assert!(coordinator.is_default);
    assert_eq!(members[5].name, "Rusty");
    let before = common::snapshot(c).await;
    let dir = server.stop().await;
    drop(dir);

    // Again: same content, nothing duplicated.
    let report = import(server_dir.path(), upstream.path()).await;
    assert_eq!(report.imported["tasks"], 2);
    let server = TestServer::start_in(server_dir.path()).await;
    assert_eq!(common::snapshot(server.api()).await, before);
    let inbox = server
        .api()
        .inbox("sess_1", &[("projectId", p)])
        .await
        .unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].seq, 1, "mail keeps its seq across imports");
}
