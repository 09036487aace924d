//! Issue 15: appending to a session costs O(1) on the wire, not O(session).
//!
//! Every append (timeline entry, raw event, doc) sends the new items as `session:appended`,
//! then a `session:updated` whose payload is bounded (the last `SESSION_UPDATE_TAIL` timeline
//! entries and events, docs without content). The REST answers stay complete, and
//! `GET /api/sessions/:id/timeline` pages through a long timeline.

use crate::common;

use common::{TestServer, api_err, to_json};
use maestro_client::Client;
use maestro_protocol::{
    AddDoc, AppendSessionEvent, AppendTimeline, CreateProject, CreateSession, CreateTask,
    SESSION_UPDATE_TAIL, Session, UpdateSession,
};
use serde_json::{Value, json};

async fn setup(api: &Client) -> (String, String, Session) {
    let p = api
        .create_project(&CreateProject {
            name: Some("P".into()),
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
            name: Some("S".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    (p.id, t.id, s)
}

/// A timeline entry of a fixed size (about 200 bytes of message).
fn entry(i: usize) -> AppendTimeline {
    AppendTimeline {
        message: Some(format!("step {i:05} {}", "x".repeat(190))),
        kind: Some("milestone".into()),
        task_id: None,
        metadata: None,
    }
}

/// The size of a frame as it went over the wire (its JSON text).
fn size(frame: &Value) -> usize {
    frame.to_string().len()
}

/// Generous bounds: a `session:appended` of one ~200-byte entry, and a `session:updated` of
/// `SESSION_UPDATE_TAIL` of them plus the session's other fields.
const APPENDED_MAX: usize = 2_000;
const UPDATED_MAX: usize = 4_000 + SESSION_UPDATE_TAIL * 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_send_the_new_items_and_a_bounded_update() {
    let server = TestServer::start().await;
    let api = server.client();
    let (p, _t, s) = setup(&api).await;
    let mut ws = server.ws().await;

    let mut last_updated = Value::Null;
    for i in 0..300 {
        let after = api.append_timeline(&s.id, &entry(i)).await.unwrap();
        let f = ws
            .expect_events(&["session:appended", "session:updated"])
            .await;
        let appended = &f[0]["data"];
        assert!(
            size(&f[0]) < APPENDED_MAX,
            "session:appended #{i} is {} bytes",
            size(&f[0])
        );
        assert!(
            size(&f[1]) < UPDATED_MAX,
            "session:updated #{i} is {} bytes",
            size(&f[1])
        );
        // Only the new entry, and the totals after the change.
        assert_eq!(appended["sessionId"], json!(s.id));
        assert_eq!(appended["projectId"], json!(p));
        assert_eq!(
            appended["timeline"],
            json!([after.timeline.last().unwrap()])
        );
        assert_eq!(appended["events"], json!([]));
        assert_eq!(appended["docs"], json!([]));
        assert_eq!(appended["status"], json!(after.status));
        assert_eq!(appended["lastActivity"], json!(after.last_activity));
        assert_eq!(appended["timelineLength"], json!(after.timeline.len()));
        assert_eq!(appended["eventsLength"], json!(0));
        assert_eq!(appended["docsLength"], json!(0));
        // The REST answer stays the whole session.
        assert_eq!(after.timeline.len(), 2 + i + 1);
        last_updated = f[1]["data"].clone();
    }
    // The last session:updated: the session with the latest SESSION_UPDATE_TAIL entries.
    let full = api.get_session(&s.id).await.unwrap();
    assert_eq!(full.timeline.len(), 302);
    let mut expected = to_json(&full);
    expected["timeline"] = json!(full.timeline[302 - SESSION_UPDATE_TAIL..]);
    assert_eq!(last_updated, expected);

    // Raw events: the same, with `events`.
    for i in 0..(SESSION_UPDATE_TAIL + 10) {
        let after = api
            .append_session_event(
                &s.id,
                &AppendSessionEvent {
                    kind: Some("file_modified".into()),
                    data: Some(json!({ "file": format!("src/{i}.rs") })),
                },
            )
            .await
            .unwrap();
        let f = ws
            .expect_events(&["session:appended", "session:updated"])
            .await;
        assert_eq!(
            f[0]["data"]["events"],
            json!([after.events.last().unwrap()])
        );
        assert_eq!(f[0]["data"]["timeline"], json!([]));
        assert_eq!(f[0]["data"]["eventsLength"], json!(i + 1));
        let tail = &after.events[after.events.len().saturating_sub(SESSION_UPDATE_TAIL)..];
        assert_eq!(f[1]["data"]["events"], json!(tail));
        assert_eq!(
            f[1]["data"]["timeline"].as_array().unwrap().len(),
            SESSION_UPDATE_TAIL
        );
    }

    // Docs: the appended event has the doc with its content; session:updated has no content.
    let content = "# Plan\n".repeat(2_000);
    let after = api
        .add_session_doc(
            &s.id,
            &AddDoc {
                title: Some("Plan".into()),
                file_path: Some("/docs/plan.md".into()),
                content: Some(content.clone()),
                task_id: None,
            },
        )
        .await
        .unwrap();
    let f = ws
        .expect_events(&["session:appended", "session:updated"])
        .await;
    let doc = after.docs.last().unwrap();
    assert_eq!(doc.content.as_deref(), Some(content.as_str()));
    assert_eq!(f[0]["data"]["docs"], json!([doc]));
    assert_eq!(
        f[0]["data"]["timeline"],
        json!([after.timeline.last().unwrap()])
    );
    assert_eq!(f[0]["data"]["docsLength"], json!(1));
    let mut bare = to_json(doc);
    bare.as_object_mut().unwrap().remove("content");
    assert_eq!(f[1]["data"]["docs"], json!([bare]));
    assert!(size(&f[1]) < UPDATED_MAX, "{} bytes", size(&f[1]));
    assert_eq!(api.session_docs(&s.id).await.unwrap(), after.docs);

    // A change that appends nothing: only the bounded session:updated.
    api.update_session(
        &s.id,
        &UpdateSession {
            status: Some("working".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let f = ws.expect_events(&["session:updated"]).await;
    assert!(size(&f[0]) < UPDATED_MAX, "{} bytes", size(&f[0]));
    assert_eq!(f[0]["data"]["status"], "working");
    ws.assert_quiet().await;
}

/// The events of N appends (what the journal stores and every client receives) grow linearly
/// in N: twice the appends, about twice the bytes. Resending the whole session each time made
/// it about four times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_bytes_grow_linearly_with_appends() {
    let server = TestServer::start().await;
    let api = server.client();
    let (_p, _t, s) = setup(&api).await;
    let mut ws = server.ws().await;

    let mut bytes = 0usize;
    let mut at_half = 0usize;
    for i in 0..300 {
        api.append_timeline(&s.id, &entry(i)).await.unwrap();
        // What this append emitted: the frames up to the pong (an event still queued behind
        // the pong counts with the next append).
        ws.send_json(&json!({ "type": "ping" })).await;
        loop {
            let frame = ws.next_frame().await;
            if frame["type"] == "pong" {
                break;
            }
            bytes += size(&frame);
        }
        if i + 1 == 150 {
            at_half = bytes;
        }
    }
    let ratio = bytes as f64 / at_half as f64;
    assert!(
        ratio < 2.5,
        "150 appends: {at_half} bytes of events; 300 appends: {bytes} (x{ratio:.2})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_pages_back() {
    let server = TestServer::start().await;
    let api = server.client();
    let (_p, _t, s) = setup(&api).await;
    for i in 0..248 {
        api.append_timeline(&s.id, &entry(i)).await.unwrap();
    }
    let full = api.get_session(&s.id).await.unwrap().timeline;
    assert_eq!(full.len(), 250);

    // Default: the latest 100.
    let page = api.session_timeline(&s.id, None, None).await.unwrap();
    assert_eq!((page.total, page.start), (250, 150));
    assert_eq!(page.items, full[150..]);
    // Back from there.
    let page = api.session_timeline(&s.id, Some(150), None).await.unwrap();
    assert_eq!((page.total, page.start), (250, 50));
    assert_eq!(page.items, full[50..150]);
    let page = api
        .session_timeline(&s.id, Some(50), Some(100))
        .await
        .unwrap();
    assert_eq!((page.total, page.start), (250, 0));
    assert_eq!(page.items, full[..50]);
    let page = api.session_timeline(&s.id, Some(0), None).await.unwrap();
    assert_eq!((page.total, page.start), (250, 0));
    assert!(page.items.is_empty());
    // Small and large limits; `before` past the end is the end.
    let page = api.session_timeline(&s.id, Some(7), Some(3)).await.unwrap();
    assert_eq!(page.start, 4);
    assert_eq!(page.items, full[4..7]);
    let page = api
        .session_timeline(&s.id, Some(9999), Some(500))
        .await
        .unwrap();
    assert_eq!((page.total, page.start), (250, 0));
    assert_eq!(page.items, full);

    // Bad input.
    api_err(
        api.session_timeline(&s.id, None, Some(501)).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        api.session_timeline(&s.id, None, Some(0)).await,
        400,
        "VALIDATION_ERROR",
    );
    for query in ["before=-1", "before=x", "limit=1.5"] {
        let r = common::raw_http(
            server.addr(),
            "GET",
            &format!("/api/sessions/{}/timeline?{query}", s.id),
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(r.status, 400, "{query}: {}", r.json());
        common::assert_error_body(&r.json(), 400, "VALIDATION_ERROR");
    }
    api_err(
        api.session_timeline("sess_nope", None, None).await,
        404,
        "NOT_FOUND",
    );
}
