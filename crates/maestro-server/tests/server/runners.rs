//! Runners through the API (the runner process itself is tested in `crates/maestro/tests`):
//! a spawn goes to the runners of its machine and is claimed exactly once, launch reports are
//! fenced, stop and resume, a silent runner fails its sessions as `runner_lost`, a connected
//! desktop app gets the spawn instead, and the `runner` scope allows runner routes only.

use crate::common;

use std::time::Duration;

use common::{TestServer, WAIT};
use maestro_client::Client;
use maestro_protocol::{
    AgentExited, CreateProject, CreateTask, LaunchReport, RegisterRunner, Runner, SpawnRequest,
};
use maestro_server::config::AuthMode;

const MACHINE: &str = "machine-under-test";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.machine_id = Some(MACHINE.into());
        c.stop_grace_ms = 100;
    })
    .await
}

async fn project(c: &Client) -> (String, String) {
    let p = c
        .create_project(&CreateProject {
            name: Some("runners".into()),
            working_dir: Some("/work/here".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = c
        .create_task(&CreateTask {
            project_id: Some(p.id.clone()),
            title: Some("Fix the flaky test".into()),
            description: Some("It fails one run in ten.".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    (p.id, t.id)
}

async fn register(c: &Client, name: &str) -> Runner {
    c.register_runner(&RegisterRunner {
        machine_id: MACHINE.into(),
        name: Some(name.into()),
        hostname: "testhost".into(),
        agents: vec!["shell".into()],
        capacity: Some(100),
        version: Some("test".into()),
    })
    .await
    .unwrap()
}

/// The one launch `runner` claims next.
async fn claim_one(c: &Client, runner: &Runner) -> maestro_protocol::Launch {
    let mut claimed = c.claim_launches(&runner.id, 5_000).await.unwrap().launches;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    claimed.remove(0)
}

/// Reads frames until one is `name` (others are skipped); all frames read, in order.
async fn wait_for(ws: &mut common::WsClient, name: &str) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    loop {
        let Some(frame) = ws.try_next_frame(WAIT).await else {
            panic!(
                "no {name} within {WAIT:?}; got {:?}",
                common::event_names(&frames)
            );
        };
        let done = frame["event"] == name;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn spawn_req(p: &str, t: &str) -> SpawnRequest {
    SpawnRequest {
        project_id: Some(p.into()),
        task_ids: Some(vec![t.into()]),
        agent_tool: Some("shell".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_goes_to_the_runner_of_its_machine() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = register(c, "main").await;
    assert!(runner.local, "the runner shares the server's machine");
    assert!(runner.online);
    let before = c.get_task(&t).await.unwrap().updated_at;
    let mut ws = server.ws().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let spawned = c.spawn(&spawn_req(&p, &t), None).await.unwrap();
    let sid = spawned.session_id.clone();
    assert!(spawned.message.contains("runner"), "{}", spawned.message);
    let meta = spawned.session.metadata.clone().unwrap();
    assert_eq!(meta["launcher"], "runner");
    assert_eq!(meta["machineId"], MACHINE);
    // The runner launches it: no `session:spawn` for a desktop app to launch it too.
    let frames = wait_for(&mut ws, "session:launch_queued").await;
    assert!(
        !common::event_names(&frames).contains(&"session:spawn".to_owned()),
        "{frames:?}"
    );
    // Spawning touches the task, as upstream does.
    assert!(c.get_task(&t).await.unwrap().updated_at > before);

    let claimed = c.claim_launches(&runner.id, 5_000).await.unwrap();
    assert_eq!(claimed.launches.len(), 1);
    let launch = &claimed.launches[0];
    assert_eq!(launch.session.id, sid);
    assert_eq!(launch.agent_tool, "shell");
    assert_eq!(launch.cwd, "/work/here");
    assert!(!launch.resume);
    assert_eq!(launch.fencing_token, 1);
    assert!(
        launch.prompt.contains("Fix the flaky test"),
        "{}",
        launch.prompt
    );
    assert!(
        launch.prompt.contains("one run in ten"),
        "{}",
        launch.prompt
    );
    assert_eq!(launch.env["MAESTRO_SESSION_ID"], sid);
    // Nothing is left to claim.
    let again = c.claim_launches(&runner.id, 0).await.unwrap();
    assert!(again.launches.is_empty());

    let started = c
        .report_launch(
            &runner.id,
            &LaunchReport {
                session_id: sid.clone(),
                fencing_token: 1,
                pid: Some(4242),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(started.status, "working");
    assert_eq!(started.metadata.as_ref().unwrap()["runnerId"], runner.id);
    assert_eq!(c.get_session(&sid).await.unwrap().online, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_spawn_is_claimed_by_exactly_one_runner() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runners = [register(c, "a").await, register(c, "b").await];
    assert_ne!(runners[0].id, runners[1].id);
    const SPAWNS: usize = 20;
    let mut claimers = Vec::new();
    for r in &runners {
        let c = server.client();
        let id = r.id.clone();
        claimers.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let deadline = tokio::time::Instant::now() + WAIT;
            while tokio::time::Instant::now() < deadline {
                let claimed = c.claim_launches(&id, 300).await.unwrap();
                won.extend(claimed.launches.into_iter().map(|l| l.session.id));
                if won.len() >= SPAWNS {
                    break;
                }
            }
            won
        }));
    }
    let mut sessions = Vec::new();
    for _ in 0..SPAWNS {
        sessions.push(c.spawn(&spawn_req(&p, &t), None).await.unwrap().session_id);
    }
    // Claimers stop at the deadline; wait for every spawn to be claimed first.
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let claimed: usize = c
            .list_sessions(&Default::default())
            .await
            .unwrap()
            .iter()
            .filter(|s| {
                s.metadata
                    .as_ref()
                    .is_some_and(|m| m.get("runnerId").is_some())
            })
            .count();
        if claimed == SPAWNS || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for h in claimers {
        h.abort();
        if let Ok(won) = h.await {
            all.extend(won);
        }
    }
    // Aborted claimers report nothing: count from the sessions instead.
    let listed = c.list_sessions(&Default::default()).await.unwrap();
    for sid in &sessions {
        let s = listed.iter().find(|s| &s.id == sid).unwrap();
        let meta = s.metadata.as_ref().unwrap();
        assert!(
            runners.iter().any(|r| meta["runnerId"] == r.id),
            "{sid} was not claimed: {meta}"
        );
        assert_eq!(meta["launchFence"], 1, "{sid} was claimed twice");
    }
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "a spawn was handed to two runners");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_reports_are_fenced_and_failures_carry_their_reason() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = register(c, "main").await;
    let other = register(c, "other").await;
    let sid = c.spawn(&spawn_req(&p, &t), None).await.unwrap().session_id;
    let launch = claim_one(c, &runner).await;
    // Another runner, or an old fencing token: refused, nothing changes.
    for (rid, fence) in [(&other.id, 1), (&runner.id, 7)] {
        let e = c
            .report_launch(
                rid,
                &LaunchReport {
                    session_id: sid.clone(),
                    fencing_token: fence,
                    failure: Some("nope".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("STALE_LAUNCH"), "{e}");
    }
    assert_eq!(c.get_session(&sid).await.unwrap().status, "spawning");
    let failed = c
        .report_launch(
            &runner.id,
            &LaunchReport {
                session_id: sid.clone(),
                fencing_token: launch.fencing_token,
                failure: Some("agent_not_found: claude is not on PATH on testhost".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.status, "failed");
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some("agent_not_found: claude is not on PATH on testhost")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_asks_the_host_then_the_exit_ends_the_session_stopped() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = register(c, "main").await;
    let sid = c.spawn(&spawn_req(&p, &t), None).await.unwrap().session_id;
    let launch = claim_one(c, &runner).await;
    let report = |exit: Option<AgentExited>| LaunchReport {
        session_id: sid.clone(),
        fencing_token: launch.fencing_token,
        pid: exit.is_none().then_some(99),
        exit,
        ..Default::default()
    };
    c.report_launch(&runner.id, &report(None)).await.unwrap();
    c.claim_task(&t, &sid, 60_000).await.unwrap();

    let mut ws = server.ws().await;
    let asked = c.stop_session(&sid, Some(250)).await.unwrap();
    assert_eq!(asked.status, "working", "the host ends it, not the request");
    let frames = wait_for(&mut ws, "session:stop_requested").await;
    let req = frames
        .iter()
        .find(|f| f["type"] == "session:stop_requested")
        .unwrap();
    assert_eq!(req["data"]["sessionId"], sid);
    assert_eq!(req["data"]["graceMs"], 250);

    let ended = c
        .report_launch(
            &runner.id,
            &report(Some(AgentExited {
                code: 130,
                signal: None,
                stopped: true,
            })),
        )
        .await
        .unwrap();
    assert_eq!(ended.status, "stopped");
    // Its claim ended with it.
    let e = c.renew_claim(&t, &sid, 1, 60_000).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(409), "{e}");
    // Stopping again changes nothing.
    assert_eq!(c.stop_session(&sid, None).await.unwrap().status, "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_before_a_runner_started_it_removes_the_spawn() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = register(c, "main").await;
    let sid = c.spawn(&spawn_req(&p, &t), None).await.unwrap().session_id;
    let stopped = c.stop_session(&sid, None).await.unwrap();
    assert_eq!(stopped.status, "stopped");
    let claimed = c.claim_launches(&runner.id, 0).await.unwrap();
    assert!(claimed.launches.is_empty(), "{claimed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_launches_a_finished_session_again_with_a_new_fence() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = register(c, "main").await;
    let sid = c.spawn(&spawn_req(&p, &t), None).await.unwrap().session_id;
    let first = claim_one(c, &runner).await;
    let e = c.resume_session(&sid).await.unwrap_err();
    assert_eq!(e.code(), Some("SESSION_RUNNING"), "{e}");
    c.report_launch(
        &runner.id,
        &LaunchReport {
            session_id: sid.clone(),
            fencing_token: first.fencing_token,
            exit: Some(AgentExited {
                code: 0,
                signal: None,
                stopped: false,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(c.get_session(&sid).await.unwrap().status, "completed");
    let resumed = c.resume_session(&sid).await.unwrap();
    assert_eq!(resumed.status, "spawning");
    let second = claim_one(c, &runner).await;
    assert!(second.resume);
    assert_eq!(second.fencing_token, 2);
    // The first launch's late report is stale now.
    let e = c
        .report_launch(
            &runner.id,
            &LaunchReport {
                session_id: sid.clone(),
                fencing_token: first.fencing_token,
                pid: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("STALE_LAUNCH"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_runner_fails_its_sessions_as_runner_lost() {
    let server = TestServer::start_with(|c| {
        c.machine_id = Some(MACHINE.into());
        c.heartbeat_ttl_ms = 300;
        c.heartbeat_grace_ms = 100;
        c.sweep_interval_ms = 50;
    })
    .await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = register(c, "main").await;
    let sid = c.spawn(&spawn_req(&p, &t), None).await.unwrap().session_id;
    let launch = claim_one(c, &runner).await;
    c.report_launch(
        &runner.id,
        &LaunchReport {
            session_id: sid.clone(),
            fencing_token: launch.fencing_token,
            pid: Some(7),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.runner_heartbeat(&runner.id, std::slice::from_ref(&sid))
        .await
        .unwrap();
    let mut ws = server.ws().await;
    // The runner goes silent (as if killed): its session fails as runner_lost.
    wait_for(&mut ws, "notify:session_failed").await;
    let s = c.get_session(&sid).await.unwrap();
    assert_eq!(s.status, "failed");
    assert_eq!(s.failure_reason.as_deref(), Some("runner_lost"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while c.get_runner_online(&runner.id).await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !c.get_runner_online(&runner.id).await,
        "the runner is offline"
    );
}

trait RunnerOnline {
    async fn get_runner_online(&self, id: &str) -> bool;
}

impl RunnerOnline for Client {
    async fn get_runner_online(&self, id: &str) -> bool {
        self.list_runners()
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == id && r.online)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_desktop_app_launches_spawns_itself() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = register(c, "main").await;
    // The desktop app's web view sends an Origin; the CLI does not.
    let url = format!("ws://{}/", server.addr());
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "tauri://localhost".parse().unwrap());
    let (desktop, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut ws = server.ws().await;
    let spawned = c.spawn(&spawn_req(&p, &t), None).await.unwrap();
    assert_eq!(
        spawned.session.metadata.as_ref().unwrap()["launcher"],
        "desktop"
    );
    wait_for(&mut ws, "session:spawn").await;
    assert!(
        c.claim_launches(&runner.id, 0)
            .await
            .unwrap()
            .launches
            .is_empty()
    );
    drop(desktop);
    // A spawn can also force the runner (the desktop app then is not told).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let forced = c
            .spawn(
                &SpawnRequest {
                    launcher: Some("runner".into()),
                    ..spawn_req(&p, &t)
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            forced.session.metadata.as_ref().unwrap()["launcher"],
            "runner"
        );
        let claimed = c.claim_launches(&runner.id, 1_000).await.unwrap();
        if claimed
            .launches
            .iter()
            .any(|l| l.session.id == forced.session_id)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never claimed");
    }
    let e = c
        .spawn(
            &SpawnRequest {
                launcher: Some("robot".into()),
                ..spawn_req(&p, &t)
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_launcher"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_token_serves_runner_routes_and_nothing_else() {
    let server = TestServer::start_with(|c| {
        c.auth = AuthMode::Required;
        c.machine_id = Some(MACHINE.into());
    })
    .await;
    let as_runner = server
        .client()
        .with_token(common::token(&server, "runner").await);
    let as_reader = server
        .client()
        .with_token(common::token(&server, "read").await);
    // A read token may list runners but not register one; nothing is registered.
    let e = as_reader
        .register_runner(&RegisterRunner {
            machine_id: MACHINE.into(),
            hostname: "h".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    assert!(as_reader.list_runners().await.unwrap().is_empty());
    // A runner token registers, beats and claims…
    let runner = register(&as_runner, "remote").await;
    as_runner.runner_heartbeat(&runner.id, &[]).await.unwrap();
    as_runner.claim_launches(&runner.id, 0).await.unwrap();
    // …and reads or changes nothing else.
    for e in [
        as_runner.list_projects().await.unwrap_err(),
        as_runner
            .list_sessions(&Default::default())
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    }
    let e = as_runner
        .create_project(&CreateProject {
            name: Some("x".into()),
            working_dir: Some("/x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_names_the_machine_that_runs_its_spawns() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let here = register(c, "main").await;
    let there = c
        .register_runner(&RegisterRunner {
            machine_id: "build-box".into(),
            hostname: "build-box".into(),
            agents: vec!["shell".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!there.local);
    let updated = c
        .update_project(
            &p,
            &maestro_protocol::UpdateProject {
                machine_id: Some("build-box".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.machine_id.as_deref(), Some("build-box"));
    let sid = c.spawn(&spawn_req(&p, &t), None).await.unwrap().session_id;
    assert!(
        c.claim_launches(&here.id, 0)
            .await
            .unwrap()
            .launches
            .is_empty()
    );
    let won = c.claim_launches(&there.id, 5_000).await.unwrap();
    assert_eq!(won.launches[0].session.id, sid);
    // The spawn's own machineId wins over the project's; "" gives the project back to the
    // server's machine.
    let sid = c
        .spawn(
            &SpawnRequest {
                machine_id: Some(MACHINE.into()),
                ..spawn_req(&p, &t)
            },
            None,
        )
        .await
        .unwrap()
        .session_id;
    assert_eq!(
        c.claim_launches(&here.id, 5_000).await.unwrap().launches[0]
            .session
            .id,
        sid
    );
    let cleared = c
        .update_project(
            &p,
            &maestro_protocol::UpdateProject {
                machine_id: Some(String::new()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.machine_id, None);
    let e = c
        .update_project(
            &p,
            &maestro_protocol::UpdateProject {
                machine_id: Some("../etc".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_cannot_be_paired_as_a_runner() {
    let server = server().await;
    let made = server
        .api()
        .raw(
            maestro_client::Method::POST,
            "/api/auth/pairings",
            Some(&serde_json::json!({ "scope": "runner" })),
        )
        .await
        .unwrap();
    assert_eq!(made.status.as_u16(), 400, "{:?}", made.body);
    assert!(
        made.body["message"]
            .as_str()
            .unwrap()
            .contains("maestro token create --scope runner"),
        "{:?}",
        made.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_spawns_never_claims_past_the_capacity() {
    let server = server().await;
    let c = server.api();
    let (p, t) = project(c).await;
    let runner = c
        .register_runner(&RegisterRunner {
            machine_id: MACHINE.into(),
            hostname: "small".into(),
            agents: vec!["shell".into()],
            capacity: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..5 {
        c.spawn(&spawn_req(&p, &t), None).await.unwrap();
    }
    let mut won = 0;
    for _ in 0..4 {
        won += c
            .claim_launches(&runner.id, 0)
            .await
            .unwrap()
            .launches
            .len();
    }
    assert_eq!(won, 2, "the runner runs two at most");
    assert_eq!(c.get_runner_online_running(&runner.id).await, 2);
    // Its beat says what it really runs (nothing now): two places again.
    c.runner_heartbeat(&runner.id, &[]).await.unwrap();
    assert_eq!(
        c.claim_launches(&runner.id, 0)
            .await
            .unwrap()
            .launches
            .len(),
        2
    );
}

trait RunnerRunning {
    async fn get_runner_online_running(&self, id: &str) -> u32;
}

impl RunnerRunning for Client {
    async fn get_runner_online_running(&self, id: &str) -> u32 {
        self.list_runners()
            .await
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .unwrap()
            .running
    }
}
