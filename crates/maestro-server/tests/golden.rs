//! Golden replay: the request sequence recorded from the reference TypeScript server
//! (`docs/upstream-golden.md`, transcribed in `fixtures/upstream-golden.json`), replayed
//! against Maestro with one legacy WebSocket client connected.
//!
//! For every call we compare the status code and the *shape* of the answer — field names and
//! JSON types, recursively, array lengths included — plus every value that is neither an id
//! nor a timestamp (names, statuses, messages, error codes). Ids are learned from the answers
//! (golden id → our id) and substituted into later paths and bodies, and every later
//! occurrence of a golden id must map to the same id of ours. The WebSocket frames of each
//! call must be the events of upstream's "Frames observed" table, in order.
//!
//! Where Maestro deliberately differs (contract §7), the test asserts Maestro's documented
//! behaviour instead and says why.

mod common;

use std::collections::HashMap;

use axum::http::Method;
use common::{TestServer, WsClient, assert_error_body, assert_same_shape, keys, set};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Fixture {
    calls: Vec<Call>,
    frames: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Call {
    call: u32,
    method: String,
    path: String,
    request: Option<Value>,
    status: u16,
    response: Value,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/upstream-golden.json")).expect("golden fixture")
}

/// Calls not replayed yet.
///
/// TODO(#3): replay mail (calls 19-29, incl. the long-poll 23 released by 24) and team
/// members (call 34). They were not implemented when this replay was written and are left out
/// rather than faked. Replaying them needs the differences `docs/compatibility.md` documents
/// for mail and team members encoded per call (e.g. messages carry `seq`; an inbox read
/// without `projectId` uses the session's project; built-in members' personas and timestamps).
const NOT_YET: &[u32] = &[19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 34];

/// Upstream's WebSocket frames per call ("Frames observed" in the golden document).
fn golden_events(call: u32) -> &'static [&'static str] {
    match call {
        2 => &["project:created"],
        5 | 6 => &["task:created"],
        11 => &["task:updated"],
        12 => &["session:created", "task:session_added"],
        13 => &["session:created"],
        15 => &["session:updated"],
        16 => &["session:updated", "notify:progress"],
        32 => &["task:deleted"],
        33 => &["session:deleted"],
        _ => &[],
    }
}

/// Keys whose numeric values are clock readings.
const TIMESTAMP_KEYS: &[&str] = &[
    "createdAt",
    "updatedAt",
    "startedAt",
    "completedAt",
    "lastActivity",
    "timestamp",
    "addedAt",
    "since",
    "uptime",
];

/// Keys whose values describe the machine the server runs on.
const HOST_KEYS: &[&str] = &["hostname", "platform"];

fn is_generated_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('_').collect();
    parts.len() == 3
        && ["proj", "task", "sess", "evt", "doc", "mail", "tm"].contains(&parts[0])
        && parts[1].len() == 13
        && parts[1].bytes().all(|b| b.is_ascii_digit())
}

/// Golden id → our id, learned from answers.
#[derive(Default)]
struct Ids(HashMap<String, String>);

impl Ids {
    /// Records the ids at matching positions of a golden and an actual value; a golden id seen
    /// before must map to the same id again.
    fn learn(&mut self, at: &str, golden: &Value, actual: &Value) {
        match (golden, actual) {
            (Value::String(g), Value::String(a)) if is_generated_id(g) => {
                let known = self.0.entry(g.clone()).or_insert_with(|| a.clone());
                assert_eq!(
                    known, a,
                    "{at}: golden id {g} was ours {known} before, now {a}"
                );
            }
            (Value::Object(g), Value::Object(a)) => {
                for (k, gv) in g {
                    if let Some(av) = a.get(k) {
                        self.learn(&format!("{at}.{k}"), gv, av);
                    }
                }
            }
            (Value::Array(g), Value::Array(a)) => {
                for (i, (gv, av)) in g.iter().zip(a).enumerate() {
                    self.learn(&format!("{at}[{i}]"), gv, av);
                }
            }
            _ => {}
        }
    }

    fn path(&self, path: &str) -> String {
        let mut out = path.to_owned();
        for (g, a) in &self.0 {
            out = out.replace(g.as_str(), a);
        }
        out
    }

    fn body(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.0.get(s).cloned().unwrap_or_else(|| s.clone())),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.body(v)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), self.body(v))).collect())
            }
            other => other.clone(),
        }
    }
}

/// Asserts equal values everywhere except ids, timestamps and host facts (shapes are
/// checked separately).
fn assert_same_values(what: &str, golden: &Value, actual: &Value) {
    let mut diffs = Vec::new();
    value_diff("$", None, golden, actual, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: values differ from upstream:\n  {}",
        diffs.join("\n  ")
    );
}

fn value_diff(at: &str, key: Option<&str>, g: &Value, a: &Value, diffs: &mut Vec<String>) {
    match (g, a) {
        (Value::Object(go), Value::Object(ao)) => {
            for (k, gv) in go {
                if let Some(av) = ao.get(k) {
                    value_diff(&format!("{at}.{k}"), Some(k), gv, av, diffs);
                }
            }
        }
        (Value::Array(ga), Value::Array(aa)) => {
            for (i, (gv, av)) in ga.iter().zip(aa).enumerate() {
                value_diff(&format!("{at}[{i}]"), key, gv, av, diffs);
            }
        }
        (Value::Number(_), Value::Number(_))
            if key.is_some_and(|k| TIMESTAMP_KEYS.contains(&k)) => {}
        (Value::String(_), Value::String(_)) if key.is_some_and(|k| HOST_KEYS.contains(&k)) => {}
        (Value::String(gs), Value::String(_)) if is_generated_id(gs) => {} // checked by Ids
        _ if g != a => diffs.push(format!("{at}: upstream {g}, ours {a}")),
        _ => {}
    }
}

/// Payloads of the small events, as upstream sent them (first occurrence in the frame log).
fn golden_payload<'a>(fixture: &'a Fixture, event: &str) -> Option<&'a Value> {
    fixture
        .frames
        .iter()
        .find(|f| f["event"] == event)
        .map(|f| &f["data"])
}

async fn replay_call(
    server: &TestServer,
    ws: &mut WsClient,
    fixture: &Fixture,
    ids: &mut Ids,
    call: &Call,
) {
    let what = format!("call {} {} {}", call.call, call.method, call.path);
    let method = Method::from_bytes(call.method.as_bytes()).unwrap();
    let path = ids.path(&call.path);
    let body = call.request.as_ref().map(|b| ids.body(b));
    let res = server
        .api()
        .raw(method, &path, body.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(res.status.as_u16(), call.status, "{what}: {}", res.body);

    if call.call == 14 {
        // Upstream's inline route checks answered `{error, message, code}` without
        // `statusCode` (one of eight error shapes, contract §7.25); Maestro always answers
        // `{error, statusCode, code, message}`.
        assert_error_body(&res.body, 400, "VALIDATION_ERROR");
        assert_eq!(res.body["message"], call.response["message"], "{what}");
        let mut upstream = keys(&call.response);
        upstream.insert("statusCode".into());
        assert_eq!(keys(&res.body), upstream, "{what}");
    } else {
        assert_same_shape(&what, &call.response, &res.body);
        ids.learn(&what, &call.response, &res.body);
        assert_same_values(&what, &call.response, &res.body);
    }

    let frames = ws.expect_events(golden_events(call.call)).await;
    for frame in &frames {
        let event = frame["event"].as_str().unwrap();
        match event {
            // Entity events carry exactly what the REST call answered.
            "project:created" | "task:created" | "task:updated" | "session:created"
            | "session:updated" => {
                assert_eq!(frame["data"], res.body, "{what}: {event} payload")
            }
            _ => {
                let golden = golden_payload(fixture, event)
                    .unwrap_or_else(|| panic!("no golden frame for {event}"));
                assert_same_shape(&format!("{what}: {event} payload"), golden, &frame["data"]);
                ids.learn(&what, golden, &frame["data"]);
            }
        }
    }
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_upstream_calls() {
    let fixture = fixture();
    let server = TestServer::start().await;
    let mut ws = server.ws().await;
    let mut ids = Ids::default();

    let mut replayed = Vec::new();
    for call in fixture.calls.iter().filter(|c| c.call <= 34) {
        if NOT_YET.contains(&call.call) {
            continue;
        }
        replay_call(&server, &mut ws, &fixture, &mut ids, call).await;
        replayed.push(call.call);
    }
    assert_eq!(
        replayed,
        [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 30, 31, 32, 33
        ]
    );
    // Projects, tasks and sessions of the run all mapped to distinct ids of ours.
    let mut ours: Vec<&String> = ids.0.values().collect();
    ours.sort();
    ours.dedup();
    assert_eq!(ours.len(), ids.0.len());
    assert!(ids.0.keys().any(|k| k.starts_with("sess_")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_and_pong_shapes() {
    let fixture = fixture();
    let server = TestServer::start().await;
    let mut ws = server.ws().await;

    // Upstream's pong is `{type, timestamp}`; so is ours (checked inside `assert_quiet`).
    let pong = fixture.frames.iter().find(|f| f["type"] == "pong").unwrap();
    assert_eq!(keys(pong), set(&["type", "timestamp"]));
    ws.assert_quiet().await;

    // Upstream's event envelope is `{type, event, data, timestamp}`; Maestro adds `seq` and
    // `projectId` (resumable per-project sequences) and keeps the rest.
    server
        .api()
        .raw(Method::POST, "/api/projects", Some(&json!({ "name": "x" })))
        .await
        .unwrap();
    let frame = ws.expect_events(&["project:created"]).await.remove(0);
    for golden in fixture.frames.iter().filter(|f| f.get("event").is_some()) {
        let mut expected = keys(golden);
        expected.insert("seq".into());
        expected.insert("projectId".into());
        assert_eq!(keys(&frame), expected, "envelope of {golden}");
    }
    let golden_sub = fixture
        .frames
        .iter()
        .find(|f| f["type"] == "subscribed")
        .unwrap();
    let ours = ws.subscribe(&["sess_x"]).await;
    assert_eq!(keys(&ours), keys(golden_sub));
    let golden_unsub = fixture
        .frames
        .iter()
        .find(|f| f["type"] == "unsubscribed")
        .unwrap();
    let ours = ws.unsubscribe().await;
    assert_eq!(keys(&ours), keys(golden_unsub));
}

/// Call 35 and the extra facts of section 36 that concern implemented routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_differences_and_extra_facts() {
    let fixture = fixture();
    let server = TestServer::start().await;
    let api = server.api();
    let mut ws = server.ws().await;

    // Call 35: upstream answered an unknown route with Express's HTML page; Maestro answers
    // JSON 404 NOT_FOUND (contract §7.25).
    let c35 = fixture.calls.iter().find(|c| c.call == 35).unwrap();
    assert!(c35.response.as_str().unwrap().contains("Cannot GET"));
    let r = api.raw(Method::GET, &c35.path, None).await.unwrap();
    assert_eq!(r.status.as_u16(), c35.status);
    assert_error_body(&r.body, 404, "NOT_FOUND");

    // Malformed JSON: upstream 500 INTERNAL_ERROR; Maestro 400 VALIDATION_ERROR (§7.25).
    let r = server
        .raw("POST", "/api/projects", Some("application/json"), "{bad")
        .await;
    assert_eq!(r.status, 400);
    assert_error_body(&r.json(), 400, "VALIDATION_ERROR");
    ws.assert_quiet().await;

    // Same as upstream.
    let r = api
        .raw(
            Method::POST,
            "/api/projects",
            Some(&json!({ "name": "nowd" })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 201);
    assert_eq!(
        (&r.body["workingDir"], &r.body["description"]),
        (&json!(""), &json!(""))
    );
    let project = r.body["id"].as_str().unwrap().to_owned();
    ws.expect_events(&["project:created"]).await;
    let r = api
        .raw(
            Method::POST,
            "/api/projects",
            Some(&json!({ "name": "  " })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(
        r.body,
        json!({"error":true,"statusCode":400,"code":"VALIDATION_ERROR","message":"Project name is required"})
    );
    let r = api
        .raw(
            Method::PATCH,
            "/api/tasks/task_nope",
            Some(&json!({ "status": "completed" })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 404);
    assert_eq!(
        r.body,
        json!({"error":true,"statusCode":404,"code":"NOT_FOUND","message":"Task with id 'task_nope' not found"})
    );
    let r = api
        .raw(
            Method::POST,
            "/api/tasks",
            Some(&json!({ "projectId": project, "title": "t", "bogusField": 1 })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 201);
    assert!(r.body.get("bogusField").is_none());
    let task = r.body["id"].as_str().unwrap().to_owned();
    ws.expect_events(&["task:created"]).await;

    // PATCH {"status":"nonsense"}: upstream stored it (200); Maestro validates (§7.8).
    let r = api
        .raw(
            Method::PATCH,
            &format!("/api/tasks/{task}"),
            Some(&json!({ "status": "nonsense" })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    assert_error_body(&r.body, 400, "VALIDATION_ERROR");
    ws.assert_quiet().await;

    // GET /api/tasks without a filter: all tasks of all projects, as upstream.
    let r = api.raw(Method::GET, "/api/tasks", None).await.unwrap();
    assert_eq!(r.body.as_array().map(Vec::len), Some(1));

    // ?active=true: upstream dropped only `completed`; Maestro keeps spawning/idle/working
    // (§7.15, the CLI's documented meaning).
    for status in ["working", "completed", "failed", "stopped"] {
        let r = api
            .raw(
                Method::POST,
                "/api/sessions",
                Some(&json!({ "projectId": project, "taskIds": [], "status": status })),
            )
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), 201);
    }
    ws.expect_events(&[
        "session:created",
        "session:created",
        "session:created",
        "session:created",
    ])
    .await;
    let r = api
        .raw(Method::GET, "/api/sessions?active=true", None)
        .await
        .unwrap();
    let statuses: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["working"]);
    ws.assert_quiet().await;
}
