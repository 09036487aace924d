//! `/api/tasks`: create/list/get, children, the two PATCH modes (user and session), delete
//! cascade, per-task timeline and docs — with the frames of each mutation, in order
//! (contract §2.3, §3 "Emission sequences").

use crate::common;

use std::collections::BTreeMap;

use common::{TestServer, WsClient, api_err, snapshot, to_json};
use maestro_client::{Client, TaskQuery};
use maestro_protocol::{
    AddDoc, CreateProject, CreateSession, CreateTask, Project, Session, Task, TaskTimelineRequest,
    UpdateTask,
};
use serde_json::json;

async fn project(api: &Client, name: &str) -> Project {
    api.create_project(&CreateProject {
        name: Some(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn task(api: &Client, project: &str, title: &str, parent: Option<&str>) -> Task {
    api.create_task(&CreateTask {
        project_id: Some(project.into()),
        title: Some(title.into()),
        parent_id: parent.map(Into::into),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn session(api: &Client, project: &str, tasks: &[&str], name: &str) -> Session {
    api.create_session(&CreateSession {
        project_id: Some(project.into()),
        task_ids: Some(tasks.iter().map(|t| (*t).to_owned()).collect()),
        name: Some(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn status(s: &str) -> UpdateTask {
    UpdateTask {
        status: Some(s.into()),
        ..Default::default()
    }
}

fn report(session: &str, status: &str) -> UpdateTask {
    UpdateTask {
        update_source: Some("session".into()),
        session_id: Some(session.into()),
        session_status: Some(status.into()),
        ..Default::default()
    }
}

/// A user-mode PATCH: asserts the frames (first is always `task:updated` with the new task).
async fn patch(
    api: &Client,
    ws: &mut WsClient,
    id: &str,
    req: &UpdateTask,
    events: &[&str],
) -> Task {
    let t = api.update_task(id, req).await.unwrap();
    let frames = ws.expect_events(events).await;
    let updated = frames
        .iter()
        .find(|f| f["event"] == "task:updated" && f["data"]["id"] == id)
        .expect("a task:updated frame for the task");
    assert_eq!(
        updated["data"],
        to_json(&t),
        "task:updated carries the task"
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_get_children() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let other = project(&api, "Other").await;
    let mut ws = server.ws().await;

    let a = api
        .create_task(&CreateTask {
            project_id: Some(p.id.clone()),
            title: Some("  First task ".into()),
            description: Some("do it".into()),
            priority: Some("high".into()),
            initial_prompt: Some("go".into()),
            skill_ids: Some(vec!["skill-a".into()]),
            reference_task_ids: Some(vec!["task_ref".into()]),
            team_member_id: Some("tm_1".into()),
            team_member_ids: Some(vec!["tm_1".into(), "tm_2".into()]),
            parent_id: None,
        })
        .await
        .unwrap();
    assert!(a.id.starts_with("task_"));
    assert_eq!(a.project_id, p.id);
    assert_eq!(a.title, "First task", "title is trimmed");
    assert_eq!(a.status, "todo");
    assert_eq!(a.priority, "high");
    assert_eq!(a.parent_id, None);
    assert_eq!((a.started_at, a.completed_at), (None, None));
    assert_eq!(a.initial_prompt, "go");
    assert_eq!(a.skill_ids, ["skill-a"]);
    assert_eq!(a.reference_task_ids, ["task_ref"]);
    assert_eq!(a.team_member_id.as_deref(), Some("tm_1"));
    assert_eq!(a.team_member_ids, Some(vec!["tm_1".into(), "tm_2".into()]));
    assert!(a.session_ids.is_empty() && a.agent_ids.is_empty() && a.dependencies.is_empty());
    let raw = to_json(&a);
    assert!(
        raw.get("taskSessionStatuses").is_none(),
        "absent until set: {raw}"
    );
    assert!(raw.get("pinned").is_none(), "absent until set: {raw}");
    let f = ws.expect_events(&["task:created"]).await;
    assert_eq!(f[0]["data"], raw);
    assert_eq!(f[0]["projectId"], p.id.as_str());
    assert_eq!(f[0]["seq"], 1, "first event of the project's scope");

    let b = task(&api, &p.id, "Child", Some(&a.id)).await;
    assert_eq!(b.parent_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(b.priority, "medium", "default priority");
    assert_eq!(b.description, "");
    let c = task(&api, &p.id, "Grandchild", Some(&b.id)).await;
    let d = task(&api, &p.id, "Second child", Some(&a.id)).await;
    let x = task(&api, &other.id, "Elsewhere", None).await;
    let f = ws
        .expect_events(&[
            "task:created",
            "task:created",
            "task:created",
            "task:created",
        ])
        .await;
    assert_eq!(f[3]["projectId"], other.id.as_str());
    assert_eq!(f[3]["seq"], 1, "each project has its own sequence");
    assert_eq!(f[2]["seq"], 4);

    assert_eq!(api.get_task(&a.id).await.unwrap(), a);
    assert_eq!(
        api.task_children(&a.id).await.unwrap(),
        vec![b.clone(), d.clone()]
    );
    assert_eq!(api.task_children(&b.id).await.unwrap(), vec![c.clone()]);
    assert!(api.task_children(&c.id).await.unwrap().is_empty());
    api_err(api.task_children("task_nope").await, 404, "NOT_FOUND");

    let q = |project: Option<&str>, status: Option<&str>, parent: Option<&str>| TaskQuery {
        project_id: project.map(Into::into),
        status: status.map(Into::into),
        parent_id: parent.map(Into::into),
    };
    let all = api.list_tasks(&q(None, None, None)).await.unwrap();
    assert_eq!(
        all,
        vec![a.clone(), b.clone(), c.clone(), d.clone(), x.clone()]
    );
    let in_p = api.list_tasks(&q(Some(&p.id), None, None)).await.unwrap();
    assert_eq!(in_p, vec![a.clone(), b.clone(), c.clone(), d.clone()]);
    let roots = api
        .list_tasks(&q(Some(&p.id), None, Some("null")))
        .await
        .unwrap();
    assert_eq!(roots, vec![a.clone()]);
    let under_a = api.list_tasks(&q(None, None, Some(&a.id))).await.unwrap();
    assert_eq!(under_a, vec![b.clone(), d.clone()]);
    api.update_task(&c.id, &status("blocked")).await.unwrap();
    ws.expect_events(&["task:updated", "notify:task_blocked"])
        .await;
    let blocked = api
        .list_tasks(&q(Some(&p.id), Some("blocked"), None))
        .await
        .unwrap();
    assert_eq!(blocked.iter().map(|t| &t.id).collect::<Vec<_>>(), [&c.id]);
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rejects_bad_input_without_side_effects() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let other = project(&api, "Other").await;
    let foreign = task(&api, &other.id, "foreign", None).await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    let create = |project: Option<&str>, title: Option<&str>| CreateTask {
        project_id: project.map(Into::into),
        title: title.map(Into::into),
        ..Default::default()
    };
    let e = api_err(
        api.create_task(&create(Some(&p.id), None)).await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(e.message, "Task title is required");
    api_err(
        api.create_task(&create(Some(&p.id), Some("   "))).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.create_task(&create(None, Some("x"))).await,
        400,
        "VALIDATION_ERROR",
    );
    let e = api_err(
        api.create_task(&create(Some("proj_nope"), Some("x"))).await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(e.message, "Project with id 'proj_nope' not found");
    let e = api_err(
        api.create_task(&CreateTask {
            parent_id: Some("task_nope".into()),
            ..create(Some(&p.id), Some("x"))
        })
        .await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(e.message, "Parent task with id 'task_nope' not found");
    api_err(
        api.create_task(&CreateTask {
            parent_id: Some(foreign.id.clone()),
            ..create(Some(&p.id), Some("x"))
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.create_task(&CreateTask {
            priority: Some("urgent".into()),
            ..create(Some(&p.id), Some("x"))
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.create_task(&create(Some("a.b"), Some("x"))).await,
        400,
        "VALIDATION_ERROR",
    );

    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
    task(&api, &p.id, "ok", None).await;
    let f = ws.expect_events(&["task:created"]).await;
    assert_eq!(
        f[0]["seq"], 1,
        "no event was emitted in the project's scope"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_mode_patch() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T", None).await;
    let mut ws = server.ws().await;

    let t1 = patch(
        &api,
        &mut ws,
        &t.id,
        &status("in_progress"),
        &["task:updated"],
    )
    .await;
    assert_eq!(t1.status, "in_progress");
    let started = t1.started_at.expect("startedAt set on first in_progress");
    assert!(t1.updated_at >= t.updated_at);
    assert_eq!(t1.completed_at, None);

    // `notify:task_in_review` is emitted; upstream never bridged it to the WebSocket
    // (contract §7.12), Maestro does.
    patch(
        &api,
        &mut ws,
        &t.id,
        &status("in_review"),
        &["task:updated", "notify:task_in_review"],
    )
    .await;
    let done = patch(
        &api,
        &mut ws,
        &t.id,
        &status("completed"),
        &["task:updated", "notify:task_completed"],
    )
    .await;
    let completed = done
        .completed_at
        .expect("completedAt set on first completed");
    assert_eq!(done.started_at, Some(started));

    // Same status again: task:updated only (no status change, no notify).
    let again = patch(
        &api,
        &mut ws,
        &t.id,
        &status("completed"),
        &["task:updated"],
    )
    .await;
    assert_eq!(again.completed_at, Some(completed));

    patch(
        &api,
        &mut ws,
        &t.id,
        &status("blocked"),
        &["task:updated", "notify:task_blocked"],
    )
    .await;
    patch(
        &api,
        &mut ws,
        &t.id,
        &status("cancelled"),
        &["task:updated", "notify:task_failed"],
    )
    .await;
    // startedAt / completedAt are set once and never moved.
    let back = patch(
        &api,
        &mut ws,
        &t.id,
        &status("in_progress"),
        &["task:updated"],
    )
    .await;
    assert_eq!(back.started_at, Some(started));
    let back = patch(
        &api,
        &mut ws,
        &t.id,
        &status("completed"),
        &["task:updated", "notify:task_completed"],
    )
    .await;
    assert_eq!(back.completed_at, Some(completed));
    patch(&api, &mut ws, &t.id, &status("archived"), &["task:updated"]).await;
    patch(&api, &mut ws, &t.id, &status("todo"), &["task:updated"]).await;

    // Plain fields replace; arrays replace wholesale.
    let edited = patch(
        &api,
        &mut ws,
        &t.id,
        &UpdateTask {
            title: Some("  Renamed ".into()),
            description: Some("new description".into()),
            priority: Some("low".into()),
            pinned: Some(true),
            team_member_id: Some("tm_x".into()),
            team_member_ids: Some(vec!["tm_x".into()]),
            session_ids: Some(vec!["sess_manual".into()]),
            skill_ids: Some(vec!["s1".into(), "s2".into()]),
            agent_ids: Some(vec!["agent".into()]),
            reference_task_ids: Some(vec!["task_r".into()]),
            ..Default::default()
        },
        &["task:updated"],
    )
    .await;
    assert_eq!(edited.title, "Renamed");
    assert_eq!(edited.description, "new description");
    assert_eq!(edited.priority, "low");
    assert_eq!(edited.pinned, Some(true));
    assert_eq!(edited.team_member_id.as_deref(), Some("tm_x"));
    assert_eq!(edited.team_member_ids, Some(vec!["tm_x".into()]));
    assert_eq!(edited.session_ids, ["sess_manual"]);
    assert_eq!(edited.skill_ids, ["s1", "s2"]);
    assert_eq!(edited.agent_ids, ["agent"]);
    assert_eq!(edited.reference_task_ids, ["task_r"]);
    let edited = patch(
        &api,
        &mut ws,
        &t.id,
        &UpdateTask {
            skill_ids: Some(vec![]),
            ..Default::default()
        },
        &["task:updated"],
    )
    .await;
    assert!(edited.skill_ids.is_empty());
    assert_eq!(edited.title, "Renamed", "absent fields are kept");

    // In user mode the session-mode fields are dropped.
    let same = patch(
        &api,
        &mut ws,
        &t.id,
        &UpdateTask {
            session_id: Some("sess_x".into()),
            session_status: Some("working".into()),
            ..Default::default()
        },
        &["task:updated"],
    )
    .await;
    assert!(same.task_session_statuses.is_empty());
    assert!(same.updated_at >= edited.updated_at, "updatedAt bumped");

    // taskSessionStatuses merge key-wise; notify for changes to completed / failed.
    let merged = patch(
        &api,
        &mut ws,
        &t.id,
        &UpdateTask {
            task_session_statuses: Some(BTreeMap::from([
                ("sess_a".into(), "working".into()),
                ("sess_b".into(), "completed".into()),
            ])),
            ..Default::default()
        },
        &["task:updated", "notify:task_session_completed"],
    )
    .await;
    assert_eq!(merged.task_session_statuses.len(), 2);
    let f = patch(
        &api,
        &mut ws,
        &t.id,
        &UpdateTask {
            task_session_statuses: Some(BTreeMap::from([("sess_a".into(), "failed".into())])),
            ..Default::default()
        },
        &["task:updated", "notify:task_session_failed"],
    )
    .await;
    assert_eq!(
        f.task_session_statuses,
        BTreeMap::from([
            ("sess_a".into(), "failed".into()),
            ("sess_b".into(), "completed".into()),
        ]),
        "keys not mentioned are kept"
    );
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_mode_notify_payloads() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "Payloads", None).await;
    let mut ws = server.ws().await;

    api.update_task(&t.id, &status("completed")).await.unwrap();
    let f = ws
        .expect_events(&["task:updated", "notify:task_completed"])
        .await;
    assert_eq!(f[1]["data"], json!({ "taskId": t.id, "title": "Payloads" }));
    api.update_task(
        &t.id,
        &UpdateTask {
            task_session_statuses: Some(BTreeMap::from([("sess_1".into(), "completed".into())])),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let f = ws
        .expect_events(&["task:updated", "notify:task_session_completed"])
        .await;
    assert_eq!(
        f[1]["data"],
        json!({ "taskId": t.id, "sessionId": "sess_1", "title": "Payloads" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_mode_patch_rejects_bad_input() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T", None).await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    for (req, what) in [
        (
            UpdateTask {
                title: Some("  ".into()),
                ..Default::default()
            },
            "blank title",
        ),
        (status("nonsense"), "unknown status"),
        (status(""), "empty status"),
        (
            UpdateTask {
                priority: Some("urgent".into()),
                ..Default::default()
            },
            "unknown priority",
        ),
        (
            UpdateTask {
                task_session_statuses: Some(BTreeMap::from([("sess_a".into(), "done".into())])),
                ..Default::default()
            },
            "unknown taskSessionStatuses value",
        ),
        (
            UpdateTask {
                task_session_statuses: Some(BTreeMap::from([("a.b".into(), "working".into())])),
                ..Default::default()
            },
            "malformed session id key",
        ),
    ] {
        let res = api.update_task(&t.id, &req).await;
        assert_eq!(
            res.as_ref()
                .err()
                .and_then(|e| e.status())
                .map(|s| s.as_u16()),
            Some(400),
            "{what}: {res:?}"
        );
        api_err(res, 400, "VALIDATION_ERROR");
    }
    let e = api_err(
        api.update_task("task_nope", &status("completed")).await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(e.message, "Task with id 'task_nope' not found");
    api_err(
        api.update_task("a.b", &status("completed")).await,
        400,
        "VALIDATION_ERROR",
    );

    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
    api.update_task(&t.id, &status("in_progress"))
        .await
        .unwrap();
    let f = ws.expect_events(&["task:updated"]).await;
    assert_eq!(f[0]["seq"], 2, "only task:created came before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_patch() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T", None).await;
    let s = session(&api, &p.id, &[], "S").await;
    let s2 = session(&api, &p.id, &[&t.id], "S2").await;
    let mut ws = server.ws().await;

    // Not yet linked: the agent's report links the session first. Other fields (status,
    // title) are dropped in session mode.
    let r = api
        .update_task(
            &t.id,
            &UpdateTask {
                title: Some("ignored".into()),
                status: Some("completed".into()),
                ..report(&s.id, "working")
            },
        )
        .await
        .unwrap();
    let f = ws
        .expect_events(&["session:task_added", "task:session_added", "task:updated"])
        .await;
    assert_eq!(f[0]["data"], json!({ "sessionId": s.id, "taskId": t.id }));
    assert_eq!(f[1]["data"], json!({ "taskId": t.id, "sessionId": s.id }));
    assert_eq!(f[2]["data"], to_json(&r));
    assert_eq!(r.title, "T");
    assert_eq!(r.status, "todo");
    assert_eq!(r.completed_at, None);
    assert_eq!(
        r.task_session_statuses,
        BTreeMap::from([(s.id.clone(), "working".into())])
    );
    assert_eq!(r.session_ids, [s2.id.clone(), s.id.clone()]);
    let linked = api.get_session(&s.id).await.unwrap();
    assert_eq!(linked.task_ids, [t.id.as_str()]);
    let last = linked.timeline.last().unwrap();
    assert_eq!(last.kind, "task_started");
    assert_eq!(last.task_id.as_deref(), Some(t.id.as_str()));

    // Linked now: task:updated, plus the notify for completed / failed.
    let r = api
        .update_task(&t.id, &report(&s.id, "completed"))
        .await
        .unwrap();
    let f = ws
        .expect_events(&["task:updated", "notify:task_session_completed"])
        .await;
    assert_eq!(
        f[1]["data"],
        json!({ "taskId": t.id, "sessionId": s.id, "title": "T" })
    );
    assert_eq!(r.task_session_statuses[&s.id], "completed");

    // Another, already linked session: only its own key changes.
    let r = api
        .update_task(&t.id, &report(&s2.id, "blocked"))
        .await
        .unwrap();
    ws.expect_events(&["task:updated"]).await;
    assert_eq!(
        r.task_session_statuses,
        BTreeMap::from([
            (s.id.clone(), "completed".into()),
            (s2.id.clone(), "blocked".into()),
        ])
    );
    let r = api
        .update_task(&t.id, &report(&s2.id, "failed"))
        .await
        .unwrap();
    let f = ws
        .expect_events(&["task:updated", "notify:task_session_failed"])
        .await;
    assert_eq!(f[1]["data"]["sessionId"], s2.id.as_str());
    // Nothing changed: still task:updated (and updatedAt bumped), no notify.
    let again = api
        .update_task(&t.id, &report(&s2.id, "failed"))
        .await
        .unwrap();
    ws.expect_events(&["task:updated"]).await;
    assert!(again.updated_at >= r.updated_at);
    assert_eq!(again.task_session_statuses, r.task_session_statuses);
    for v in ["queued", "skipped"] {
        api.update_task(&t.id, &report(&s2.id, v)).await.unwrap();
        ws.expect_events(&["task:updated"]).await;
    }
    assert_eq!(
        api.get_session(&s2.id).await.unwrap().task_ids,
        [t.id.as_str()],
        "no second link for an already linked session"
    );
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_patch_rejects_bad_input() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let other = project(&api, "Other").await;
    let t = task(&api, &p.id, "T", None).await;
    let s = session(&api, &p.id, &[], "S").await;
    let foreign = session(&api, &other.id, &[], "Foreign").await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    let e = api_err(
        api.update_task(&t.id, &report("sess_nope", "working"))
            .await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(e.message, "Session with id 'sess_nope' not found");
    api_err(
        api.update_task(&t.id, &report(&s.id, "done")).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.update_task(
            &t.id,
            &UpdateTask {
                session_id: None,
                ..report(&s.id, "working")
            },
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.update_task(
            &t.id,
            &UpdateTask {
                session_status: None,
                ..report(&s.id, "working")
            },
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.update_task(&t.id, &report(&foreign.id, "working"))
            .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.update_task("task_nope", &report(&s.id, "working"))
            .await,
        404,
        "NOT_FOUND",
    );

    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
    api.update_task(&t.id, &report(&s.id, "working"))
        .await
        .unwrap();
    let f = ws
        .expect_events(&["session:task_added", "task:session_added", "task:updated"])
        .await;
    assert_eq!(
        f[0]["seq"], 3,
        "task:created and session:created came before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cascades_children_first() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let a = task(&api, &p.id, "A", None).await;
    let b = task(&api, &p.id, "B", Some(&a.id)).await;
    let c = task(&api, &p.id, "C", Some(&b.id)).await;
    let d = task(&api, &p.id, "D", Some(&a.id)).await;
    let keep = task(&api, &p.id, "Keep", None).await;
    let s = session(&api, &p.id, &[&b.id, &keep.id], "S").await;
    let mut ws = server.ws().await;

    let del = api.delete_task(&a.id).await.unwrap();
    assert!(del.success);
    assert_eq!(del.id, a.id);
    // One task:deleted per task, every child before its parent, the root last; then (Maestro,
    // contract §7.7) the sessions that referenced a deleted task drop it: session:updated.
    let f = ws
        .expect_events(&[
            "task:deleted",
            "task:deleted",
            "task:deleted",
            "task:deleted",
            "session:updated",
        ])
        .await;
    let order: Vec<&str> = f[..4]
        .iter()
        .map(|f| f["data"]["id"].as_str().unwrap())
        .collect();
    for f in &f[..4] {
        assert_eq!(common::keys(&f["data"]), common::set(&["id"]));
    }
    let pos = |id: &str| order.iter().position(|o| *o == id).unwrap();
    assert!(pos(&c.id) < pos(&b.id), "child before parent: {order:?}");
    assert!(pos(&b.id) < pos(&a.id) && pos(&d.id) < pos(&a.id));
    assert_eq!(order[3], a.id, "root last");
    assert_eq!(f[4]["data"]["id"], s.id.as_str());
    assert_eq!(f[4]["data"]["taskIds"], json!([keep.id]));

    for id in [&a.id, &b.id, &c.id, &d.id] {
        api_err(api.get_task(id).await, 404, "NOT_FOUND");
    }
    assert_eq!(
        api.list_tasks(&TaskQuery::default()).await.unwrap(),
        vec![api.get_task(&keep.id).await.unwrap()]
    );
    assert_eq!(
        api.get_session(&s.id).await.unwrap().task_ids,
        [keep.id.as_str()]
    );
    api_err(api.delete_task(&a.id).await, 404, "NOT_FOUND");
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_timeline() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T", None).await;
    let s = session(&api, &p.id, &[&t.id], "S").await;
    let mut ws = server.ws().await;

    let r = api
        .task_timeline(
            &t.id,
            &TaskTimelineRequest {
                message: Some("halfway".into()),
                session_id: Some(s.id.clone()),
                kind: None,
                fencing_token: None,
            },
        )
        .await
        .unwrap();
    assert!(r.success);
    assert_eq!(
        (
            r.task_id.as_str(),
            r.session_id.as_str(),
            r.message.as_str(),
            r.kind.as_str()
        ),
        (t.id.as_str(), s.id.as_str(), "halfway", "progress")
    );
    let f = ws
        .expect_events(&["session:appended", "session:updated", "notify:progress"])
        .await;
    let after = api.get_session(&s.id).await.unwrap();
    assert_eq!(
        f[0]["data"]["timeline"],
        json!([after.timeline.last().unwrap()])
    );
    assert_eq!(f[1]["data"], to_json(&after));
    assert_eq!(
        f[2]["data"],
        json!({ "sessionId": s.id, "taskId": t.id, "message": "halfway" })
    );
    let entry = after.timeline.last().unwrap();
    assert_eq!(entry.kind, "progress");
    assert_eq!(entry.message.as_deref(), Some("halfway"));
    assert_eq!(entry.task_id.as_deref(), Some(t.id.as_str()));
    assert!(entry.id.starts_with("evt_"));

    // Other kinds: only session:appended and session:updated, except needs_input.
    let r = api
        .task_timeline(
            &t.id,
            &TaskTimelineRequest {
                message: Some("status changed".into()),
                session_id: Some(s.id.clone()),
                kind: Some("task_status_changed".into()),
                fencing_token: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.kind, "task_status_changed");
    ws.expect_events(&["session:appended", "session:updated"])
        .await;
    api.task_timeline(
        &t.id,
        &TaskTimelineRequest {
            message: Some("help".into()),
            session_id: Some(s.id.clone()),
            kind: Some("needs_input".into()),
            fencing_token: None,
        },
    )
    .await
    .unwrap();
    let f = ws
        .expect_events(&["session:appended", "session:updated", "notify:needs_input"])
        .await;
    assert_eq!(
        f[2]["data"],
        json!({ "sessionId": s.id, "name": "S", "message": "help" })
    );
    assert_eq!(f[0]["data"]["needsInput"]["active"], true);
    assert_eq!(f[1]["data"]["needsInput"]["active"], true);

    let before = snapshot(&api).await;
    let req = |m: Option<&str>, s: Option<&str>| TaskTimelineRequest {
        message: m.map(Into::into),
        session_id: s.map(Into::into),
        kind: None,
        fencing_token: None,
    };
    api_err(
        api.task_timeline(&t.id, &req(None, Some(&s.id))).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.task_timeline(&t.id, &req(Some("m"), None)).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.task_timeline("task_nope", &req(Some("m"), Some(&s.id)))
            .await,
        404,
        "NOT_FOUND",
    );
    api_err(
        api.task_timeline(&t.id, &req(Some("m"), Some("sess_nope")))
            .await,
        404,
        "NOT_FOUND",
    );
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_docs() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T", None).await;
    let t2 = task(&api, &p.id, "T2", None).await;
    let s = session(&api, &p.id, &[&t.id, &t2.id], "Writer").await;
    let unlinked = session(&api, &p.id, &[&t2.id], "Unlinked").await;
    let doc = |title: &str, task: Option<&str>| AddDoc {
        title: Some(title.into()),
        file_path: Some(format!("/docs/{title}.md")),
        content: Some(format!("# {title}")),
        task_id: task.map(Into::into),
    };
    api.add_session_doc(&s.id, &doc("about-t", Some(&t.id)))
        .await
        .unwrap();
    api.add_session_doc(&s.id, &doc("general", None))
        .await
        .unwrap();
    api.add_session_doc(&s.id, &doc("about-t2", Some(&t2.id)))
        .await
        .unwrap();
    // Mentions T but the session is not working on T: not listed.
    api.add_session_doc(&unlinked.id, &doc("stray", Some(&t.id)))
        .await
        .unwrap();

    let docs = api.task_docs(&t.id).await.unwrap();
    let titles: Vec<&str> = docs.iter().map(|d| d.doc.title.as_str()).collect();
    assert_eq!(titles, ["about-t", "general"]);
    for d in &docs {
        assert_eq!(d.session_id, s.id);
        assert_eq!(d.session_name, "Writer");
        assert_eq!(d.doc.added_by.as_deref(), Some(s.id.as_str()));
        assert!(d.doc.id.starts_with("doc_"));
    }
    assert!(
        docs.windows(2)
            .all(|w| w[0].doc.added_at <= w[1].doc.added_at)
    );
    let raw = to_json(&docs[0]);
    assert_eq!(
        common::keys(&raw),
        common::set(&[
            "id",
            "title",
            "filePath",
            "content",
            "taskId",
            "addedAt",
            "addedBy",
            "sessionId",
            "sessionName"
        ])
    );
    let t2_docs = api.task_docs(&t2.id).await.unwrap();
    let titles: Vec<&str> = t2_docs.iter().map(|d| d.doc.title.as_str()).collect();
    assert_eq!(titles, ["general", "about-t2"]);
    api_err(api.task_docs("task_nope").await, 404, "NOT_FOUND");
    api_err(api.task_docs("a.b").await, 400, "VALIDATION_ERROR");
}

/// Unfiltered lists are served from a cache (`Domain::list_tasks_json`): every kind of write
/// must show in the next list, whichever project and list it touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_lists_follow_every_write() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "Cached").await;
    let other = project(&api, "Other").await;
    let of = |project: &Project| TaskQuery {
        project_id: Some(project.id.clone()),
        ..Default::default()
    };
    let titles = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.title).collect::<Vec<_>>();
    let a = task(&api, &p.id, "a", None).await;
    let b = task(&api, &p.id, "b", None).await;
    for _ in 0..2 {
        assert_eq!(titles(api.list_tasks(&of(&p)).await.unwrap()), ["a", "b"]);
    }
    assert_eq!(
        api.list_tasks(&TaskQuery::default()).await.unwrap().len(),
        2
    );

    let renamed = UpdateTask {
        title: Some("a2".into()),
        ..Default::default()
    };
    api.update_task(&a.id, &renamed).await.unwrap();
    assert_eq!(titles(api.list_tasks(&of(&p)).await.unwrap()), ["a2", "b"]);

    api.delete_task(&b.id).await.unwrap();
    assert_eq!(titles(api.list_tasks(&of(&p)).await.unwrap()), ["a2"]);

    task(&api, &other.id, "elsewhere", None).await;
    assert_eq!(
        titles(api.list_tasks(&of(&other)).await.unwrap()),
        ["elsewhere"]
    );
    assert_eq!(titles(api.list_tasks(&of(&p)).await.unwrap()), ["a2"]);
    assert_eq!(
        api.list_tasks(&TaskQuery::default()).await.unwrap().len(),
        2
    );

    // A session reporting on a task changes the task too.
    let s = session(&api, &p.id, &[&a.id], "s").await;
    let listed = api.list_tasks(&of(&p)).await.unwrap();
    assert_eq!(listed[0].session_ids, vec![s.id]);
    let filtered = TaskQuery {
        status: Some("todo".into()),
        ..of(&p)
    };
    assert_eq!(titles(api.list_tasks(&filtered).await.unwrap()), ["a2"]);
}
