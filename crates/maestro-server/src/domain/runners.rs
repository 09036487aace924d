//! Runners: the hosts that start, watch and stop agents on a machine (docs/runners.md).
//!
//! A runner registers, then beats for itself and every session it hosts in one request, so a
//! runner and its sessions fall silent together: when a hosted session's presence lapses and
//! its runner has not beaten since, the session fails with `runner_lost` instead of
//! `agent_disconnected` (see `liveness`).
//!
//! A spawn that a runner is to launch waits in the launch queue (one record per session,
//! owned by the machine that must run it). Runners claim with a long-poll; the claim is one
//! transaction that removes the queue record and writes the runner and a fencing token into
//! the session, so however many runners (and servers) race, one launches. The fencing token
//! (a counter per session that only grows) makes a late report from an earlier launch of a
//! resumed session harmless.
//!
//! Stop asks the session's host (through the event `session:stop_requested`, which the
//! terminal hub of the server holding the host's connection forwards); a session that nothing
//! hosts is stopped at once.

use maestro_protocol::{
    Claimed, Launch, LaunchReport, RegisterRunner, Runner, Session, StopRequested,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::broadcast::error::RecvError;

use super::claims::release_all;
use super::sessions::{close_task_statuses, emit_session_appended, timeline_entry};
use super::{Domain, GLOBAL, check_id, load_session};
use crate::error::{Error, Result};
use crate::ports::{Collection, Deadline, ReaderExt, Txn, TxnExt, transact};
use crate::util::now_ms;

/// Why the server failed a session whose runner went silent.
pub const RUNNER_LOST: &str = "runner_lost";

/// The event that wakes runners waiting to claim.
pub const LAUNCH_QUEUED: &str = "session:launch_queued";

/// The event a session's host acts on by stopping the agent.
pub const STOP_REQUESTED: &str = "session:stop_requested";

/// Longest claim long-poll.
pub const MAX_CLAIM_WAIT_MS: u64 = 60_000;

/// Most runners one store keeps (registrations beyond it are refused).
pub const MAX_RUNNERS: usize = 1_000;

/// A spawn waiting for a runner of `machine_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueuedLaunch {
    pub session_id: String,
    pub project_id: String,
    pub machine_id: String,
    pub agent_tool: String,
    pub cwd: String,
    pub worktree: bool,
    pub env: std::collections::BTreeMap<String, String>,
    pub prompt: String,
    pub resume: bool,
    pub queued_at: i64,
}

/// A runner's id: stable for a machine and a runner name.
pub fn runner_id(machine_id: &str, name: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{machine_id}/{name}").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("run_{hex}")
}

/// A string field of a session's metadata.
pub(crate) fn meta_str<'a>(session: &'a Session, key: &str) -> Option<&'a str> {
    session.metadata.as_ref()?.get(key)?.as_str()
}

fn set_meta(session: &mut Session, key: &str, value: Value) {
    let meta = session.metadata.get_or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta[key] = value;
}

/// An error with its own status and code.
pub(crate) fn coded(
    status: axum::http::StatusCode,
    code: &'static str,
    message: impl Into<String>,
) -> Error {
    Error::Coded {
        status,
        code,
        message: message.into(),
        details: None,
    }
}

/// Puts a launch in the queue of its machine and wakes the runners.
/// A runner stopped beating (global scope; `{id, hostname, machineId}`): paired devices are
/// told (see `push`).
pub const MACHINE_OFFLINE: &str = "notify:machine_offline";
/// A runner that was offline beats (or registers) again.
pub const MACHINE_ONLINE: &str = "notify:machine_online";

/// The payload of `notify:machine_offline` / `notify:machine_online`: which machine.
fn machine(runner: &Runner) -> Value {
    json!({ "id": runner.id, "hostname": runner.hostname, "machineId": runner.machine_id })
}

pub(crate) fn queue_launch(tx: &mut dyn Txn, launch: &QueuedLaunch) {
    tx.put(
        Collection::LaunchQueue,
        &launch.session_id,
        Some(&launch.machine_id),
        launch,
    );
    tx.emit(
        &launch.project_id,
        LAUNCH_QUEUED,
        &json!({ "sessionId": launch.session_id, "machineId": launch.machine_id }),
        Some(&launch.session_id),
    );
}

/// Ends `session` with `status` (`stopped` or `failed`), closing what ends with it: task
/// statuses, leases, pending approvals.
pub(crate) fn end_session(
    tx: &mut dyn Txn,
    session: &mut Session,
    status: &str,
    reason: Option<&str>,
    message: String,
    now: i64,
) -> Result<()> {
    session.status = status.into();
    session.completed_at = Some(now);
    session.last_activity = now;
    if let Some(reason) = reason {
        session.failure_reason = Some(reason.into());
    }
    let kind = if status == "failed" {
        "error"
    } else {
        "session_stopped"
    };
    let entry = timeline_entry(
        kind,
        Some(message),
        None,
        reason.map(|r| json!({ "reason": r })),
        now,
    );
    session.timeline.push(entry.clone());
    let outcome = if status == "completed" {
        "completed"
    } else {
        "failed"
    };
    close_task_statuses(tx, session, outcome, now)?;
    release_all(tx, &session.project_id, &session.id, "session_ended")?;
    super::approvals::cancel_pending(tx, &session.project_id, &session.id, "session ended", now)?;
    super::sessions::clear_needs_input(session);
    tx.put(Collection::Sessions, &session.id, None, session);
    emit_session_appended(tx, session, &[entry], &[], &[]);
    let notify = match status {
        "failed" => Some("notify:session_failed"),
        "completed" => Some("notify:session_completed"),
        _ => None,
    };
    if let Some(name) = notify {
        tx.emit(
            &session.project_id.clone(),
            name,
            &json!({ "sessionId": session.id, "name": session.name, "reason": reason }),
            Some(&session.id),
        );
    }
    Ok(())
}

impl Domain {
    fn runner_view(&self, mut r: Runner) -> Runner {
        r.local = r.machine_id == self.info.machine_id;
        r
    }

    /// Registers (or re-registers) a runner; it is online from now.
    pub async fn register_runner(&self, req: RegisterRunner) -> Result<Runner> {
        check_id("machineId", &req.machine_id)?;
        let name = req.name.clone().unwrap_or_else(|| "main".into());
        check_id("name", &name)?;
        let hostname = req.hostname.trim().to_owned();
        if hostname.is_empty() || hostname.len() > 255 {
            return Err(Error::validation("hostname must be 1-255 characters"));
        }
        if req.agents.len() > 64 || req.agents.iter().any(|a| a.is_empty() || a.len() > 64) {
            return Err(Error::validation(
                "agents: at most 64 names of 1-64 characters",
            ));
        }
        let id = runner_id(&req.machine_id, &name);
        let now = now_ms();
        let ttl = self.info.liveness.ttl_ms + self.info.liveness.grace_ms;
        let existing = self.reader()?.list_raw(Collection::Runners, None)?.len();
        let runner = transact(&*self.store, move |tx| {
            let before: Option<Runner> = tx.get(Collection::Runners, &id)?;
            if before.is_none() && existing >= MAX_RUNNERS {
                return Err(coded(
                    axum::http::StatusCode::CONFLICT,
                    "TOO_MANY_RUNNERS",
                    format!("At most {MAX_RUNNERS} runners can be registered"),
                ));
            }
            let runner = Runner {
                id: id.clone(),
                machine_id: req.machine_id.clone(),
                hostname: hostname.clone(),
                agents: req.agents.clone(),
                capacity: req.capacity.unwrap_or(8).clamp(1, 256),
                running: before.as_ref().map_or(0, |b| b.running),
                online: true,
                last_seen: now,
                registered_at: now,
                version: req.version.clone().unwrap_or_default(),
                local: false,
            };
            tx.put(Collection::Runners, &id, None, &runner);
            tx.schedule(Deadline::RunnerExpiry, &id, Some(now + ttl as i64 + 1));
            tx.emit(GLOBAL, "runner:updated", &runner, None);
            // A runner that restarts after going offline is back.
            if before.as_ref().is_some_and(|b| !b.online) {
                tx.emit(GLOBAL, MACHINE_ONLINE, &machine(&runner), None);
            }
            Ok(runner)
        })
        .await?;
        tracing::debug!(runner.id = %runner.id, hostname = %runner.hostname, "runner registered");
        Ok(self.runner_view(runner))
    }

    /// One beat for a runner and every session it hosts.
    pub async fn runner_heartbeat(&self, id: String, session_ids: Vec<String>) -> Result<Runner> {
        check_id("runnerId", &id)?;
        if session_ids.len() > 1024 {
            return Err(Error::validation("at most 1024 sessions per beat"));
        }
        for s in &session_ids {
            check_id("sessionIds", s)?;
        }
        let now = now_ms();
        let ttl = self.info.liveness.ttl_ms + self.info.liveness.grace_ms;
        let running = u32::try_from(session_ids.len()).unwrap_or(u32::MAX);
        let rid = id.clone();
        // The runner first: its beat is never later than its sessions' (see `liveness`).
        let runner = transact(&*self.store, move |tx| {
            let mut runner: Runner = tx
                .get(Collection::Runners, &rid)?
                .ok_or_else(|| Error::not_found("Runner", &rid))?;
            let back = !runner.online;
            let changed = back || runner.running != running;
            runner.online = true;
            runner.running = running;
            runner.last_seen = now;
            tx.put(Collection::Runners, &rid, None, &runner);
            tx.schedule(Deadline::RunnerExpiry, &rid, Some(now + ttl as i64 + 1));
            if changed {
                tx.emit(GLOBAL, "runner:updated", &runner, None);
            }
            if back {
                tx.emit(GLOBAL, MACHINE_ONLINE, &machine(&runner), None);
            }
            Ok(runner)
        })
        .await?;
        for sid in session_ids {
            if let Err(e) = self
                .heartbeat(sid.clone(), maestro_protocol::Heartbeat::default())
                .await
            {
                tracing::debug!(session.id = %sid, error = %e, "runner beat for a session refused");
            }
        }
        Ok(self.runner_view(runner))
    }

    pub fn list_runners(&self) -> Result<Vec<Runner>> {
        let runners: Vec<Runner> = self.reader()?.list(Collection::Runners, None)?;
        Ok(runners.into_iter().map(|r| self.runner_view(r)).collect())
    }

    pub fn get_runner(&self, id: &str) -> Result<Runner> {
        check_id("runnerId", id)?;
        let runner: Runner = self
            .reader()?
            .get(Collection::Runners, id)?
            .ok_or_else(|| Error::not_found("Runner", id))?;
        Ok(self.runner_view(runner))
    }

    /// Marks runners whose beats lapsed offline (their sessions fail by their own presence).
    pub(crate) async fn expire_runners(&self, now: i64, limit: usize) -> Result<()> {
        for id in self.store.due(Deadline::RunnerExpiry, now, limit)? {
            let ttl = (self.info.liveness.ttl_ms + self.info.liveness.grace_ms) as i64;
            transact(&*self.store, move |tx| {
                let Some(mut runner) = tx.get::<Runner>(Collection::Runners, &id)? else {
                    tx.schedule(Deadline::RunnerExpiry, &id, None);
                    return Ok(());
                };
                if now - runner.last_seen <= ttl {
                    tx.schedule(
                        Deadline::RunnerExpiry,
                        &id,
                        Some(runner.last_seen + ttl + 1),
                    );
                    return Ok(());
                }
                tx.schedule(Deadline::RunnerExpiry, &id, None);
                if runner.online {
                    runner.online = false;
                    tx.put(Collection::Runners, &id, None, &runner);
                    tx.emit(GLOBAL, "runner:updated", &runner, None);
                    tx.emit(GLOBAL, MACHINE_OFFLINE, &machine(&runner), None);
                    tracing::info!(runner.id = %id, "runner stopped beating; offline");
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Whether a runner of `machine_id` is registered (online or not): spawns for that
    /// machine then wait for it.
    pub(crate) fn machine_has_runner(&self, machine_id: &str) -> Result<bool> {
        let runners: Vec<Runner> = self.reader()?.list(Collection::Runners, None)?;
        Ok(runners.iter().any(|r| r.machine_id == machine_id))
    }

    /// Long-poll: the launches this runner wins, as soon as there are any, or none after
    /// `timeout_ms`.
    pub async fn claim_launches(&self, runner_id: String, timeout_ms: u64) -> Result<Claimed> {
        check_id("runnerId", &runner_id)?;
        if timeout_ms > MAX_CLAIM_WAIT_MS {
            return Err(Error::validation(format!(
                "timeout must be at most {MAX_CLAIM_WAIT_MS} ms"
            )));
        }
        let deadline = self.long_poll_deadline(timeout_ms);
        // Subscribe first: a spawn queued after this point wakes us.
        let mut events = self.store.subscribe();
        loop {
            let launches = self.try_claim(runner_id.clone()).await?;
            if !launches.is_empty() {
                return Ok(Claimed { launches });
            }
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) | Ok(Err(RecvError::Closed)) => {
                        return Ok(Claimed::default());
                    }
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Ok(ev)) if ev.event == LAUNCH_QUEUED => break,
                    Ok(Ok(_)) => {}
                }
            }
        }
    }

    async fn try_claim(&self, runner_id: String) -> Result<Vec<Launch>> {
        let runner = self.get_runner(&runner_id)?;
        if runner.running >= runner.capacity {
            return Ok(Vec::new());
        }
        let queued: Vec<QueuedLaunch> = self
            .reader()?
            .list(Collection::LaunchQueue, Some(&runner.machine_id))?;
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        transact(&*self.store, move |tx| {
            // The runner as it is now: its free places, and counted at once below, so a burst
            // of spawns cannot claim past the capacity before its next beat.
            let mut runner: Runner = tx
                .get(Collection::Runners, &runner_id)?
                .ok_or_else(|| Error::not_found("Runner", &runner_id))?;
            let mut won = Vec::new();
            for q in &queued {
                if runner.running >= runner.capacity {
                    break;
                }
                // Read again inside the transaction: another runner may have taken it (the
                // read makes the commit fail if one takes it meanwhile).
                let Some(q) = tx.get::<QueuedLaunch>(Collection::LaunchQueue, &q.session_id)?
                else {
                    continue;
                };
                tx.delete(Collection::LaunchQueue, &q.session_id);
                let Some(mut session) = tx.get::<Session>(Collection::Sessions, &q.session_id)?
                else {
                    continue;
                };
                if session.is_terminal() && !q.resume {
                    continue;
                }
                let fence = tx.next_counter(&format!("launch:{}", q.session_id))?;
                set_meta(&mut session, "runnerId", json!(runner.id));
                set_meta(&mut session, "machineId", json!(runner.machine_id));
                set_meta(&mut session, "runnerHost", json!(runner.hostname));
                set_meta(&mut session, "launchFence", json!(fence));
                session.hostname = runner.hostname.clone();
                session.last_activity = now;
                let entry = timeline_entry(
                    "progress",
                    Some(format!("Starting {} on {}", q.agent_tool, runner.hostname)),
                    None,
                    Some(json!({ "runnerId": runner.id, "resume": q.resume })),
                    now,
                );
                session.timeline.push(entry.clone());
                tx.put(Collection::Sessions, &session.id, None, &session);
                emit_session_appended(tx, &session, &[entry], &[], &[]);
                runner.running += 1;
                won.push(Launch {
                    session,
                    agent_tool: q.agent_tool.clone(),
                    cwd: q.cwd.clone(),
                    worktree: q.worktree,
                    env: q.env.clone(),
                    prompt: q.prompt.clone(),
                    resume: q.resume,
                    fencing_token: fence,
                });
            }
            if !won.is_empty() {
                tx.put(Collection::Runners, &runner.id, None, &runner);
                tx.emit(GLOBAL, "runner:updated", &runner, None);
            }
            Ok(won)
        })
        .await
    }

    /// A runner reports what became of a launch it claimed: started (`pid`) or not
    /// (`failure`, which fails the session with that reason).
    pub async fn report_launch(&self, runner_id: String, report: LaunchReport) -> Result<Session> {
        check_id("runnerId", &runner_id)?;
        check_id("sessionId", &report.session_id)?;
        let started = report.pid.is_some() && report.exit.is_none() && report.failure.is_none();
        let sid = report.session_id.clone();
        let session = self.record_launch(runner_id, report).await?;
        if started {
            // Alive from now: its runner's beats carry it from the next one on.
            self.heartbeat(sid, maestro_protocol::Heartbeat::default())
                .await?;
        }
        Ok(session)
    }

    async fn record_launch(&self, runner_id: String, report: LaunchReport) -> Result<Session> {
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &report.session_id)?;
            let fence = session
                .metadata
                .as_ref()
                .and_then(|m| m.get("launchFence"))
                .and_then(Value::as_u64);
            if meta_str(&session, "runnerId") != Some(runner_id.as_str())
                || fence != Some(report.fencing_token)
            {
                return Err(coded(
                    axum::http::StatusCode::CONFLICT,
                    "STALE_LAUNCH",
                    "This launch is not the session's current one (another runner or a later launch holds it)",
                ));
            }
            if let Some(failure) = &report.failure {
                if session.is_terminal() {
                    return Ok(session);
                }
                let reason: String = failure.chars().take(500).collect();
                end_session(
                    tx,
                    &mut session,
                    "failed",
                    Some(&reason),
                    format!("The agent could not start: {reason}"),
                    now,
                )?;
                return Ok(session);
            }
            if let Some(exit) = &report.exit {
                if session.is_terminal() {
                    return Ok(session);
                }
                let (status, reason) = if exit.stopped {
                    ("stopped", None)
                } else if exit.code == 0 && exit.signal.is_none() {
                    ("completed", None)
                } else {
                    ("failed", Some("agent_exited"))
                };
                let message = match (exit.signal, exit.stopped) {
                    (_, true) => "Stopped".to_owned(),
                    (Some(sig), false) => format!("Agent was killed by signal {sig}"),
                    (None, false) => format!("Agent exited with status {}", exit.code),
                };
                end_session(tx, &mut session, status, reason, message, now)?;
                return Ok(session);
            }
            if let Some(pid) = report.pid {
                set_meta(&mut session, "pid", json!(pid));
            }
            if let Some(dir) = &report.worktree {
                set_meta(&mut session, "worktree", json!(dir));
            }
            if let Some(base) = &report.base_branch {
                set_meta(&mut session, "baseBranch", json!(base));
            }
            if session.status == "spawning" {
                session.status = "working".into();
            }
            session.last_activity = now;
            let entry = timeline_entry(
                "progress",
                Some(format!("Agent started on {}", session.hostname)),
                None,
                report.pid.map(|pid| json!({ "pid": pid })),
                now,
            );
            session.timeline.push(entry.clone());
            tx.put(Collection::Sessions, &session.id, None, &session);
            emit_session_appended(tx, &session, &[entry], &[], &[]);
            Ok(session)
        })
        .await
    }

    /// Stops a session's agent: asks its host when one holds it (the host ends the session
    /// `stopped` once the agent is gone), else ends the session `stopped` at once.
    pub async fn stop_session(&self, id: String, grace_ms: Option<u64>) -> Result<Session> {
        check_id("sessionId", &id)?;
        let grace = grace_ms
            .unwrap_or(self.info.stop_grace_ms)
            .clamp(10, 60_000);
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &id)?;
            if session.is_terminal() {
                return Ok(session);
            }
            if tx.get_raw(Collection::LaunchQueue, &id)?.is_some() {
                tx.delete(Collection::LaunchQueue, &id);
                end_session(
                    tx,
                    &mut session,
                    "stopped",
                    None,
                    "Stopped before a runner started it".into(),
                    now,
                )?;
                return Ok(session);
            }
            // Held by a host: beating, or claimed by a runner that is online (it may not have
            // beaten for the session yet).
            let beating = tx
                .get::<maestro_protocol::Presence>(Collection::Presence, &id)?
                .is_some_and(|p| p.online);
            let runner_holds = match meta_str(&session, "runnerId") {
                Some(rid) => tx
                    .get::<Runner>(Collection::Runners, rid)?
                    .is_some_and(|r| r.online),
                None => false,
            };
            let hosted = beating || runner_holds;
            if hosted {
                set_meta(&mut session, "stopRequestedAt", json!(now));
                session.last_activity = now;
                let entry = timeline_entry(
                    "progress",
                    Some("Stop requested".into()),
                    None,
                    Some(json!({ "graceMs": grace })),
                    now,
                );
                session.timeline.push(entry.clone());
                tx.put(Collection::Sessions, &id, None, &session);
                emit_session_appended(tx, &session, &[entry], &[], &[]);
                tx.emit(
                    &session.project_id.clone(),
                    STOP_REQUESTED,
                    &StopRequested {
                        session_id: id.clone(),
                        grace_ms: grace,
                    },
                    Some(&id),
                );
                return Ok(session);
            }
            end_session(tx, &mut session, "stopped", None, "Stopped".into(), now)?;
            Ok(session)
        })
        .await
    }

    /// Starts a finished session's agent again on the machine that ran it, with its agent's
    /// resume command.
    pub async fn resume_session(&self, id: String) -> Result<Session> {
        check_id("sessionId", &id)?;
        let now = now_ms();
        let server_url = self.info.server_url.clone();
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &id)?;
            if !session.is_terminal() {
                return Err(coded(
                    axum::http::StatusCode::CONFLICT,
                    "SESSION_RUNNING",
                    format!(
                        "Session '{id}' is {}; only a finished session resumes",
                        session.status
                    ),
                ));
            }
            let (Some(machine), Some(tool)) = (
                meta_str(&session, "machineId").map(str::to_owned),
                meta_str(&session, "agentTool").map(str::to_owned),
            ) else {
                return Err(coded(
                    axum::http::StatusCode::CONFLICT,
                    "NOT_RESUMABLE",
                    "Only sessions a runner started can be resumed from here",
                ));
            };
            let project = super::load_project(tx, &session.project_id)?;
            let cwd = meta_str(&session, "worktree")
                .map(str::to_owned)
                .unwrap_or(project.working_dir.clone());
            let mut env = session.env.clone();
            env.insert("MAESTRO_SERVER_URL".into(), server_url.clone());
            queue_launch(
                tx,
                &QueuedLaunch {
                    session_id: id.clone(),
                    project_id: session.project_id.clone(),
                    machine_id: machine,
                    agent_tool: tool,
                    cwd,
                    worktree: false,
                    env,
                    prompt: String::new(),
                    resume: true,
                    queued_at: now,
                },
            );
            session.status = "spawning".into();
            session.completed_at = None;
            session.failure_reason = None;
            session.last_activity = now;
            if let Some(meta) = session.metadata.as_mut().and_then(Value::as_object_mut) {
                meta.remove("stopRequestedAt");
            }
            let entry =
                timeline_entry("progress", Some("Resume requested".into()), None, None, now);
            session.timeline.push(entry.clone());
            tx.put(Collection::Sessions, &id, None, &session);
            emit_session_appended(tx, &session, &[entry], &[], &[]);
            Ok(session)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_ids_are_stable_and_valid() {
        let a = runner_id("3f9a", "main");
        assert_eq!(a, runner_id("3f9a", "main"));
        assert_ne!(a, runner_id("3f9a", "other"));
        assert!(maestro_protocol::ids::is_valid_id(&a));
    }
}
