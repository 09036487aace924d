//! Several `maestro serve` processes sharing one `redis-server` (issue 4): shared state,
//! exactly-once ordered delivery on every instance, no lost updates under contention, and
//! recovery from a Redis restart in the middle of a write load.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use maestro_client::{Client, TaskQuery};
use maestro_protocol::{
    AppendTimeline, CreateProject, CreateSession, CreateTask, SendMail, UpdateTask, WaitMail,
};
use maestro_testkit::process::MaestroProcess;
use maestro_testkit::redis::RedisServer;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server on `redis`; every instance in `dir` shares the store and so its hash key.
fn instance(dir: &Path, name: &str, redis: &RedisServer) -> MaestroProcess {
    let key = dir.join("hash-key");
    MaestroProcess::start(
        Path::new(env!("CARGO_BIN_EXE_maestro")),
        &dir.join(name),
        &[
            ("REDIS_URL", &redis.url()),
            ("HASH_KEY_FILE", key.to_str().unwrap()),
        ],
    )
}

async fn ws(p: &MaestroProcess) -> Ws {
    tokio_tungstenite::connect_async(p.ws_url())
        .await
        .unwrap()
        .0
}

async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("websocket ended: {other:?}"),
        }
    }
}

/// Reads frames until a `pong`; returns the event frames before it.
async fn drain(ws: &mut Ws) -> Vec<Value> {
    ws.send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .unwrap();
    let mut frames = Vec::new();
    loop {
        let f = next_json(ws, Duration::from_secs(10)).await.expect("pong");
        if f["type"] == "pong" {
            return frames;
        }
        frames.push(f);
    }
}

async fn project(c: &Client) -> String {
    c.create_project(&CreateProject {
        name: Some("cluster".into()),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_state_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (a, b, c) = (
        instance(dir.path(), "a", &redis),
        instance(dir.path(), "b", &redis),
        instance(dir.path(), "c", &redis),
    );
    let (ca, cb, cc) = (
        Client::new(a.url()).unwrap(),
        Client::new(b.url()).unwrap(),
        Client::new(c.url()).unwrap(),
    );
    let mut ws_c = ws(&c).await;

    let p = project(&ca).await;
    let task = ca
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("shared".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    for client in [&cb, &cc] {
        let tasks = client
            .list_tasks(&TaskQuery {
                project_id: Some(p.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(tasks.iter().map(|t| &t.id).collect::<Vec<_>>(), [&task.id]);
    }

    // C's WebSocket got A's events exactly once, in order.
    let frames = drain(&mut ws_c).await;
    let names: Vec<_> = frames
        .iter()
        .map(|f| f["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["project:created", "task:created"]);
    assert_eq!(frames[1]["seq"], 1);
    assert_eq!(frames[1]["data"]["id"], task.id.as_str());

    // A long-poll on B is woken by a send on A.
    let s = ca
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap();
    let waiter = {
        let (cb, p, sid) = (cb.clone(), p.clone(), s.id.clone());
        tokio::spawn(async move {
            cb.wait_and_ack_mail(
                &sid,
                &WaitMail {
                    project_id: Some(p),
                    timeout: Some(20_000),
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // let it park on B
    ca.send_mail(&SendMail {
        project_id: p.clone(),
        from_session_id: "user".into(),
        to_session_id: Some(s.id.clone()),
        kind: "directive".into(),
        subject: "from A".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken")
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].subject, "from A");

    // And C saw everything once, gap-free.
    let frames = drain(&mut ws_c).await;
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["projectId"] == p.as_str())
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (2..2 + seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_contend_without_losing_updates() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (a, b) = (
        instance(dir.path(), "a", &redis),
        instance(dir.path(), "b", &redis),
    );
    let (ca, cb) = (Client::new(a.url()).unwrap(), Client::new(b.url()).unwrap());
    let p = project(&ca).await;
    let task = ca
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("hot".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        sessions.push(
            ca.create_session(&CreateSession {
                project_id: Some(p.clone()),
                task_ids: Some(vec![task.id.clone()]),
                ..Default::default()
            })
            .await
            .unwrap()
            .id,
        );
    }
    let mut ws_a = ws(&a).await;
    let mut ws_b = ws(&b).await;
    const ROUNDS: usize = 40;
    let statuses = ["working", "blocked", "completed"];
    let mut joins = Vec::new();
    for (i, client) in [ca.clone(), cb.clone()].into_iter().enumerate() {
        let (task_id, me, shared, p) = (
            task.id.clone(),
            sessions[i].clone(),
            sessions[0].clone(),
            p.clone(),
        );
        joins.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                client
                    .update_task(
                        &task_id,
                        &UpdateTask {
                            update_source: Some("session".into()),
                            session_id: Some(me.clone()),
                            session_status: Some(statuses[r % 3].into()),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                client
                    .append_timeline(
                        &shared,
                        &AppendTimeline {
                            message: Some(format!("{me} {r}")),
                            kind: Some("milestone".into()),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
            }
            let _ = p;
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    let t = ca.get_task(&task.id).await.unwrap();
    let last = statuses[(ROUNDS - 1) % 3];
    assert_eq!(t.task_session_statuses[&sessions[0]], last);
    assert_eq!(t.task_session_statuses[&sessions[1]], last);
    let s = cb.get_session(&sessions[0]).await.unwrap();
    let entries: HashSet<_> = s
        .timeline
        .iter()
        .filter(|e| e.kind == "milestone")
        .filter_map(|e| e.message.clone())
        .collect();
    assert_eq!(entries.len(), 2 * ROUNDS, "timeline appends lost");

    // Both instances delivered the same gap-free sequence.
    for ws in [&mut ws_a, &mut ws_b] {
        let frames = drain(ws).await;
        let seqs: Vec<u64> = frames
            .iter()
            .filter(|f| f["projectId"] == p.as_str())
            .map(|f| f["seq"].as_u64().unwrap())
            .collect();
        assert!(!seqs.is_empty());
        let first = seqs[0];
        assert_eq!(
            seqs,
            (first..first + seqs.len() as u64).collect::<Vec<_>>(),
            "gap or duplicate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_during_writes() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (a, b) = (
        instance(dir.path(), "a", &redis),
        instance(dir.path(), "b", &redis),
    );
    let (ca, cb) = (Client::new(a.url()).unwrap(), Client::new(b.url()).unwrap());
    let p = project(&ca).await;
    let mut ws_b = ws(&b).await;

    let acked = Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
    let statuses = Arc::new(tokio::sync::Mutex::new(Vec::<u16>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, client) in [ca.clone(), cb.clone(), ca.clone(), cb.clone()]
        .into_iter()
        .enumerate()
    {
        let (acked, statuses, stop, p) = (acked.clone(), statuses.clone(), stop.clone(), p.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let req = CreateTask {
                    project_id: Some(p.clone()),
                    title: Some(format!("w{w} {i}")),
                    ..Default::default()
                };
                let started = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(10), client.create_task(&req))
                    .await
                    .expect("a write hung past 10 s");
                assert!(started.elapsed() < Duration::from_secs(10));
                match r {
                    Ok(t) => acked.lock().await.push(t.id),
                    Err(e) => {
                        let status = e.status().map(|s| s.as_u16()).unwrap_or(0);
                        statuses.lock().await.push(status);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let wait_acks = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.lock().await.len() < n {
                assert!(Instant::now() < deadline, "writes did not progress");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_acks(100).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Degraded, not dead.
    let ready = ca.raw(reqwest::Method::GET, "/ready", None).await.unwrap();
    assert_eq!(ready.status.as_u16(), 503);
    assert_eq!(ready.body["status"], "degraded");
    assert_eq!(ca.health().await.unwrap().status, "ok");
    let before_restart = acked.lock().await.len();
    redis.restart();
    wait_acks(before_restart + 100).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }

    let failures = statuses.lock().await.clone();
    assert!(!failures.is_empty(), "the outage was not noticed");
    assert!(
        failures.iter().all(|s| *s == 503),
        "failed writes must be 503: {failures:?}"
    );
    let acked = acked.lock().await.clone();
    for client in [&ca, &cb] {
        let tasks = client
            .list_tasks(&TaskQuery {
                project_id: Some(p.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: HashSet<_> = tasks.iter().map(|t| t.id.clone()).collect();
        for id in &acked {
            assert!(ids.contains(id), "acknowledged task {id} lost");
        }
    }
    // Delivery resumed on B for writes made through A, with no gap.
    let t = ca
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("after".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // B's subscriber may still be reconnecting (back-off of at most 2 s): wait for the event.
    let mut frames = Vec::new();
    loop {
        let f = next_json(&mut ws_b, Duration::from_secs(10))
            .await
            .expect("B did not get A's event");
        let done = f["data"]["id"] == t.id.as_str();
        frames.push(f);
        if done {
            break;
        }
    }
    frames.extend(drain(&mut ws_b).await);
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f["projectId"] == p.as_str())
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "B's sequence has a gap"
    );
}

/// 50 claimants spread over two instances race for one task, 100 times: one winner a round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_have_one_winner_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (a, b) = (
        instance(dir.path(), "a", &redis),
        instance(dir.path(), "b", &redis),
    );
    let clients = [Client::new(a.url()).unwrap(), Client::new(b.url()).unwrap()];
    let p = project(&clients[0]).await;
    let task = clients[0]
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("prize".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(
            clients[0]
                .create_session(&CreateSession {
                    project_id: Some(p.clone()),
                    task_ids: Some(vec![]),
                    ..Default::default()
                })
                .await
                .unwrap()
                .id,
        );
    }
    for _round in 0..100 {
        let mut joins = Vec::new();
        for (i, s) in sessions.iter().enumerate() {
            let (c, task, s) = (clients[i % 2].clone(), task.clone(), s.clone());
            joins.push(tokio::spawn(async move {
                let r = c
                    .raw(
                        reqwest::Method::POST,
                        &format!("/api/tasks/{task}/claim"),
                        Some(&json!({ "sessionId": s })),
                    )
                    .await
                    .unwrap();
                (s, r.status.as_u16(), r.body)
            }));
        }
        let mut winners = Vec::new();
        for j in joins {
            let (s, status, body) = j.await.unwrap();
            match status {
                200 => winners.push((s, body)),
                409 => {}
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one winner per round");
        let (s, lease) = &winners[0];
        let r = clients[1]
            .raw(
                reqwest::Method::POST,
                &format!("/api/tasks/{task}/claim/release"),
                Some(&json!({ "sessionId": s, "fencingToken": lease["fencingToken"] })),
            )
            .await
            .unwrap();
        assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    }
}

/// A revoked token fails on its very next request on every instance, and the legacy WebSocket
/// it opened on another instance is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_instance_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (a, b) = (
        instance(dir.path(), "a", &redis),
        instance(dir.path(), "b", &redis),
    );
    let created: Value = reqwest::Client::new()
        .post(format!("{}/api/auth/tokens", a.url()))
        .json(&json!({ "scope": "read", "name": "phone" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    // As tunnel traffic reaches instance b: from loopback with cloudflared's header.
    let remote_get = |url: String| {
        let token = token.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .header("cf-connecting-ip", "203.0.113.5")
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(remote_get(format!("{}/api/projects", b.url())).await, 200);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(b.ws_url())
            .unwrap();
    req.headers_mut()
        .insert("cf-connecting-ip", "203.0.113.5".parse().unwrap());
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    let status = reqwest::Client::new()
        .delete(format!("{}/api/auth/tokens/{id}", a.url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert_eq!(remote_get(format!("{}/api/projects", b.url())).await, 401);
    // The socket on b closes (events before the close are fine).
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the socket on the other instance stayed open")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
}

/// Two instances on one Redis, a phone on each: every approval gets exactly one decision, the
/// loser sees the winner's, 30 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_decisions_have_one_winner_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (a, b) = (
        instance(dir.path(), "a", &redis),
        instance(dir.path(), "b", &redis),
    );
    let clients = [Client::new(a.url()).unwrap(), Client::new(b.url()).unwrap()];
    let p = project(&clients[0]).await;
    let s = clients[0]
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    for round in 0..30 {
        let asked = clients[round % 2]
            .raw(
                reqwest::Method::POST,
                &format!("/api/sessions/{s}/approvals"),
                Some(&json!({"agentTool": "codex", "toolName": "Bash", "input": {"command": format!("step {round}")}})),
            )
            .await
            .unwrap();
        assert_eq!(asked.status.as_u16(), 201, "{}", asked.body);
        let id = asked.body["id"].as_str().unwrap().to_owned();
        let mut joins = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            for k in 0..3 {
                let (c, id) = (c.clone(), id.clone());
                let decision = if (i + k) % 2 == 0 { "allow" } else { "deny" };
                joins.push(tokio::spawn(async move {
                    let r = c
                        .raw(
                            reqwest::Method::POST,
                            &format!("/api/approvals/{id}/decision"),
                            Some(&json!({ "decision": decision, "requestId": format!("{i}-{k}") })),
                        )
                        .await
                        .unwrap();
                    (r.status.as_u16(), r.body)
                }));
            }
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for j in joins {
            match j.await.unwrap() {
                (200, body) => winners.push(body),
                (409, body) => losers.push(body),
                (status, body) => panic!("unexpected {status}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        for l in &losers {
            assert_eq!(
                l["details"]["decisionRequestId"],
                winners[0]["decisionRequestId"]
            );
        }
    }
}
