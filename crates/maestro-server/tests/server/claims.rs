//! Task claims: one winner under contention, fencing tokens that refuse stale writers, renew,
//! release, expiry.

use crate::common;

use std::time::Duration;

use common::{TestServer, api_err};
use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateSession, CreateTask, TaskTimelineRequest, UpdateTask};
use reqwest::Method;
use serde_json::{Value, json};

async fn setup(c: &Client, sessions: usize) -> (String, String, Vec<String>) {
    let p = c
        .create_project(&CreateProject {
            name: Some("claims".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let t = c
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("contended".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let mut ids = Vec::new();
    for _ in 0..sessions {
        ids.push(
            c.create_session(&CreateSession {
                project_id: Some(p.clone()),
                task_ids: Some(vec![]),
                ..Default::default()
            })
            .await
            .unwrap()
            .id,
        );
    }
    (p, t, ids)
}

async fn claim(c: &Client, task: &str, session: &str, ttl: u64) -> (u16, Value) {
    let r = c
        .raw(
            Method::POST,
            &format!("/api/tasks/{task}/claim"),
            Some(&json!({ "sessionId": session, "ttlMs": ttl })),
        )
        .await
        .unwrap();
    (r.status.as_u16(), r.body)
}

async fn lease_call(
    c: &Client,
    task: &str,
    action: &str,
    session: &str,
    token: u64,
    ttl: Option<u64>,
) -> (u16, Value) {
    let mut body = json!({ "sessionId": session, "fencingToken": token });
    if let Some(t) = ttl {
        body["ttlMs"] = json!(t);
    }
    let r = c
        .raw(
            Method::POST,
            &format!("/api/tasks/{task}/claim/{action}"),
            Some(&body),
        )
        .await
        .unwrap();
    (r.status.as_u16(), r.body)
}

/// 50 sessions race for one task, 100 times: exactly one wins each round, the rest get 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_claimants_one_winner_each_round() {
    let server = TestServer::start().await;
    let c = server.api();
    let (_, task, sessions) = setup(c, 50).await;
    let mut last_token = 0;
    for _round in 0..100 {
        let mut joins = Vec::new();
        for s in &sessions {
            let (c, task, s) = (server.client(), task.clone(), s.clone());
            joins.push(tokio::spawn(async move {
                (s.clone(), claim(&c, &task, &s, 60_000).await)
            }));
        }
        let mut winners = Vec::new();
        for j in joins {
            let (s, (status, body)) = j.await.unwrap();
            match status {
                200 => winners.push((s, body)),
                409 => assert_eq!(body["code"], "TASK_CLAIMED", "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one winner per round");
        let (holder, lease) = &winners[0];
        assert_eq!(lease["holder"], holder.as_str());
        let token = lease["fencingToken"].as_u64().unwrap();
        assert!(token > last_token, "tokens only grow");
        last_token = token;
        assert_eq!(
            lease_call(c, &task, "release", holder, token, None).await.0,
            200
        );
    }
}

/// A holder paused past its lease writes with its old token after another session took over:
/// 409, and the task is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_token_is_refused() {
    let server = TestServer::start_with(|c| c.sweep_interval_ms = 50).await;
    let c = server.api();
    let (_, task, s) = setup(c, 2).await;
    let (status, old) = claim(c, &task, &s[0], 200).await;
    assert_eq!(status, 200);
    let old_token = old["fencingToken"].as_u64().unwrap();
    let mut ws = server.ws().await;
    // A is "paused"; its lease lapses and B claims.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, new) = claim(c, &task, &s[1], 60_000).await;
    assert_eq!(status, 200, "{new}");
    assert!(new["fencingToken"].as_u64().unwrap() > old_token);
    let frames = ws.collect_events(2).await;
    let names: Vec<_> = frames
        .iter()
        .map(|f| f["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["task:claim_expired", "task:claimed"]);

    let before = c.get_task(&task).await.unwrap();
    let stale = UpdateTask {
        update_source: Some("session".into()),
        session_id: Some(s[0].clone()),
        session_status: Some("completed".into()),
        fencing_token: Some(old_token),
        ..Default::default()
    };
    let body = api_err(
        c.update_task(&task, &stale).await,
        409,
        "STALE_FENCING_TOKEN",
    );
    assert!(body.message.contains("stale"));
    // Without a token, a non-holder is refused too.
    let untokened = UpdateTask {
        fencing_token: None,
        ..stale.clone()
    };
    api_err(c.update_task(&task, &untokened).await, 409, "TASK_CLAIMED");
    let report = TaskTimelineRequest {
        message: Some("done!".into()),
        session_id: Some(s[0].clone()),
        kind: Some("progress".into()),
        fencing_token: Some(old_token),
    };
    api_err(
        c.task_timeline(&task, &report).await,
        409,
        "STALE_FENCING_TOKEN",
    );
    assert_eq!(c.get_task(&task).await.unwrap(), before, "nothing changed");
    assert!(
        c.get_session(&s[0])
            .await
            .unwrap()
            .timeline
            .iter()
            .all(|e| e.message.as_deref() != Some("done!"))
    );
    ws.assert_quiet().await;

    // The new holder writes with its token.
    let ok = UpdateTask {
        session_id: Some(s[1].clone()),
        fencing_token: new["fencingToken"].as_u64(),
        ..stale
    };
    let t = c.update_task(&task, &ok).await.unwrap();
    assert_eq!(t.task_session_statuses[&s[1]], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_release_get_and_errors() {
    let server = TestServer::start_with(|c| c.sweep_interval_ms = 50).await;
    let c = server.api();
    let (_, task, s) = setup(c, 2).await;
    assert_eq!(
        c.raw(Method::GET, &format!("/api/tasks/{task}/claim"), None)
            .await
            .unwrap()
            .body,
        Value::Null
    );
    let (status, lease) = claim(c, &task, &s[0], 300).await;
    assert_eq!(status, 200);
    let token = lease["fencingToken"].as_u64().unwrap();
    // Same holder again: the same lease.
    assert_eq!(claim(c, &task, &s[0], 300).await, (200, lease.clone()));
    // Renew keeps it past the original expiry.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (status, renewed) = lease_call(c, &task, "renew", &s[0], token, Some(300)).await;
        assert_eq!(status, 200, "{renewed}");
        assert_eq!(renewed["fencingToken"], token);
    }
    let current = c
        .raw(Method::GET, &format!("/api/tasks/{task}/claim"), None)
        .await
        .unwrap()
        .body;
    assert_eq!(current["holder"], s[0].as_str());
    // Only the holder with the right token renews or releases.
    let (status, body) = lease_call(c, &task, "release", &s[1], token, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("TASK_CLAIMED")));
    let (status, body) = lease_call(c, &task, "renew", &s[0], token + 7, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("STALE_FENCING_TOKEN"))
    );
    assert_eq!(
        lease_call(c, &task, "release", &s[0], token, None).await.0,
        200
    );
    let (status, body) = lease_call(c, &task, "release", &s[0], token, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("LEASE_EXPIRED"))
    );
    // Bad input.
    for (body, status) in [
        (json!({}), 400),
        (json!({ "sessionId": s[0], "ttlMs": 5 }), 400),
        (json!({ "sessionId": "sess_nope" }), 404),
    ] {
        let r = c
            .raw(
                Method::POST,
                &format!("/api/tasks/{task}/claim"),
                Some(&body),
            )
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), status, "{body} -> {}", r.body);
    }
    let r = c
        .raw(
            Method::POST,
            "/api/tasks/task_nope/claim",
            Some(&json!({ "sessionId": s[0] })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 404);
    // An expired lease is reaped by the sweep.
    let (_, short) = claim(c, &task, &s[1], 100).await;
    let mut ws = server.ws().await;
    let frames = ws.expect_events(&["task:claim_expired"]).await;
    assert_eq!(frames[0]["data"]["fencingToken"], short["fencingToken"]);
}

/// However a session ends — PATCHed completed, failed or stopped, or deleted — its claims end
/// in the same commit: another session can claim the task at once (not after the lease).
#[tokio::test]
async fn ending_a_session_releases_its_claims() {
    let server = TestServer::start().await;
    let c = server.api();
    for ending in ["completed", "failed", "stopped", "deleted"] {
        let (_, task, sessions) = setup(c, 2).await;
        let (status, _) = claim(c, &task, &sessions[0], 600_000).await;
        assert_eq!(status, 200);
        let (status, body) = claim(c, &task, &sessions[1], 600_000).await;
        assert_eq!(status, 409, "{body}");
        let mut ws = server.ws().await;
        let r = if ending == "deleted" {
            c.raw(
                Method::DELETE,
                &format!("/api/sessions/{}", sessions[0]),
                None,
            )
            .await
            .unwrap()
        } else {
            c.raw(
                Method::PATCH,
                &format!("/api/sessions/{}", sessions[0]),
                Some(&json!({ "status": ending })),
            )
            .await
            .unwrap()
        };
        assert!(r.status.is_success(), "{ending}: {:?}", r.body);
        let mut released = false;
        for _ in 0..10 {
            if ws.next_frame().await["event"] == "task:claim_released" {
                released = true;
                break;
            }
        }
        assert!(released, "{ending}: no task:claim_released");
        let (status, body) = claim(c, &task, &sessions[1], 600_000).await;
        assert_eq!(status, 200, "{ending}: {body}");
    }
}
