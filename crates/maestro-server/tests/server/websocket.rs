//! The legacy WebSocket protocol (contract §4): envelopes, per-scope sequence numbers,
//! client messages (`ping`, `subscribe`, `unsubscribe`, anything else ignored) and the
//! per-session subscription filter.

use crate::common;

use common::{TestServer, WsClient, event_names, keys, set, to_json};
use maestro_client::Client;
use maestro_protocol::{
    AppendTimeline, CreateProject, CreateSession, CreateTask, Project, Task, UpdateProject,
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

fn status(s: &str) -> UpdateSession {
    UpdateSession {
        status: Some(s.into()),
        ..Default::default()
    }
}

fn progress(message: &str) -> AppendTimeline {
    AppendTimeline {
        message: Some(message.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_messages() {
    let server = TestServer::start().await;
    let mut ws = server.ws().await;

    // Ignored: non-JSON, unknown types, a subscribe without an array. Messages on one
    // connection are handled in order, so any reply would come before the pong.
    ws.send_text("not json").await;
    ws.send_json(&json!({ "type": "heartbeat" })).await;
    ws.send_json(&json!({ "type": "keepalive" })).await;
    ws.send_json(&json!({ "no": "type" })).await;
    ws.send_json(&json!({ "type": "subscribe" })).await;
    ws.send_json(&json!({ "type": "subscribe", "sessionIds": "sess_1" }))
        .await;
    ws.assert_quiet().await;

    // Non-string ids are dropped from the subscription.
    ws.send_json(&json!({ "type": "subscribe", "sessionIds": ["sess_a", 1, null, "sess_b"] }))
        .await;
    let reply = ws.next_frame().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["sessionIds"], json!(["sess_a", "sess_b"]));
    assert!(reply.get("event").is_none());
    let reply = ws.unsubscribe().await;
    assert!(reply["timestamp"].is_i64());
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_are_per_scope_and_gap_free() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut a = server.ws().await;
    let mut b = server.ws_at("/some/other/path").await;

    let p1 = project(&api, "P1").await;
    let p2 = project(&api, "P2").await;
    let t1 = task(&api, &p1.id, "t1").await;
    let t2 = task(&api, &p2.id, "t2").await;
    let s1 = common::new_session(&api, &p1.id, "s1").await;
    api.update_task(
        &t1.id,
        &UpdateTask {
            status: Some("completed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    api.update_project(
        &p2.id,
        &UpdateProject {
            description: Some("d".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    api.append_timeline(&s1.id, &progress("p")).await.unwrap();
    api.delete_task(&t2.id).await.unwrap();

    let names = [
        "project:created",
        "project:created",
        "task:created",
        "task:created",
        "session:created",
        "task:updated",
        "notify:task_completed",
        "project:updated",
        "session:appended",
        "session:updated",
        "notify:progress",
        "task:deleted",
    ];
    let fa = a.expect_events(&names).await;
    let fb = b.expect_events(&names).await;
    assert_eq!(fa, fb, "every client gets the same frames");

    let pid = |f: &serde_json::Value| f["projectId"].as_str().map(str::to_owned);
    let seqs: Vec<(Option<String>, u64)> = fa
        .iter()
        .map(|f| (pid(f), f["seq"].as_u64().unwrap()))
        .collect();
    let (g, one, two) = (None, Some(p1.id.clone()), Some(p2.id.clone()));
    assert_eq!(
        seqs,
        [
            (g.clone(), 1),
            (g.clone(), 2),
            (one.clone(), 1),
            (two.clone(), 1),
            (one.clone(), 2),
            (one.clone(), 3),
            (one.clone(), 4),
            (g, 3),
            (one.clone(), 5),
            (one.clone(), 6),
            (one, 7),
            (two, 2),
        ]
    );
    assert_eq!(fa[2]["data"], to_json(&t1));
    assert_eq!(fa[4]["data"], to_json(&s1));
    assert!(fa.iter().all(|f| f["timestamp"].as_i64().unwrap() > 0));
    a.assert_quiet().await;
    b.assert_quiet().await;
    assert_eq!(a.last_seq(&p1.id), Some(7));
    assert_eq!(a.last_seq("global"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_filter() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = project(&api, "P").await;
    let s = common::new_session(&api, &p.id, "S").await;
    let t_sess = common::new_session(&api, &p.id, "T").await;
    let mut all = server.ws().await;
    let mut sub = server.ws().await;

    let reply = sub.subscribe(&[&s.id]).await;
    assert!(reply["timestamp"].is_i64());

    // Task events are not about a session: subscribers get them (upstream mistook the task
    // for a session and dropped them, contract §7.13).
    let work = task(&api, &p.id, "work").await;
    for ws in [&mut all, &mut sub] {
        let f = ws.expect_events(&["task:created"]).await;
        assert_eq!(f[0]["data"], to_json(&work));
    }
    api.update_task(
        &work.id,
        &UpdateTask {
            status: Some("in_progress".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    all.expect_events(&["task:updated"]).await;
    sub.expect_events(&["task:updated"]).await;

    // Events of the subscribed session arrive.
    api.update_session(&s.id, &status("working")).await.unwrap();
    all.expect_events(&["session:updated"]).await;
    let f = sub.expect_events(&["session:updated"]).await;
    assert_eq!(f[0]["data"]["id"], s.id.as_str());

    // Another session's events do not: the next frame `sub` sees is the one after them.
    api.update_session(&t_sess.id, &status("working"))
        .await
        .unwrap();
    api.append_timeline(&t_sess.id, &progress("elsewhere"))
        .await
        .unwrap();
    all.expect_events(&[
        "session:updated",
        "session:appended",
        "session:updated",
        "notify:progress",
    ])
    .await;
    api.append_timeline(&s.id, &progress("mine")).await.unwrap();
    let appended = ["session:appended", "session:updated", "notify:progress"];
    all.expect_events(&appended).await;
    let f = sub.expect_events(&appended).await;
    assert_eq!(f[0]["data"]["sessionId"], s.id.as_str());
    assert_eq!(f[1]["data"]["id"], s.id.as_str());
    assert_eq!(f[2]["data"]["sessionId"], s.id.as_str());

    // A task-level report by the other session: the task update reaches the subscriber,
    // the other session's link and notify events do not.
    api.update_task(
        &work.id,
        &UpdateTask {
            update_source: Some("session".into()),
            session_id: Some(t_sess.id.clone()),
            session_status: Some("completed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    all.expect_events(&[
        "session:task_added",
        "task:session_added",
        "task:updated",
        "notify:task_session_completed",
    ])
    .await;
    sub.expect_events(&["task:updated"]).await;

    // Not session-scoped: project events and task notifications.
    api.update_project(
        &p.id,
        &UpdateProject {
            name: Some("P renamed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    api.update_task(
        &work.id,
        &UpdateTask {
            status: Some("completed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let names = ["project:updated", "task:updated", "notify:task_completed"];
    all.expect_events(&names).await;
    sub.expect_events(&names).await;
    all.assert_quiet().await;
    sub.assert_quiet().await;

    // Subscribing again replaces the set; an empty set keeps only non-session events.
    sub.subscribe(&[&t_sess.id]).await;
    api.update_session(&s.id, &status("idle")).await.unwrap();
    api.update_session(&t_sess.id, &status("idle"))
        .await
        .unwrap();
    all.expect_events(&["session:updated", "session:updated"])
        .await;
    let f = sub.expect_events(&["session:updated"]).await;
    assert_eq!(f[0]["data"]["id"], t_sess.id.as_str());
    sub.subscribe(&[]).await;
    api.update_session(&t_sess.id, &status("working"))
        .await
        .unwrap();
    let other = task(&api, &p.id, "other").await;
    all.expect_events(&["session:updated", "task:created"])
        .await;
    let f = sub.expect_events(&["task:created"]).await;
    assert_eq!(f[0]["data"]["id"], other.id.as_str());

    // unsubscribe restores everything.
    sub.unsubscribe().await;
    api.update_session(&t_sess.id, &status("idle"))
        .await
        .unwrap();
    all.expect_events(&["session:updated"]).await;
    let f = sub.expect_events(&["session:updated"]).await;
    assert_eq!(f[0]["data"]["id"], t_sess.id.as_str());
    all.assert_quiet().await;
    sub.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_match_rest_answers() {
    let server = TestServer::start().await;
    let api = server.client();
    let mut ws: WsClient = server.ws().await;

    let p = project(&api, "P").await;
    let t = task(&api, &p.id, "T").await;
    let s = api
        .create_session(&CreateSession {
            project_id: Some(p.id.clone()),
            task_ids: Some(vec![t.id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let updated = api.update_session(&s.id, &status("working")).await.unwrap();
    let f = ws
        .expect_events(&[
            "project:created",
            "task:created",
            "session:created",
            "task:session_added",
            "session:updated",
        ])
        .await;
    assert_eq!(
        event_names(&f),
        [
            "project:created",
            "task:created",
            "session:created",
            "task:session_added",
            "session:updated"
        ]
    );
    assert_eq!(f[0]["data"], to_json(&p));
    assert_eq!(f[1]["data"], to_json(&t));
    assert_eq!(f[2]["data"], to_json(&s));
    assert_eq!(keys(&f[3]["data"]), set(&["taskId", "sessionId"]));
    assert_eq!(f[4]["data"], to_json(&updated));
    for frame in &f[1..] {
        assert_eq!(frame["projectId"], p.id.as_str());
    }
}
