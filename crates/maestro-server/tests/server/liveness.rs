//! Presence on the session resource, `session:presence` / `session:stalled` events, revival of
//! a session declared dead, heartbeats over the legacy WebSocket, and bounced mail.

use crate::common;

use std::time::Duration;

use common::TestServer;
use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateSession, SendMail, SentMail, UpdateSession};
use reqwest::Method;
use serde_json::json;

async fn session(c: &Client) -> (String, String) {
    let p = c
        .create_project(&CreateProject {
            name: Some("p".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let s = c
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![]),
            status: Some("working".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    (p, s)
}

async fn beat(c: &Client, s: &str, progress: bool) -> (u16, serde_json::Value) {
    let r = c
        .raw(
            Method::POST,
            &format!("/api/sessions/{s}/heartbeat"),
            Some(&json!({ "progress": progress })),
        )
        .await
        .unwrap();
    (r.status.as_u16(), r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stall_death_and_revival() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_ttl_ms = 400;
        c.heartbeat_grace_ms = 100;
        c.stall_after_ms = 300;
        c.sweep_interval_ms = 30;
    })
    .await;
    let c = server.api();
    let (_, s) = session(c).await;
    // Never beaten: no presence, never failed.
    assert_eq!(c.get_session(&s).await.unwrap().online, None);
    let mut ws = server.ws().await;

    let (status, p) = beat(c, &s, true).await;
    assert_eq!(status, 200);
    assert_eq!(p["online"], true);
    ws.expect_events(&["session:presence"]).await;
    let got = c.get_session(&s).await.unwrap();
    assert_eq!((got.online, got.stalled), (Some(true), Some(false)));
    assert!(got.last_seen.is_some() && got.last_progress.is_some());

    // Beating without progress: stalled (an event, not a failure).
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        beat(c, &s, false).await;
    }
    let frames = ws
        .expect_events(&["session:stalled", "session:presence"])
        .await;
    assert_eq!(frames[1]["data"]["stalled"], true);
    assert_eq!(c.get_session(&s).await.unwrap().status, "working");
    // Progress clears it.
    beat(c, &s, true).await;
    let f = ws.expect_events(&["session:presence"]).await;
    assert_eq!(f[0]["data"]["stalled"], false);

    // Silence: (stalled again on the way, since stalling is quicker than dying) then failed, once.
    let mut frames = Vec::new();
    while frames
        .last()
        .is_none_or(|f: &serde_json::Value| f["event"] != "notify:session_failed")
    {
        frames.push(ws.next_frame().await);
    }
    frames.push(ws.next_frame().await);
    let names: Vec<_> = frames
        .iter()
        .map(|f| f["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names[names.len() - 4..],
        [
            "session:appended",
            "session:updated",
            "notify:session_failed",
            "session:presence"
        ]
    );
    let appended = &frames[frames.len() - 4]["data"]["timeline"];
    assert_eq!(appended[0]["type"], "error", "{appended}");
    let failed = &frames[frames.len() - 3];
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["failureReason"], "agent_disconnected");
    assert_eq!(frames.last().unwrap()["data"]["online"], false);
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws.assert_quiet().await;

    // The agent was only partitioned: its next beat brings the session back.
    let (status, _) = beat(c, &s, true).await;
    assert_eq!(status, 200);
    let frames = ws
        .expect_events(&["session:appended", "session:updated", "session:presence"])
        .await;
    assert_eq!(frames[1]["data"]["status"], "working");
    assert_eq!(c.get_session(&s).await.unwrap().failure_reason, None);

    // A session that ended normally cannot beat.
    c.update_session(
        &s,
        &UpdateSession {
            status: Some("completed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (status, body) = beat(c, &s, true).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("CONFLICT")));
    let (status, _) = beat(c, "sess_unknown", true).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_over_the_legacy_websocket() {
    let server = TestServer::start().await;
    let (_, s) = session(server.api()).await;
    let mut ws = server.ws().await;
    ws.send_json(&json!({ "type": "heartbeat" })).await; // upstream's: ignored
    ws.send_json(&json!({ "type": "heartbeat", "sessionId": s }))
        .await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        let f = ws.next_frame().await;
        replies.push(f);
    }
    let reply = replies
        .iter()
        .find(|f| f["type"] == "heartbeat")
        .expect("heartbeat reply");
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["presence"]["online"], true);
    assert!(replies.iter().any(|f| f["event"] == "session:presence"));
    assert_eq!(
        server.api().get_session(&s).await.unwrap().online,
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_an_ended_session_bounces() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, sender) = session(c).await;
    let dead = c
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    c.update_session(
        &dead,
        &UpdateSession {
            status: Some("failed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let SentMail::One(sent) = c
        .send_mail(&SendMail {
            project_id: p.clone(),
            from_session_id: sender.clone(),
            to_session_id: Some(dead.clone()),
            kind: "query".into(),
            subject: "still there?".into(),
            ..Default::default()
        })
        .await
        .unwrap()
    else {
        panic!("one message");
    };
    let inbox = c.inbox(&sender, &[("projectId", &p)]).await.unwrap();
    assert_eq!(inbox.len(), 1);
    let bounce = &inbox[0];
    assert_eq!(bounce.kind, "notification");
    assert_eq!(bounce.subject, "Undeliverable: still there?");
    assert_eq!(bounce.reply_to_mail_id.as_deref(), Some(sent.id.as_str()));
    assert_eq!(bounce.body["bounced"], true);
}
