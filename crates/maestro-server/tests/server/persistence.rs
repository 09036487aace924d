//! Restart on the same data directory: everything acknowledged before a clean shutdown is
//! there afterwards, unchanged, and event sequences continue where they stopped.

use crate::common;

use common::TestServer;
use maestro_client::SessionQuery;
use maestro_protocol::{
    AddDoc, AppendTimeline, CreateProject, CreateSession, CreateTask, UpdateTask,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_sequences_survive_a_restart() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = api
        .create_project(&CreateProject {
            name: Some("P".into()),
            working_dir: Some("/w".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = api
        .create_task(&CreateTask {
            project_id: Some(p.id.clone()),
            title: Some("T".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = api
        .create_session(&CreateSession {
            project_id: Some(p.id.clone()),
            task_ids: Some(vec![t.id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    api.update_task(
        &t.id,
        &UpdateTask {
            update_source: Some("session".into()),
            session_id: Some(s.id.clone()),
            session_status: Some("working".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    api.append_timeline(
        &s.id,
        &AppendTimeline {
            message: Some("before restart".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    api.add_session_doc(
        &s.id,
        &AddDoc {
            title: Some("doc".into()),
            file_path: Some("/doc.md".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // project scope so far: task:created, session:created, task:session_added, task:updated,
    // session:updated, notify:progress, session:updated.
    let before = common::snapshot(&api).await;

    let server = server.restart().await;
    let api = server.client();
    assert_eq!(
        common::snapshot(&api).await,
        before,
        "same data after restart"
    );
    assert_eq!(
        api.list_sessions(&SessionQuery {
            task_id: Some(t.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );

    let mut ws = server.ws().await;
    api.update_task(
        &t.id,
        &UpdateTask {
            status: Some("in_progress".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let f = ws.expect_events(&["task:updated"]).await;
    // 9 events before the restart (the timeline append and the doc each send session:appended
    // and session:updated).
    assert_eq!(f[0]["seq"], 10, "the project's sequence continues");
    api.create_project(&CreateProject {
        name: Some("Q".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let f = ws.expect_events(&["project:created"]).await;
    assert_eq!(f[0]["seq"], 2, "the global sequence continues");
    ws.close().await;
    server.stop().await;
}
