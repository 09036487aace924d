//! Mail: send (direct, broadcast, to a team member), inbox, long-poll wait with and without
//! read cursors, get, delete, and their errors.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, api_err, assert_error_body};
use maestro_client::Client;
use maestro_protocol::{
    AckMail, CreateProject, CreateSession, CreateTask, MailMessage, SendMail, SentMail,
    SpawnRequest, WaitMail,
};
use serde_json::json;

async fn project_with_sessions(c: &Client, n: usize) -> (String, Vec<String>) {
    let p = c
        .create_project(&CreateProject {
            name: Some("mail".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for i in 0..n {
        let s = c
            .create_session(&CreateSession {
                project_id: Some(p.id.clone()),
                task_ids: Some(vec![]),
                name: Some(format!("s{i}")),
                ..Default::default()
            })
            .await
            .unwrap();
        sessions.push(s.id);
    }
    (p.id, sessions)
}

fn mail(project: &str, from: &str, to: Option<&str>, subject: &str) -> SendMail {
    SendMail {
        project_id: project.into(),
        from_session_id: from.into(),
        kind: "directive".into(),
        subject: subject.into(),
        to_session_id: to.map(str::to_owned),
        ..Default::default()
    }
}

fn one(sent: SentMail) -> MailMessage {
    match sent {
        SentMail::One(m) => m,
        SentMail::Many(v) => panic!("expected one message, got {}", v.len()),
    }
}

/// The body of `POST /api/mail/wait/:id` (wait for unread mail and acknowledge it).
fn take(project: Option<&str>, timeout: u64) -> WaitMail {
    WaitMail {
        project_id: project.map(str::to_owned),
        timeout: Some(timeout),
    }
}

async fn waiters(server: &TestServer) -> i64 {
    let text = reqwest::get(format!("{}/metrics", server.base_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("maestro_mail_waiters "))
        .expect("waiters gauge")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_inbox_get_delete_with_events() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 2).await;
    let mut ws = server.ws().await;

    let m = one(c
        .send_mail(&mail(&p, &s[0], Some(&s[1]), "hello"))
        .await
        .unwrap());
    assert_eq!(m.to_session_id.as_deref(), Some(s[1].as_str()));
    assert_eq!(m.body, json!({}));
    assert!(m.id.starts_with("mail_"));
    let frames = ws.expect_events(&["mail:received"]).await;
    assert_eq!(frames[0]["data"]["id"], m.id.as_str());

    // Broadcast: everyone in the project but the sender.
    let b = one(c.send_mail(&mail(&p, &s[0], None, "all")).await.unwrap());
    assert_eq!(b.to_session_id, None);
    let inbox1 = c.inbox(&s[1], &[("projectId", &p)]).await.unwrap();
    assert_eq!(
        inbox1.iter().map(|m| &m.subject).collect::<Vec<_>>(),
        ["hello", "all"]
    );
    let inbox0 = c.inbox(&s[0], &[("projectId", &p)]).await.unwrap();
    assert!(
        inbox0.is_empty(),
        "the sender does not get its own broadcast"
    );
    // projectId may be omitted: the session's project is used.
    assert_eq!(c.inbox(&s[1], &[]).await.unwrap().len(), 2);
    // Filters.
    let since = m.created_at.to_string();
    assert!(
        c.inbox(&s[1], &[("projectId", &p), ("since", &since)])
            .await
            .unwrap()
            .iter()
            .all(|x| x.created_at > m.created_at)
    );
    assert!(
        c.inbox(&s[1], &[("projectId", &p), ("type", "query")])
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(c.get_mail(&m.id).await.unwrap(), m);
    let d = c.delete_mail(&m.id).await.unwrap();
    assert!(d.deleted);
    ws.expect_events(&["mail:received", "mail:deleted"]).await;
    api_err(c.get_mail(&m.id).await, 404, "NOT_FOUND");
    api_err(c.delete_mail(&m.id).await, 404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_change_nothing() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 1).await;

    let mut bad = mail(&p, &s[0], None, "");
    bad.kind = "bogus".into();
    let body = api_err(c.send_mail(&bad).await, 400, "VALIDATION_ERROR");
    let paths: Vec<_> = body
        .details
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].clone())
        .collect();
    assert_eq!(paths, [json!("type"), json!("subject")]);

    let unknown = server
        .raw(
            "POST",
            "/api/mail",
            Some("application/json"),
            json!({"projectId": p, "fromSessionId": s[0], "type": "query", "subject": "x", "extra": 1}).to_string(),
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert_error_body(&unknown.json(), 400, "VALIDATION_ERROR");

    api_err(
        c.send_mail(&mail("proj_nope", &s[0], None, "x")).await,
        404,
        "NOT_FOUND",
    );
    // A recipient that does not exist is refused (upstream stored the mail for nobody), and
    // the message says it is the recipient, not the sender, that is missing.
    let missing = api_err(
        c.send_mail(&mail(&p, &s[0], Some("sess_nope"), "x")).await,
        404,
        "NOT_FOUND",
    );
    assert!(
        missing.message.contains("Recipient session 'sess_nope'"),
        "{}",
        missing.message
    );
    assert_eq!(missing.details.unwrap()[0]["path"], "toSessionId");
    api_err(
        c.send_mail(&mail(&p, "bad.id", None, "x")).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        c.wait_mail(&s[0], &[("projectId", &p), ("timeout", "500")])
            .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        c.wait_mail(&s[0], &[("projectId", &p), ("timeout", "120001")])
            .await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        c.wait_mail("bad.id", &[("projectId", &p)]).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(
        c.inbox(&s[0], &[("projectId", &p), ("bogus", "1")]).await,
        400,
        "VALIDATION_ERROR",
    );
    api_err(c.inbox("sess_unknown", &[]).await, 404, "NOT_FOUND");
    assert!(
        c.inbox(&s[0], &[("projectId", &p)])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_backlog_then_parks_until_a_send() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 2).await;
    c.send_mail(&mail(&p, &s[0], Some(&s[1]), "old"))
        .await
        .unwrap();
    // Upstream semantics without `since`: the backlog at once.
    let got = c
        .wait_mail(&s[1], &[("projectId", &p), ("timeout", "5000")])
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // With `since` past the backlog it parks until a send wakes it.
    let since = got[0].created_at.to_string();
    let waiter = {
        let (c, p, s1, since) = (server.client(), p.clone(), s[1].clone(), since.clone());
        tokio::spawn(async move {
            c.wait_mail(
                &s1,
                &[("projectId", &p), ("timeout", "10000"), ("since", &since)],
            )
            .await
        })
    };
    while waiters(&server).await < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await; // let `since` fall behind the clock
    let new = one(c
        .send_mail(&mail(&p, &s[0], Some(&s[1]), "new"))
        .await
        .unwrap());
    let woke = waiter.await.unwrap().unwrap();
    assert_eq!(woke.iter().map(|m| &m.id).collect::<Vec<_>>(), [&new.id]);
    // Timeout: `[]`.
    let empty = c
        .wait_and_ack_mail(&s[0], &take(Some(&p), 1000))
        .await
        .unwrap();
    assert!(empty.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_ack_and_unread() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 2).await;
    for i in 0..3 {
        c.send_mail(&mail(&p, &s[0], Some(&s[1]), &format!("m{i}")))
            .await
            .unwrap();
    }
    let all = c.inbox(&s[1], &[("unread", "true")]).await.unwrap();
    assert_eq!(all.len(), 3);
    let cur = c
        .ack_mail(
            &s[1],
            &AckMail {
                project_id: None,
                up_to: all[1].seq,
            },
        )
        .await
        .unwrap();
    assert_eq!(cur.cursor, all[1].seq);
    let unread = c.inbox(&s[1], &[("unread", "true")]).await.unwrap();
    assert_eq!(
        unread.iter().map(|m| &m.subject).collect::<Vec<_>>(),
        ["m2"]
    );
    // The cursor never moves back.
    let cur = c
        .ack_mail(
            &s[1],
            &AckMail {
                project_id: None,
                up_to: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(cur.cursor, all[1].seq);
    // wait with ack takes the rest and moves the cursor.
    let got = c.wait_and_ack_mail(&s[1], &take(None, 1000)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        c.inbox(&s[1], &[("unread", "true")])
            .await
            .unwrap()
            .is_empty()
    );
}

/// A `GET` can be sent by any page (an `<img>` needs no CORS and no `Origin`), so it never
/// moves the read cursor: `GET /api/mail/wait/:id?ack=true` is refused with a message naming
/// the `POST`, and the mail stays unread; without `ack` a `GET` reads and leaves it unread;
/// the `POST` takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_never_moves_the_read_cursor() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 2).await;
    for i in 0..2 {
        c.send_mail(&mail(&p, &s[0], Some(&s[1]), &format!("m{i}")))
            .await
            .unwrap();
    }
    let unread = async || c.inbox(&s[1], &[("unread", "true")]).await.unwrap().len();
    assert_eq!(unread().await, 2);

    let path = format!(
        "/api/mail/wait/{}?projectId={p}&timeout=1000&ack=true",
        s[1]
    );
    let resp = server.raw("GET", &path, None, "").await;
    assert_error_body(&resp.json(), 400, "VALIDATION_ERROR");
    let message = resp.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("POST /api/mail/wait/"), "{message}");
    assert_eq!(unread().await, 2, "the refused GET acknowledged something");

    let read = c
        .wait_mail(
            &s[1],
            &[("projectId", &p), ("timeout", "1000"), ("ack", "false")],
        )
        .await
        .unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(
        unread().await,
        2,
        "a GET without ack acknowledged something"
    );

    let taken = c.wait_and_ack_mail(&s[1], &take(None, 1000)).await.unwrap();
    assert_eq!(taken.len(), 2);
    assert_eq!(unread().await, 0);
}

/// 20 agents long-polling with `ack`, 1,000 messages from 4 senders: every agent receives
/// exactly the messages addressed to it, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_waiters_thousand_messages_exactly_once() {
    const AGENTS: usize = 20;
    const MESSAGES: usize = 1_000;
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, AGENTS + 1).await;
    let sender = s[AGENTS].clone();
    let agents: Arc<Vec<String>> = Arc::new(s[..AGENTS].to_vec());
    let per_agent = MESSAGES / AGENTS;

    let mut receivers = Vec::new();
    for a in 0..AGENTS {
        let (client, p, me) = (server.client(), p.clone(), agents[a].clone());
        receivers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while got.len() < per_agent && tokio::time::Instant::now() < deadline {
                let batch = client
                    .wait_and_ack_mail(&me, &take(Some(&p), 5000))
                    .await
                    .expect("wait");
                got.extend(batch);
            }
            (me, got)
        }));
    }
    let mut senders = Vec::new();
    for w in 0..4 {
        let (client, p, from, agents) =
            (server.client(), p.clone(), sender.clone(), agents.clone());
        senders.push(tokio::spawn(async move {
            for i in (w..MESSAGES).step_by(4) {
                let to = &agents[i % AGENTS];
                client
                    .send_mail(&mail(&p, &from, Some(to), &format!("{i}")))
                    .await
                    .expect("send");
            }
        }));
    }
    for t in senders {
        t.await.unwrap();
    }
    let mut seen = HashSet::new();
    for r in receivers {
        let (me, got) = r.await.unwrap();
        assert_eq!(got.len(), per_agent, "{me} got {} messages", got.len());
        for m in &got {
            assert_eq!(
                m.to_session_id.as_deref(),
                Some(me.as_str()),
                "leaked to {me}"
            );
            assert!(seen.insert(m.id.clone()), "{} delivered twice", m.id);
        }
        let idx = agents.iter().position(|a| a == &me).unwrap();
        let mut numbers: Vec<usize> = got.iter().map(|m| m.subject.parse().unwrap()).collect();
        numbers.sort_unstable();
        let expected: Vec<usize> = (idx..MESSAGES).step_by(AGENTS).collect();
        assert_eq!(numbers, expected);
    }
    assert_eq!(seen.len(), MESSAGES);
    // Nothing is left parked.
    assert_eq!(waiters(&server).await, 0);
}

/// A waiter whose client goes away is dropped at once, not at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_dropped_when_client_disconnects() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 1).await;
    let task = {
        let (client, p, me) = (server.client(), p.clone(), s[0].clone());
        tokio::spawn(async move {
            client
                .wait_and_ack_mail(&me, &take(Some(&p), 120_000))
                .await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while waiters(&server).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiter never parked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort(); // closes the connection
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while waiters(&server).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiter outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `toTeamMemberId` reaches the live sessions spawned as that member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_to_team_member_reaches_its_sessions() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 1).await;
    let task = c
        .create_task(&CreateTask {
            project_id: Some(p.clone()),
            title: Some("t".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let member = format!("tm_{p}_simple_worker");
    let mut spawned = Vec::new();
    for _ in 0..2 {
        let r = c
            .spawn(
                &SpawnRequest {
                    project_id: Some(p.clone()),
                    task_ids: Some(vec![task.id.clone()]),
                    team_member_id: Some(member.clone()),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        spawned.push(r.session_id);
    }
    let req = SendMail {
        to_team_member_id: Some(member.clone()),
        ..mail(&p, &s[0], None, "to the worker")
    };
    let SentMail::Many(sent) = c.send_mail(&req).await.unwrap() else {
        panic!("two recipients, two messages");
    };
    let to: HashSet<_> = sent
        .iter()
        .filter_map(|m| m.to_session_id.clone())
        .collect();
    assert_eq!(to, spawned.iter().cloned().collect());
    // Stored in one transaction, in one millisecond, yet in `createdAt` order: a `since` of the
    // first one's `createdAt` still finds the second.
    assert!(sent[0].seq < sent[1].seq);
    assert!(
        sent[0].created_at < sent[1].created_at,
        "{} then {}",
        sent[0].created_at,
        sent[1].created_at
    );
    let nobody = SendMail {
        to_team_member_id: Some(format!("tm_{p}_recruiter")),
        ..mail(&p, &s[0], None, "x")
    };
    api_err(c.send_mail(&nobody).await, 404, "NOT_FOUND");
}

/// `createdAt` increases with `seq`, so `since=<the last createdAt seen>` misses nothing
/// however fast mail arrives, and a `since` read sees exactly the newer mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_the_last_created_at_misses_nothing() {
    let server = TestServer::start().await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 3).await;
    for i in 0..40 {
        // Mail for another session in between: the recipient's reads must skip it.
        let to = if i % 3 == 0 { &s[2] } else { &s[1] };
        c.send_mail(&mail(&p, &s[0], Some(to), &format!("m{i}")))
            .await
            .unwrap();
    }
    let all = c.inbox(&s[1], &[]).await.unwrap();
    assert_eq!(all.len(), 26);
    for pair in all.windows(2) {
        assert!(pair[0].seq < pair[1].seq);
        assert!(pair[0].created_at < pair[1].created_at, "{pair:?}");
    }
    for (k, seen) in all.iter().enumerate() {
        let since = seen.created_at.to_string();
        let newer = c.inbox(&s[1], &[("since", since.as_str())]).await.unwrap();
        let ids = |v: &[MailMessage]| v.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&newer), ids(&all[k + 1..]), "since the {k}th");
    }
    // A `since` older than everything reads it all.
    let everything = c.inbox(&s[1], &[("since", "1")]).await.unwrap();
    assert_eq!(everything.len(), all.len());
}

/// `LONG_POLL_MAX_MS` bounds every wait: a request asking for two minutes is answered, empty,
/// at the server's bound (here 300 ms), and the waiter is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_max_bounds_a_longer_wait() {
    let server = TestServer::start_with(|c| c.long_poll_max_ms = 300).await;
    let c = server.api();
    let (p, s) = project_with_sessions(c, 1).await;
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        c.wait_and_ack_mail(&s[0], &take(Some(&p), 120_000)),
    )
    .await
    .expect("the wait is answered at LONG_POLL_MAX_MS, not after its own 120 s")
    .unwrap();
    assert!(waited.is_empty());
    assert_eq!(waiters(&server).await, 0);
}
