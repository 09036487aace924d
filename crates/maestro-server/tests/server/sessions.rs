//! `/api/sessions`: create (incl. client ids and 409), list filters, the PATCH rules of
//! contract §2.4.1, delete, raw events, timeline, docs, task link/unlink and modals — with the
//! frames of each mutation, in order.

use crate::common;

use std::collections::BTreeMap;

use common::{TestServer, api_err, keys, set, snapshot, to_json};
use maestro_client::{Client, SessionQuery};
use maestro_protocol::{
    AddDoc, AppendSessionEvent, AppendTimeline, CreateProject, CreateSession, CreateTask,
    ModalAction, NeedsInput, Project, Session, SessionEvent, ShowModal, Task, TimelineEvent,
    UpdateSession, UpdateTask,
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

async fn task(api: &Client, project: &str, title: &str) -> Task {
    api.create_task(&CreateTask {
        project_id: Some(project.into()),
        title: Some(title.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn new_session(project: &str, tasks: &[&str]) -> CreateSession {
    CreateSession {
        project_id: Some(project.into()),
        task_ids: Some(tasks.iter().map(|t| (*t).to_owned()).collect()),
        ..Default::default()
    }
}

async fn session(api: &Client, project: &str, tasks: &[&str], name: &str) -> Session {
    api.create_session(&CreateSession {
        name: Some(name.into()),
        ..new_session(project, tasks)
    })
    .await
    .unwrap()
}

fn set_status(s: &str) -> UpdateSession {
    UpdateSession {
        status: Some(s.into()),
        ..Default::default()
    }
}

/// Session-mode task PATCH: `session` reports `status` on `task`.
async fn report(api: &Client, task: &str, session: &str, status: &str) -> Task {
    api.update_task(
        task,
        &UpdateTask {
            update_source: Some("session".into()),
            session_id: Some(session.into()),
            session_status: Some(status.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_tasks() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t1 = task(&api, &p.id, "T1").await;
    let t2 = task(&api, &p.id, "T2").await;
    let mut ws = server.ws().await;

    let s = api
        .create_session(&CreateSession {
            name: Some("Session A".into()),
            agent_id: Some("agent-1".into()),
            env: Some(BTreeMap::from([("K".into(), "V".into())])),
            metadata: Some(json!({ "mode": "execute" })),
            ..new_session(&p.id, &[&t1.id, &t2.id])
        })
        .await
        .unwrap();
    assert!(s.id.starts_with("sess_"), "{}", s.id);
    assert_eq!(s.project_id, p.id);
    assert_eq!(s.task_ids, [t1.id.clone(), t2.id.clone()]);
    assert_eq!(s.name, "Session A");
    assert_eq!(s.status, "idle", "default status");
    assert_eq!(s.agent_id.as_deref(), Some("agent-1"));
    assert_eq!(s.env, BTreeMap::from([("K".into(), "V".into())]));
    assert_eq!(s.metadata, Some(json!({ "mode": "execute" })));
    assert_eq!(s.completed_at, None);
    assert!(!s.hostname.is_empty() && !s.platform.is_empty());
    assert!(s.events.is_empty() && s.docs.is_empty());
    assert!(s.needs_input.is_none());
    let kinds: Vec<(&str, Option<&str>)> = s
        .timeline
        .iter()
        .map(|e| (e.kind.as_str(), e.task_id.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("session_started", None),
            ("task_started", Some(t1.id.as_str())),
            ("task_started", Some(t2.id.as_str())),
        ]
    );
    assert_eq!(s.timeline[0].message.as_deref(), Some("Session created"));

    // session:created, then task:session_added per task — and no task:updated.
    let f = ws
        .expect_events(&[
            "session:created",
            "task:session_added",
            "task:session_added",
        ])
        .await;
    assert_eq!(f[0]["data"], to_json(&s));
    assert_eq!(f[1]["data"], json!({ "taskId": t1.id, "sessionId": s.id }));
    assert_eq!(f[2]["data"], json!({ "taskId": t2.id, "sessionId": s.id }));
    for t in [&t1, &t2] {
        let after = api.get_task(&t.id).await.unwrap();
        assert_eq!(after.session_ids, [s.id.as_str()]);
        assert!(after.task_session_statuses.is_empty());
    }
    assert_eq!(api.get_session(&s.id).await.unwrap(), s);

    // Defaults; legacy `taskId`; explicit status.
    let bare = api.create_session(&new_session(&p.id, &[])).await.unwrap();
    assert_eq!(bare.name, "Unnamed Session");
    assert_eq!(bare.timeline.len(), 1);
    assert!(bare.env.is_empty());
    let raw = to_json(&bare);
    for absent in ["agentId", "metadata", "needsInput"] {
        assert!(
            raw.get(absent).is_none(),
            "{absent} absent until set: {raw}"
        );
    }
    ws.expect_events(&["session:created"]).await;
    let legacy = api
        .create_session(&CreateSession {
            project_id: Some(p.id.clone()),
            task_id: Some(t1.id.clone()),
            status: Some("working".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(legacy.task_ids, [t1.id.as_str()]);
    assert_eq!(legacy.status, "working");
    ws.expect_events(&["session:created", "task:session_added"])
        .await;
    assert_eq!(
        api.get_task(&t1.id).await.unwrap().session_ids,
        [s.id.clone(), legacy.id.clone()]
    );

    // `_suppressCreatedEvent` (used by spawn): only the task links are announced.
    api.create_session(&CreateSession {
        suppress_created_event: Some(true),
        ..new_session(&p.id, &[&t2.id])
    })
    .await
    .unwrap();
    ws.expect_events(&["task:session_added"]).await;
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_client_id_and_conflict() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T").await;
    let mut ws = server.ws().await;

    let s = api
        .create_session(&CreateSession {
            id: Some("sess-client-1".into()),
            name: Some("Mine".into()),
            ..new_session(&p.id, &[])
        })
        .await
        .unwrap();
    assert_eq!(s.id, "sess-client-1");
    ws.expect_events(&["session:created"]).await;
    let before = snapshot(&api).await;

    // Upstream silently replaced the stored session (contract §7.4); Maestro refuses.
    let e = api_err(
        api.create_session(&CreateSession {
            id: Some("sess-client-1".into()),
            name: Some("Impostor".into()),
            ..new_session(&p.id, &[&t.id])
        })
        .await,
        409,
        "CONFLICT",
    );
    assert!(e.message.contains("sess-client-1"), "{}", e.message);
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before, "nothing replaced or linked");
    assert_eq!(api.get_session("sess-client-1").await.unwrap(), s);

    api_err(
        api.create_session(&CreateSession {
            id: Some("a.b".into()),
            ..new_session(&p.id, &[])
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rejects_bad_input_without_side_effects() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let other = project(&api, "Other").await;
    let t = task(&api, &p.id, "T").await;
    let foreign = task(&api, &other.id, "Foreign").await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    let e = api_err(
        api.create_session(&CreateSession {
            project_id: Some(p.id.clone()),
            ..Default::default()
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
    assert_eq!(e.message, "taskIds is required");
    api_err(
        api.create_session(&CreateSession {
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
    let e = api_err(
        api.create_session(&new_session("proj_nope", &[])).await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(e.message, "Project with id 'proj_nope' not found");
    // One good task and one unknown: nothing is created or linked.
    let e = api_err(
        api.create_session(&new_session(&p.id, &[&t.id, "task_nope"]))
            .await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(e.message, "Task with id 'task_nope' not found");
    api_err(
        api.create_session(&new_session(&p.id, &[&foreign.id]))
            .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.create_session(&CreateSession {
            status: Some("sleeping".into()),
            ..new_session(&p.id, &[])
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.create_session(&new_session(&p.id, &["../etc"])).await,
        400,
        "VALIDATION_ERROR",
    );

    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
    api.create_session(&new_session(&p.id, &[])).await.unwrap();
    let f = ws.expect_events(&["session:created"]).await;
    assert_eq!(
        f[0]["seq"], 2,
        "only task:created came before in this project"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let q = project(&api, "Q").await;
    let t = task(&api, &p.id, "T").await;
    let u = task(&api, &q.id, "U").await;

    let mut by_status = BTreeMap::new();
    for st in [
        "spawning",
        "idle",
        "working",
        "completed",
        "failed",
        "stopped",
    ] {
        let s = api
            .create_session(&CreateSession {
                status: Some(st.into()),
                name: Some(st.into()),
                ..new_session(&p.id, &[&t.id])
            })
            .await
            .unwrap();
        by_status.insert(st, s.id);
    }
    let idle_unlinked = session(&api, &p.id, &[], "idle-unlinked").await;
    let in_q = session(&api, &q.id, &[&u.id], "in-q").await;

    let ids = |v: Vec<Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let list = |q: SessionQuery| {
        let api = api.clone();
        async move { ids(api.list_sessions(&q).await.unwrap()) }
    };
    let all_p: Vec<String> = [
        "spawning",
        "idle",
        "working",
        "completed",
        "failed",
        "stopped",
    ]
    .iter()
    .map(|s| by_status[s].clone())
    .chain([idle_unlinked.id.clone()])
    .collect();

    let mut everything = all_p.clone();
    everything.push(in_q.id.clone());
    assert_eq!(list(SessionQuery::default()).await, everything);
    assert_eq!(
        list(SessionQuery {
            project_id: Some(p.id.clone()),
            ..Default::default()
        })
        .await,
        all_p
    );
    assert_eq!(
        list(SessionQuery {
            project_id: Some(q.id.clone()),
            ..Default::default()
        })
        .await,
        [in_q.id.as_str()]
    );
    assert_eq!(
        list(SessionQuery {
            task_id: Some(t.id.clone()),
            ..Default::default()
        })
        .await,
        all_p[..6].to_vec()
    );
    assert_eq!(
        list(SessionQuery {
            status: Some("idle".into()),
            ..Default::default()
        })
        .await,
        [
            by_status["idle"].clone(),
            idle_unlinked.id.clone(),
            in_q.id.clone()
        ]
    );
    // active=true means still running: spawning, idle or working (upstream only dropped
    // `completed`, contract §7.15).
    assert_eq!(
        list(SessionQuery {
            project_id: Some(p.id.clone()),
            active: Some(true),
            ..Default::default()
        })
        .await,
        [
            by_status["spawning"].clone(),
            by_status["idle"].clone(),
            by_status["working"].clone(),
            idle_unlinked.id.clone(),
        ]
    );
    assert_eq!(
        list(SessionQuery {
            project_id: Some(p.id.clone()),
            task_id: Some(t.id.clone()),
            status: Some("working".into()),
            active: Some(true),
        })
        .await,
        [by_status["working"].clone()]
    );
    assert!(
        list(SessionQuery {
            status: Some("completed".into()),
            active: Some(true),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(SessionQuery {
            project_id: Some(p.id.clone()),
            active: Some(false),
            ..Default::default()
        })
        .await,
        all_p
    );
    assert!(
        list(SessionQuery {
            task_id: Some("task_unknown".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // Full objects in lists.
    let listed = api
        .list_sessions(&SessionQuery {
            project_id: Some(q.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![in_q]);
    api_err(
        api.list_sessions(&SessionQuery {
            project_id: Some("a.b".into()),
            ..Default::default()
        })
        .await,
        400,
        "VALIDATION_ERROR",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_fields() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T").await;
    let s = session(&api, &p.id, &[], "S").await;
    let mut ws = server.ws().await;

    let w = api
        .update_session(&s.id, &set_status("working"))
        .await
        .unwrap();
    assert_eq!(w.status, "working");
    assert_eq!(w.completed_at, None);
    assert!(w.last_activity >= s.last_activity);
    let f = ws.expect_events(&["session:updated"]).await;
    assert_eq!(f[0]["data"], to_json(&w));

    // needsInput: replaced as a whole; notify only on the inactive -> active edge.
    let ni = |active: bool, message: Option<&str>| UpdateSession {
        needs_input: Some(NeedsInput {
            active,
            message: message.map(Into::into),
            since: None,
        }),
        ..Default::default()
    };
    let n = api
        .update_session(&s.id, &ni(true, Some("need help")))
        .await
        .unwrap();
    assert_eq!(n.status, "working", "status unchanged");
    let f = ws
        .expect_events(&["session:updated", "notify:needs_input"])
        .await;
    assert_eq!(
        f[0]["data"]["needsInput"],
        json!({ "active": true, "message": "need help" })
    );
    assert_eq!(
        f[1]["data"],
        json!({ "sessionId": s.id, "name": "S", "message": "need help" })
    );
    api.update_session(&s.id, &ni(true, Some("still")))
        .await
        .unwrap();
    ws.expect_events(&["session:updated"]).await;
    let cleared = api.update_session(&s.id, &ni(false, None)).await.unwrap();
    assert_eq!(
        cleared.needs_input,
        Some(NeedsInput {
            active: false,
            message: None,
            since: None
        })
    );
    ws.expect_events(&["session:updated"]).await;

    // env merges; taskIds replace (without touching tasks); events / timeline append verbatim.
    api.update_session(
        &s.id,
        &UpdateSession {
            env: Some(BTreeMap::from([("A".into(), "1".into())])),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ws.expect_events(&["session:updated"]).await;
    let ev = SessionEvent {
        id: "evt-1".into(),
        timestamp: 42,
        kind: "file_modified".into(),
        data: Some(json!({ "file": "a.rs" })),
        extra: Default::default(),
    };
    let tl = TimelineEvent {
        id: "evt-2".into(),
        kind: "needs_input".into(),
        timestamp: 43,
        message: Some("appended verbatim".into()),
        task_id: None,
        metadata: None,
        extra: serde_json::Map::from_iter([("custom".to_owned(), json!(true))]),
    };
    let patched = api
        .update_session(
            &s.id,
            &UpdateSession {
                env: Some(BTreeMap::from([("B".into(), "2".into())])),
                task_ids: Some(vec![t.id.clone()]),
                agent_id: Some("agent-9".into()),
                events: Some(vec![ev.clone()]),
                timeline: Some(vec![tl.clone()]),
                other: serde_json::Map::from_iter([
                    ("name".to_owned(), json!("not updatable")),
                    ("metadata".to_owned(), json!({ "x": 1 })),
                ]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // A timeline entry appended by PATCH has no needs-input side effect and no notify; the
    // appended items go out as session:appended first.
    let f = ws
        .expect_events(&["session:appended", "session:updated"])
        .await;
    assert_eq!(f[0]["data"]["events"], json!([ev]));
    assert_eq!(f[0]["data"]["timeline"], json!([tl]));
    assert_eq!(f[1]["data"], to_json(&patched));
    assert_eq!(
        patched.env,
        BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())])
    );
    assert_eq!(patched.task_ids, [t.id.as_str()]);
    assert_eq!(patched.agent_id.as_deref(), Some("agent-9"));
    assert_eq!(patched.events, vec![ev]);
    assert_eq!(patched.timeline.last(), Some(&tl));
    assert_eq!(patched.name, "S");
    assert_eq!(patched.metadata, None);
    assert_eq!(patched.needs_input.as_ref().map(|n| n.active), Some(false));
    assert!(
        api.get_task(&t.id).await.unwrap().session_ids.is_empty(),
        "PATCH taskIds does not link tasks"
    );
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_status_closes_open_task_statuses() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let open = task(&api, &p.id, "open").await;
    let done = task(&api, &p.id, "done").await;
    let untouched = task(&api, &p.id, "untouched").await;
    let s = session(&api, &p.id, &[&open.id, &done.id, &untouched.id], "S").await;
    report(&api, &open.id, &s.id, "working").await;
    report(&api, &done.id, &s.id, "completed").await;
    let done_before = api.get_task(&done.id).await.unwrap();
    let untouched_before = api.get_task(&untouched.id).await.unwrap();
    let mut ws = server.ws().await;

    // task:updated for each still-open entry first (no notify:task_session_*), then
    // session:updated, then the notify for the transition.
    let c = api
        .update_session(&s.id, &set_status("completed"))
        .await
        .unwrap();
    let f = ws
        .expect_events(&[
            "task:updated",
            "session:updated",
            "notify:session_completed",
        ])
        .await;
    assert_eq!(f[0]["data"]["id"], open.id.as_str());
    assert_eq!(f[0]["data"]["taskSessionStatuses"][&s.id], "completed");
    assert_eq!(f[1]["data"], to_json(&c));
    assert_eq!(f[2]["data"], json!({ "sessionId": s.id, "name": "S" }));
    assert_eq!(c.status, "completed");
    let completed_at = c.completed_at.expect("completedAt set");
    assert_eq!(
        api.get_task(&open.id).await.unwrap().task_session_statuses[&s.id],
        "completed"
    );
    assert_eq!(api.get_task(&done.id).await.unwrap(), done_before);
    assert_eq!(api.get_task(&untouched.id).await.unwrap(), untouched_before);

    // `stopped` never overwrites `completed`: alone it is a no-op (no event, nothing bumped).
    let same = api
        .update_session(&s.id, &set_status("stopped"))
        .await
        .unwrap();
    assert_eq!(same, c);
    ws.assert_quiet().await;
    // With another key (the UI sends completedAt) the PATCH still counts: session:updated,
    // status kept.
    let ui = api
        .update_session(
            &s.id,
            &UpdateSession {
                status: Some("stopped".into()),
                other: serde_json::Map::from_iter([("completedAt".to_owned(), json!(1))]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ui.status, "completed");
    assert!(ui.last_activity >= c.last_activity);
    assert_eq!(
        ui.completed_at,
        Some(completed_at),
        "completedAt not taken from the body"
    );
    let f = ws.expect_events(&["session:updated"]).await;
    assert_eq!(f[0]["data"]["status"], "completed");
    // completed -> completed is not a transition: no notify; no open entries left.
    api.update_session(&s.id, &set_status("completed"))
        .await
        .unwrap();
    ws.expect_events(&["session:updated"]).await;
    // Back to work: upstream kept the old completedAt (contract §7.8); Maestro clears it.
    let resumed = api
        .update_session(&s.id, &set_status("working"))
        .await
        .unwrap();
    assert_eq!(resumed.completed_at, None);
    ws.expect_events(&["session:updated"]).await;
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_stopped_close_entries_as_failed() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T").await;
    let f_sess = session(&api, &p.id, &[&t.id], "F").await;
    let s_sess = session(&api, &p.id, &[&t.id], "St").await;
    report(&api, &t.id, &f_sess.id, "blocked").await;
    report(&api, &t.id, &s_sess.id, "working").await;
    let mut ws = server.ws().await;

    let failed = api
        .update_session(&f_sess.id, &set_status("failed"))
        .await
        .unwrap();
    assert!(failed.completed_at.is_some());
    let f = ws
        .expect_events(&["task:updated", "session:updated", "notify:session_failed"])
        .await;
    assert_eq!(f[0]["data"]["taskSessionStatuses"][&f_sess.id], "failed");
    assert_eq!(f[0]["data"]["taskSessionStatuses"][&s_sess.id], "working");
    assert_eq!(f[2]["data"], json!({ "sessionId": f_sess.id, "name": "F" }));

    // stopped: entries become failed, and there is no notify for stopped.
    let stopped = api
        .update_session(&s_sess.id, &set_status("stopped"))
        .await
        .unwrap();
    assert_eq!(stopped.status, "stopped");
    assert!(stopped.completed_at.is_some());
    let f = ws.expect_events(&["task:updated", "session:updated"]).await;
    assert_eq!(f[0]["data"]["taskSessionStatuses"][&s_sess.id], "failed");
    ws.assert_quiet().await;
    let after = api.get_task(&t.id).await.unwrap();
    assert_eq!(
        after.task_session_statuses,
        BTreeMap::from([
            (f_sess.id.clone(), "failed".into()),
            (s_sess.id.clone(), "failed".into()),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_rejects_bad_input() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let s = session(&api, &p.id, &[], "S").await;
    let mut ws = server.ws().await;
    let before = snapshot(&api).await;

    api_err(
        api.update_session(&s.id, &set_status("done")).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.update_session(
            &s.id,
            &UpdateSession {
                task_ids: Some(vec!["a/b".into()]),
                ..Default::default()
            },
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    let e = api_err(
        api.update_session("sess_nope", &set_status("working"))
            .await,
        404,
        "NOT_FOUND",
    );
    assert_eq!(e.message, "Session with id 'sess_nope' not found");
    api_err(api.get_session("sess_nope").await, 404, "NOT_FOUND");
    api_err(api.delete_session("sess_nope").await, 404, "NOT_FOUND");

    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_session() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T").await;
    let s = session(&api, &p.id, &[&t.id], "S").await;
    let keep = session(&api, &p.id, &[&t.id], "Keep").await;
    report(&api, &t.id, &s.id, "working").await;
    let mut ws = server.ws().await;

    let d = api.delete_session(&s.id).await.unwrap();
    assert!(d.success);
    assert_eq!(d.id, s.id);
    // session:deleted, then (Maestro, contract §7.7) the tasks that referenced it drop it.
    let f = ws.expect_events(&["session:deleted", "task:updated"]).await;
    assert_eq!(f[0]["data"], json!({ "id": s.id }));
    let t_after = api.get_task(&t.id).await.unwrap();
    assert_eq!(f[1]["data"], to_json(&t_after));
    assert_eq!(t_after.session_ids, [keep.id.as_str()]);
    assert!(!t_after.task_session_statuses.contains_key(&s.id));
    api_err(api.get_session(&s.id).await, 404, "NOT_FOUND");
    assert_eq!(
        api.list_sessions(&SessionQuery::default()).await.unwrap(),
        vec![keep]
    );
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_events_and_timeline() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T").await;
    let s = session(&api, &p.id, &[&t.id], "S").await;
    let mut ws = server.ws().await;

    let after = api
        .append_session_event(
            &s.id,
            &AppendSessionEvent {
                kind: Some("file_modified".into()),
                data: Some(json!({ "file": "src/main.rs", "timestamp": "2026-01-01T00:00:00Z" })),
            },
        )
        .await
        .unwrap();
    let ev = after.events.last().unwrap();
    assert!(ev.id.starts_with("evt_"));
    assert_eq!(ev.kind, "file_modified");
    assert_eq!(ev.data.as_ref().unwrap()["file"], "src/main.rs");
    assert_eq!(
        keys(&to_json(ev)),
        set(&["id", "timestamp", "type", "data"])
    );
    let f = ws
        .expect_events(&["session:appended", "session:updated"])
        .await;
    assert_eq!(f[0]["data"]["events"], json!([ev]));
    assert_eq!(f[1]["data"], to_json(&after));
    api.append_session_event(
        &s.id,
        &AppendSessionEvent {
            kind: Some("tool_used".into()),
            data: None,
        },
    )
    .await
    .unwrap();
    ws.expect_events(&["session:appended", "session:updated"])
        .await;

    let tl = |kind: Option<&str>, message: &str, task: Option<&str>| AppendTimeline {
        message: Some(message.into()),
        kind: kind.map(Into::into),
        task_id: task.map(Into::into),
        metadata: None,
    };
    // Default type is progress: session:appended, session:updated, notify:progress.
    let after = api
        .append_timeline(&s.id, &tl(None, "halfway", Some(&t.id)))
        .await
        .unwrap();
    let e = after.timeline.last().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.message.as_deref(), e.task_id.as_deref()),
        ("progress", Some("halfway"), Some(t.id.as_str()))
    );
    let f = ws
        .expect_events(&["session:appended", "session:updated", "notify:progress"])
        .await;
    assert_eq!(
        f[2]["data"],
        json!({ "sessionId": s.id, "taskId": t.id, "message": "halfway" })
    );
    api.append_timeline(&s.id, &tl(Some("progress"), "no task", None))
        .await
        .unwrap();
    let f = ws
        .expect_events(&["session:appended", "session:updated", "notify:progress"])
        .await;
    assert_eq!(
        f[2]["data"],
        json!({ "sessionId": s.id, "message": "no task" })
    );
    // Any other type is stored as given, with no notify.
    let after = api
        .append_timeline(
            &s.id,
            &AppendTimeline {
                metadata: Some(json!({ "k": "v" })),
                ..tl(Some("milestone"), "m1", None)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        after.timeline.last().unwrap().metadata,
        Some(json!({ "k": "v" }))
    );
    ws.expect_events(&["session:appended", "session:updated"])
        .await;
    // needs_input sets the flag and notifies — every time, even when already flagged.
    for msg in ["need a decision", "still waiting"] {
        let after = api
            .append_timeline(&s.id, &tl(Some("needs_input"), msg, None))
            .await
            .unwrap();
        let ni = after.needs_input.as_ref().unwrap();
        assert!(ni.active);
        assert_eq!(ni.message.as_deref(), Some(msg));
        assert!(ni.since.is_some());
        let f = ws
            .expect_events(&["session:appended", "session:updated", "notify:needs_input"])
            .await;
        assert_eq!(
            f[2]["data"],
            json!({ "sessionId": s.id, "name": "S", "message": msg })
        );
    }

    let before = snapshot(&api).await;
    api_err(
        api.append_session_event(&s.id, &AppendSessionEvent::default())
            .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.append_timeline(&s.id, &AppendTimeline::default()).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.append_timeline(&s.id, &tl(None, "  ", None)).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.append_timeline("sess_nope", &tl(None, "m", None)).await,
        404,
        "NOT_FOUND",
    );
    api_err(
        api.append_session_event(
            "sess_nope",
            &AppendSessionEvent {
                kind: Some("x".into()),
                data: None,
            },
        )
        .await,
        404,
        "NOT_FOUND",
    );
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T").await;
    let s = session(&api, &p.id, &[&t.id], "S").await;
    let mut ws = server.ws().await;

    assert!(api.session_docs(&s.id).await.unwrap().is_empty());
    // The answer is the whole session, not the doc.
    let after = api
        .add_session_doc(
            &s.id,
            &AddDoc {
                title: Some("Plan".into()),
                file_path: Some("/docs/plan.md".into()),
                content: Some("# Plan".into()),
                task_id: Some(t.id.clone()),
            },
        )
        .await
        .unwrap();
    let f = ws
        .expect_events(&["session:appended", "session:updated"])
        .await;
    let doc = after.docs.last().unwrap().clone();
    // session:appended has the doc with its content; session:updated the docs without.
    assert_eq!(f[0]["data"]["docs"], json!([doc]));
    let mut bare = to_json(&after);
    bare["docs"][0].as_object_mut().unwrap().remove("content");
    assert_eq!(f[1]["data"], bare);
    assert!(doc.id.starts_with("doc_"));
    assert_eq!(doc.title, "Plan");
    assert_eq!(doc.file_path, "/docs/plan.md");
    assert_eq!(doc.content.as_deref(), Some("# Plan"));
    assert_eq!(doc.task_id.as_deref(), Some(t.id.as_str()));
    assert_eq!(doc.added_by.as_deref(), Some(s.id.as_str()));
    let entry = after.timeline.last().unwrap();
    assert_eq!(entry.kind, "doc_added");
    assert_eq!(entry.message.as_deref(), Some("Doc added: Plan"));
    assert_eq!(entry.task_id.as_deref(), Some(t.id.as_str()));
    assert_eq!(
        entry.metadata,
        Some(json!({ "docId": doc.id, "filePath": "/docs/plan.md", "title": "Plan" }))
    );
    let minimal = api
        .add_session_doc(
            &s.id,
            &AddDoc {
                title: Some("Notes".into()),
                file_path: Some("/docs/notes.md".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    ws.expect_events(&["session:appended", "session:updated"])
        .await;
    let listed = api.session_docs(&s.id).await.unwrap();
    assert_eq!(listed, minimal.docs);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], doc);
    let raw = to_json(&listed[1]);
    assert_eq!(
        keys(&raw),
        set(&["id", "title", "filePath", "addedAt", "addedBy"])
    );

    let before = snapshot(&api).await;
    for bad in [
        AddDoc {
            file_path: Some("/x".into()),
            ..Default::default()
        },
        AddDoc {
            title: Some("x".into()),
            ..Default::default()
        },
        AddDoc {
            title: Some("x".into()),
            file_path: Some("/x".into()),
            task_id: Some("../x".into()),
            ..Default::default()
        },
    ] {
        api_err(
            api.add_session_doc(&s.id, &bad).await,
            400,
            "VALIDATION_ERROR",
        );
    }
    let ok = AddDoc {
        title: Some("x".into()),
        file_path: Some("/x".into()),
        ..Default::default()
    };
    api_err(
        api.add_session_doc("sess_nope", &ok).await,
        404,
        "NOT_FOUND",
    );
    api_err(api.session_docs("sess_nope").await, 404, "NOT_FOUND");
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_and_unlink() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let other = project(&api, "Other").await;
    let t = task(&api, &p.id, "T").await;
    let foreign = task(&api, &other.id, "Foreign").await;
    let s = session(&api, &p.id, &[], "S").await;
    let mut ws = server.ws().await;

    let linked = api.link_task(&s.id, &t.id).await.unwrap();
    assert_eq!(linked.task_ids, [t.id.as_str()]);
    let entry = linked.timeline.last().unwrap();
    assert_eq!(entry.kind, "task_started");
    assert_eq!(entry.task_id.as_deref(), Some(t.id.as_str()));
    let f = ws
        .expect_events(&["session:task_added", "task:session_added"])
        .await;
    assert_eq!(f[0]["data"], json!({ "sessionId": s.id, "taskId": t.id }));
    assert_eq!(f[1]["data"], json!({ "taskId": t.id, "sessionId": s.id }));
    assert_eq!(
        api.get_task(&t.id).await.unwrap().session_ids,
        [s.id.as_str()]
    );

    // Linking again: events and a timeline entry again, but no duplicate ids.
    let again = api.link_task(&s.id, &t.id).await.unwrap();
    assert_eq!(again.task_ids, [t.id.as_str()]);
    assert_eq!(again.timeline.len(), linked.timeline.len() + 1);
    ws.expect_events(&["session:task_added", "task:session_added"])
        .await;
    assert_eq!(
        api.get_task(&t.id).await.unwrap().session_ids,
        [s.id.as_str()]
    );

    let unlinked = api.unlink_task(&s.id, &t.id).await.unwrap();
    assert!(unlinked.task_ids.is_empty());
    let entry = unlinked.timeline.last().unwrap();
    assert_eq!(entry.kind, "task_completed");
    assert_eq!(entry.task_id.as_deref(), Some(t.id.as_str()));
    let f = ws
        .expect_events(&["session:task_removed", "task:session_removed"])
        .await;
    assert_eq!(f[0]["data"], json!({ "sessionId": s.id, "taskId": t.id }));
    assert_eq!(f[1]["data"], json!({ "sessionId": s.id, "taskId": t.id }));
    assert!(api.get_task(&t.id).await.unwrap().session_ids.is_empty());
    assert_eq!(api.get_session(&s.id).await.unwrap(), unlinked);

    let before = snapshot(&api).await;
    api_err(api.link_task(&s.id, "task_nope").await, 404, "NOT_FOUND");
    api_err(api.link_task("sess_nope", &t.id).await, 404, "NOT_FOUND");
    api_err(api.unlink_task(&s.id, "task_nope").await, 404, "NOT_FOUND");
    api_err(api.unlink_task("sess_nope", &t.id).await, 404, "NOT_FOUND");
    api_err(
        api.link_task(&s.id, &foreign.id).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(api.link_task(&s.id, "a.b").await, 400, "VALIDATION_ERROR");
    ws.assert_quiet().await;
    assert_eq!(snapshot(&api).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modals() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let s = session(&api, &p.id, &[], "S").await;
    let mut ws = server.ws().await;

    let html = "<h1>Pick one</h1>";
    let shown = api
        .show_modal(
            &s.id,
            &ShowModal {
                modal_id: Some("modal_1_abcdef12".into()),
                html: Some(html.into()),
                title: Some("Choose".into()),
                file_path: None,
            },
        )
        .await
        .unwrap();
    assert!(shown.success);
    assert_eq!(shown.modal_id, "modal_1_abcdef12");
    assert_eq!(shown.session_id, s.id);
    assert!(!shown.message.is_empty());
    let f = ws.expect_events(&["session:modal"]).await;
    let data = &f[0]["data"];
    assert_eq!(
        keys(data),
        set(&[
            "sessionId",
            "modalId",
            "title",
            "html",
            "filePath",
            "timestamp"
        ])
    );
    assert_eq!(data["sessionId"], s.id.as_str());
    assert_eq!(data["modalId"], "modal_1_abcdef12");
    assert_eq!(data["title"], "Choose");
    assert_eq!(data["html"], html);
    let written = server.dir().join("data/modals/modal_1_abcdef12.html");
    assert_eq!(
        data["filePath"].as_str().map(std::path::PathBuf::from),
        Some(written.clone())
    );
    assert_eq!(std::fs::read_to_string(&written).unwrap(), html);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a modal page is the owner's alone");
    }

    // Default title; a client-given filePath is passed through.
    api.show_modal(
        &s.id,
        &ShowModal {
            modal_id: Some("m2".into()),
            html: Some("<p/>".into()),
            title: None,
            file_path: Some("/elsewhere/m2.html".into()),
        },
    )
    .await
    .unwrap();
    let f = ws.expect_events(&["session:modal"]).await;
    assert_eq!(f[0]["data"]["title"], "Agent Modal");
    assert_eq!(f[0]["data"]["filePath"], "/elsewhere/m2.html");

    let ack = api
        .modal_action(
            &s.id,
            "modal_1_abcdef12",
            &ModalAction {
                action: Some("submit".into()),
                data: Some(json!({ "choice": 2 })),
            },
        )
        .await
        .unwrap();
    assert!(ack.success);
    assert_eq!(ack.modal_id, "modal_1_abcdef12");
    assert_eq!(ack.action.as_deref(), Some("submit"));
    let f = ws.expect_events(&["session:modal_action"]).await;
    let data = &f[0]["data"];
    assert_eq!(
        keys(data),
        set(&["sessionId", "modalId", "action", "data", "timestamp"])
    );
    assert_eq!(data["action"], "submit");
    assert_eq!(data["data"], json!({ "choice": 2 }));
    api.modal_action(
        &s.id,
        "modal_1_abcdef12",
        &ModalAction {
            action: Some("cancel".into()),
            data: None,
        },
    )
    .await
    .unwrap();
    let f = ws.expect_events(&["session:modal_action"]).await;
    assert_eq!(f[0]["data"]["data"], json!({}), "data defaults to {{}}");

    let ack = api.modal_close(&s.id, "modal_1_abcdef12").await.unwrap();
    assert!(ack.success);
    assert_eq!(ack.action, None);
    assert_eq!(
        keys(&to_json(&ack)),
        set(&["success", "modalId"]),
        "close answers {{success, modalId}}"
    );
    let f = ws.expect_events(&["session:modal_closed"]).await;
    assert_eq!(
        keys(&f[0]["data"]),
        set(&["sessionId", "modalId", "timestamp"])
    );
    assert_eq!(f[0]["data"]["modalId"], "modal_1_abcdef12");

    // Bad input: nothing emitted, and no file escapes the modals directory.
    let show = |id: &str, html: Option<&str>| ShowModal {
        modal_id: Some(id.into()),
        html: html.map(Into::into),
        title: None,
        file_path: None,
    };
    api_err(
        api.show_modal(&s.id, &show("../../escape", Some("x")))
            .await,
        400,
        "VALIDATION_ERROR",
    );
    assert!(!server.dir().join("escape.html").exists());
    api_err(
        api.show_modal(&s.id, &show("m3", None)).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.show_modal(
            &s.id,
            &ShowModal {
                modal_id: None,
                ..show("m3", Some("x"))
            },
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.show_modal("sess_nope", &show("m3", Some("x"))).await,
        404,
        "NOT_FOUND",
    );
    api_err(
        api.modal_action(&s.id, "m1", &ModalAction::default()).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.modal_action(
            &s.id,
            "../m1",
            &ModalAction {
                action: Some("x".into()),
                data: None,
            },
        )
        .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(api.modal_close(&s.id, "a.b").await, 400, "VALIDATION_ERROR");
    api_err(api.modal_close("sess_nope", "m1").await, 404, "NOT_FOUND");
    assert!(!server.dir().join("data/modals/m3.html").exists());
    ws.assert_quiet().await;
}
