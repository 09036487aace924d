//! Concurrent writers: two agents reporting on the same task at once must not lose each
//! other's status (upstream did, contract §7.6), concurrent timeline appends must all land,
//! and every acknowledged write emits its events exactly once, in a gap-free sequence.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{TestServer, event_names};
use maestro_protocol::{AppendTimeline, CreateProject, CreateSession, CreateTask, UpdateTask};

const STATUSES: [&str; 3] = ["working", "completed", "blocked"];
const REPORTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_report_on_one_task() {
    let server = TestServer::start().await;
    let api = server.client();
    let p = api
        .create_project(&CreateProject {
            name: Some("P".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let task = api
        .create_task(&CreateTask {
            project_id: Some(p.id.clone()),
            title: Some("shared".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for name in ["agent-a", "agent-b"] {
        sessions.push(common::named_session(&api, &p.id, name).await);
    }
    let mut ws = server.ws().await;

    // Agent k reports STATUSES[(i + k) % 3] for i in 0..50, on its own connection pool. Neither
    // session is linked yet, so their first reports also link them, concurrently.
    let mut agents = Vec::new();
    for (k, session) in sessions.iter().enumerate() {
        let client = server.client();
        let (task_id, session) = (task.id.clone(), session.clone());
        agents.push(tokio::spawn(async move {
            for i in 0..REPORTS {
                let req = UpdateTask {
                    update_source: Some("session".into()),
                    session_id: Some(session.clone()),
                    session_status: Some(STATUSES[(i + k) % 3].into()),
                    ..Default::default()
                };
                let t = client.update_task(&task_id, &req).await.unwrap();
                // The answer reflects this agent's own report.
                assert_eq!(t.task_session_statuses[&session], STATUSES[(i + k) % 3]);
            }
        }));
    }
    for agent in agents {
        agent.await.unwrap();
    }

    let last = |k: usize| STATUSES[(REPORTS - 1 + k) % 3].to_owned();
    let after = api.get_task(&task.id).await.unwrap();
    assert_eq!(
        after.task_session_statuses,
        BTreeMap::from([
            (sessions[0].clone(), last(0)),
            (sessions[1].clone(), last(1)),
        ]),
        "each agent's last report survives"
    );
    assert_eq!(
        after.session_ids.iter().collect::<BTreeSet<_>>(),
        sessions.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(after.session_ids.len(), 2);
    for s in &sessions {
        assert_eq!(
            api.get_session(s).await.unwrap().task_ids,
            [task.id.as_str()],
            "linked exactly once"
        );
    }

    // Every report emitted task:updated; each change to `completed` a notify; each first
    // report a link (2 events). The client checks that seqs are gap-free.
    let completed_reports: usize = (0..2)
        .map(|k| {
            (0..REPORTS)
                .filter(|i| STATUSES[(i + k) % 3] == "completed")
                .count()
        })
        .sum();
    let total = 2 * REPORTS + completed_reports + 2 * 2;
    let frames = ws.collect_events(total).await;
    let mut counts = BTreeMap::new();
    for name in event_names(&frames) {
        *counts.entry(name).or_insert(0usize) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([
            (
                "notify:task_session_completed".to_owned(),
                completed_reports
            ),
            ("session:task_added".to_owned(), 2),
            ("task:session_added".to_owned(), 2),
            ("task:updated".to_owned(), 2 * REPORTS),
        ])
    );
    // The last task:updated carries the final state.
    let last_update = frames
        .iter()
        .rev()
        .find(|f| f["event"] == "task:updated")
        .unwrap();
    assert_eq!(
        last_update["data"]["taskSessionStatuses"],
        serde_json::to_value(&after.task_session_statuses).unwrap()
    );
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_timeline_appends_all_land() {
    const N: usize = 100;
    let server = TestServer::start().await;
    let api = server.client();
    let p = api
        .create_project(&CreateProject {
            name: Some("P".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = api
        .create_session(&CreateSession {
            project_id: Some(p.id.clone()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ws = server.ws().await;

    let clients = [server.client(), server.client(), server.client()];
    let mut writers = Vec::new();
    for i in 0..N {
        let client = clients[i % clients.len()].clone();
        let id = s.id.clone();
        writers.push(tokio::spawn(async move {
            client
                .append_timeline(
                    &id,
                    &AppendTimeline {
                        message: Some(format!("step {i}")),
                        kind: Some("milestone".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }));
    }
    for w in writers {
        w.await.unwrap();
    }

    let after = api.get_session(&s.id).await.unwrap();
    assert_eq!(
        after.timeline.len(),
        1 + N,
        "session_started + every append"
    );
    let messages: BTreeSet<String> = after.timeline[1..]
        .iter()
        .map(|e| e.message.clone().unwrap())
        .collect();
    let expected: BTreeSet<String> = (0..N).map(|i| format!("step {i}")).collect();
    assert_eq!(messages, expected);
    let ids: BTreeSet<&str> = after.timeline.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 1 + N, "entry ids are unique");

    // One session:appended and one session:updated per append, each with one more entry
    // than the one before.
    let frames = ws.collect_events(2 * N).await;
    for (i, pair) in frames.chunks(2).enumerate() {
        assert_eq!(pair[0]["event"], "session:appended");
        assert_eq!(
            pair[0]["data"]["timelineLength"],
            2 + i,
            "appends are serialised"
        );
        assert_eq!(pair[1]["event"], "session:updated");
        // session:updated carries at most the last SESSION_UPDATE_TAIL entries.
        assert_eq!(
            pair[1]["data"]["timeline"].as_array().unwrap().len(),
            (2 + i).min(maestro_protocol::SESSION_UPDATE_TAIL),
            "appends are serialised"
        );
    }
    let mut bounded = serde_json::to_value(&after).unwrap();
    bounded["timeline"] = serde_json::json!(
        after.timeline[after.timeline.len() - maestro_protocol::SESSION_UPDATE_TAIL..]
    );
    assert_eq!(frames.last().unwrap()["data"], bounded);
    ws.assert_quiet().await;
}
