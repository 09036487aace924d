//! Tool approvals (issue 16): requested and decided events, one winning decision, idempotent
//! retries, `allow_session` rules, push-based waiting, and cancellation when the session ends,
//! is deleted or its agent goes silent. Runs on both backends (`MAESTRO_TEST_BACKEND`).

use crate::common;

use std::time::Duration;

use common::{TestServer, WAIT};
use maestro_client::Client;
use maestro_protocol::{
    Approval, ApprovalDecision, ApprovalStatus, CreateApproval, CreateProject, CreateSession,
    DecideApproval, UpdateSession,
};
use reqwest::Method;
use serde_json::{Value, json};

async fn setup(c: &Client) -> (String, String) {
    let p = c
        .create_project(&CreateProject {
            name: Some("approvals".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let s = c
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            name: Some("fix login".into()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    (p, s)
}

fn bash(command: &str) -> CreateApproval {
    CreateApproval {
        agent_tool: "claude-code".into(),
        tool_name: "Bash".into(),
        input: json!({ "command": command, "description": "clean" }),
        summary: None,
        request_id: None,
    }
}

fn decision(d: ApprovalDecision, key: Option<&str>) -> DecideApproval {
    DecideApproval {
        decision: d,
        reason: None,
        request_id: key.map(str::to_owned),
    }
}

async fn pending(c: &Client, project: &str) -> Vec<Approval> {
    let r = c
        .raw(
            Method::GET,
            &format!("/api/approvals?projectId={project}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    serde_json::from_value(r.body).unwrap()
}

/// Waits until a request is parked in `GET /api/approvals/:id/wait` (the `/metrics` gauge), so
/// what follows is the wake-up of a waiter, not a read that came after the decision.
async fn parked(server: &TestServer) {
    let url = format!("{}/metrics", server.base_url());
    for _ in 0..500 {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let waiting = text
            .lines()
            .find_map(|l| l.strip_prefix("maestro_approval_waiters "))
            .and_then(|n| n.trim().parse::<i64>().ok())
            .expect("the approval waiters gauge");
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no approval waiter parked");
}

#[tokio::test]
async fn a_request_is_announced_decided_once_and_the_waiter_wakes() {
    let server = TestServer::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let mut ws = server.ws().await;

    let a = c.create_approval(&s, &bash("rm -rf build/")).await.unwrap();
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert_eq!(a.session_name, "fix login");
    assert_eq!(a.project_id, p);
    assert_eq!(a.summary, "rm -rf build/");
    let ev = ws.expect_events(&["approval:requested"]).await;
    assert_eq!(ev[0]["data"]["id"], json!(a.id));
    assert_eq!(ev[0]["data"]["input"]["command"], "rm -rf build/");
    assert_eq!(
        pending(&c, &p)
            .await
            .iter()
            .map(|x| &x.id)
            .collect::<Vec<_>>(),
        [&a.id]
    );

    // A waiter parked before the decision is woken by it.
    let waiter = {
        let (c, id) = (c.clone(), a.id.clone());
        tokio::spawn(async move { c.wait_approval(&id, 30_000).await.unwrap() })
    };
    parked(&server).await;
    let mut deny = decision(ApprovalDecision::Deny, Some("tap-1"));
    deny.reason = Some("  not on main  ".into());
    let decided = c.decide_approval(&a.id, &deny).await.unwrap();
    assert_eq!(decided.status, ApprovalStatus::Denied);
    assert_eq!(decided.reason.as_deref(), Some("not on main"));
    assert_eq!(decided.decided_by.as_deref(), Some("local"));
    let woke = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert_eq!(woke, decided);
    let ev = ws.expect_events(&["approval:decided"]).await;
    assert_eq!(ev[0]["data"]["status"], "denied");
    assert!(pending(&c, &p).await.is_empty());

    // The same tap again (a retry after a lost answer) gets the same answer ...
    assert_eq!(c.decide_approval(&a.id, &deny).await.unwrap(), decided);
    // ... any other decision gets 409 with the first one, and changes nothing.
    let r = c
        .raw(
            Method::POST,
            &format!("/api/approvals/{}/decision", a.id),
            Some(&json!({ "decision": "allow" })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    assert_eq!(r.body["code"], "APPROVAL_DECIDED");
    assert_eq!(r.body["details"]["status"], "denied");
    assert_eq!(c.wait_approval(&a.id, 0).await.unwrap(), decided);
    ws.assert_quiet().await;

    // The session's history has it.
    let list: Vec<Approval> = serde_json::from_value(
        c.raw(Method::GET, &format!("/api/sessions/{s}/approvals"), None)
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(list, vec![decided]);
}

#[tokio::test]
async fn racing_decisions_have_exactly_one_winner() {
    let server = TestServer::start().await;
    let c = server.client();
    let (_, s) = setup(&c).await;
    for round in 0..20 {
        let a = c
            .create_approval(&s, &bash(&format!("make round-{round}")))
            .await
            .unwrap();
        let mut joins = Vec::new();
        for i in 0..8 {
            let (c, id) = (c.clone(), a.id.clone());
            let d = if i % 2 == 0 {
                ApprovalDecision::Allow
            } else {
                ApprovalDecision::Deny
            };
            joins.push(tokio::spawn(async move {
                let body = json!({ "decision": d, "requestId": format!("tap-{i}") });
                let r = c
                    .raw(
                        Method::POST,
                        &format!("/api/approvals/{id}/decision"),
                        Some(&body),
                    )
                    .await
                    .unwrap();
                (r.status.as_u16(), r.body)
            }));
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
            assert_eq!(l["details"]["status"], winners[0]["status"]);
        }
    }
}

#[tokio::test]
async fn allow_session_answers_identical_requests_of_that_session_only() {
    let server = TestServer::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let other = c
        .create_session(&CreateSession {
            project_id: Some(p.clone()),
            task_ids: Some(vec![]),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let a = c.create_approval(&s, &bash("cargo test")).await.unwrap();
    c.decide_approval(&a.id, &decision(ApprovalDecision::AllowSession, None))
        .await
        .unwrap();

    let mut ws = server.ws().await;
    // Same tool and input, keys in another order: allowed at once, nobody asked.
    let again = c
        .create_approval(
            &s,
            &CreateApproval {
                input: json!({ "description": "clean", "command": "cargo test" }),
                ..bash("cargo test")
            },
        )
        .await
        .unwrap();
    assert_eq!(again.status, ApprovalStatus::Allowed);
    assert_eq!(again.decision, Some(ApprovalDecision::AllowSession));
    assert_eq!(again.decided_by.as_deref(), Some("rule"));
    let ev = ws.expect_events(&["approval:decided"]).await;
    assert_eq!(ev[0]["data"]["id"], json!(again.id));
    // Another input, or another session: asked.
    let different = c.create_approval(&s, &bash("cargo publish")).await.unwrap();
    assert_eq!(different.status, ApprovalStatus::Pending);
    let elsewhere = c
        .create_approval(&other, &bash("cargo test"))
        .await
        .unwrap();
    assert_eq!(elsewhere.status, ApprovalStatus::Pending);
    assert_eq!(pending(&c, &p).await.len(), 2);
}

#[tokio::test]
async fn a_request_id_creates_once() {
    let server = TestServer::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let req = CreateApproval {
        request_id: Some("hook-call-1".into()),
        ..bash("ls")
    };
    let body = serde_json::to_value(&req).unwrap();
    let first = c
        .raw(
            Method::POST,
            &format!("/api/sessions/{s}/approvals"),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(first.status.as_u16(), 201);
    let second = c
        .raw(
            Method::POST,
            &format!("/api/sessions/{s}/approvals"),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(second.status.as_u16(), 200);
    assert_eq!(first.body, second.body);
    assert_eq!(pending(&c, &p).await.len(), 1);
}

#[tokio::test]
async fn ending_or_deleting_a_session_cancels_its_pending_approvals() {
    let server = TestServer::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let a = c.create_approval(&s, &bash("rm -rf /tmp/x")).await.unwrap();
    let waiter = {
        let (c, id) = (c.clone(), a.id.clone());
        tokio::spawn(async move { c.wait_approval(&id, 30_000).await.unwrap() })
    };
    parked(&server).await;
    c.update_session(
        &s,
        &UpdateSession {
            status: Some("completed".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let woke = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
    assert_eq!(woke.status, ApprovalStatus::Cancelled);
    assert_eq!(woke.reason.as_deref(), Some("session ended"));
    assert!(pending(&c, &p).await.is_empty());
    // An ended session asks nothing more.
    let r = c
        .raw(
            Method::POST,
            &format!("/api/sessions/{s}/approvals"),
            Some(&serde_json::to_value(bash("ls")).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);

    // Deleting a session removes its approvals with it.
    let (_, s2) = setup(&c).await;
    let b = c.create_approval(&s2, &bash("ls")).await.unwrap();
    c.delete_session(&s2).await.unwrap();
    let r = c
        .raw(Method::GET, &format!("/api/approvals/{}", b.id), None)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 404);
}

#[tokio::test]
async fn a_silent_agent_has_its_pending_approvals_cancelled() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_ttl_ms = 300;
        c.heartbeat_grace_ms = 100;
        c.sweep_interval_ms = 50;
    })
    .await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let r = c
        .raw(
            Method::POST,
            &format!("/api/sessions/{s}/heartbeat"),
            Some(&json!({ "ttlMs": 300 })),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    let a = c.create_approval(&s, &bash("sleep 1")).await.unwrap();
    // The agent never beats again: the sweep fails the session and cancels the request.
    let ended = c.wait_approval(&a.id, 20_000).await.unwrap();
    assert_eq!(ended.status, ApprovalStatus::Cancelled);
    assert_eq!(
        ended.reason.as_deref(),
        Some("the agent stopped responding")
    );
    assert!(pending(&c, &p).await.is_empty());
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let c = server.client();
    let (p, s) = setup(&c).await;
    let post = |path: String, body: Value| {
        let c = c.clone();
        async move {
            let r = c.raw(Method::POST, &path, Some(&body)).await.unwrap();
            (r.status.as_u16(), r.body)
        }
    };
    let create = format!("/api/sessions/{s}/approvals");
    assert_eq!(
        post(create.clone(), json!({ "agentTool": "x" })).await.0,
        400
    );
    assert_eq!(
        post(
            create.clone(),
            json!({ "agentTool": " ", "toolName": "Bash" })
        )
        .await
        .0,
        400
    );
    let huge = json!({ "agentTool": "x", "toolName": "Write", "input": { "content": "a".repeat(300 * 1024) } });
    assert_eq!(post(create.clone(), huge).await.0, 413);
    assert_eq!(
        post(
            "/api/sessions/nope/approvals".into(),
            json!({ "agentTool": "x", "toolName": "Bash" })
        )
        .await
        .0,
        404
    );
    assert!(pending(&c, &p).await.is_empty());
    let a = c.create_approval(&s, &bash("ls")).await.unwrap();
    let decide = format!("/api/approvals/{}/decision", a.id);
    assert_eq!(
        post(decide.clone(), json!({ "decision": "maybe" })).await.0,
        400
    );
    assert_eq!(
        post(
            "/api/approvals/nope/decision".into(),
            json!({ "decision": "allow" })
        )
        .await
        .0,
        404
    );
    assert_eq!(
        c.wait_approval(&a.id, 0).await.unwrap().status,
        ApprovalStatus::Pending
    );
    let r = c
        .raw(
            Method::GET,
            &format!("/api/approvals/{}/wait?timeout=999999", a.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400);
    // Withdrawing ends it; withdrawing again answers the same.
    let withdrawn = c.cancel_approval(&a.id, "hook timed out").await.unwrap();
    assert_eq!(withdrawn.status, ApprovalStatus::Cancelled);
    assert_eq!(withdrawn.reason.as_deref(), Some("hook timed out"));
    assert_eq!(c.cancel_approval(&a.id, "again").await.unwrap(), withdrawn);
}

/// Deciding needs scope `respond`: a read-only credential is refused (403) and the approval
/// stays pending; a revoked `respond` token is refused (401) too.
#[tokio::test]
async fn a_credential_without_respond_cannot_decide() {
    let server = TestServer::start().await;
    let c = server.client();
    let (_, s) = setup(&c).await;
    let a = c.create_approval(&s, &bash("make deploy")).await.unwrap();
    let token = |scope| {
        let c = c.clone();
        async move {
            c.create_token(&maestro_protocol::CreateToken {
                scope: Some(scope),
                name: Some(format!("{scope}")),
                expires_in_days: None,
            })
            .await
            .unwrap()
        }
    };
    let decide = |t: String| {
        let (url, id) = (server.base_url(), a.id.clone());
        async move {
            Client::new(&url)
                .unwrap()
                .with_token(t)
                .raw(
                    Method::POST,
                    &format!("/api/approvals/{id}/decision"),
                    Some(&json!({ "decision": "allow" })),
                )
                .await
                .unwrap()
                .status
                .as_u16()
        }
    };
    let read = token(maestro_protocol::Scope::Read).await;
    assert_eq!(decide(read.token).await, 403);
    let respond = token(maestro_protocol::Scope::Respond).await;
    c.revoke_token(&respond.id).await.unwrap();
    assert_eq!(decide(respond.token).await, 401);
    assert_eq!(
        c.wait_approval(&a.id, 0).await.unwrap().status,
        ApprovalStatus::Pending,
        "nothing changed"
    );
}
