//! Spawning an agent session.
//!
//! The server validates the request, writes the agent's manifest itself (upstream shelled out
//! to its Node CLI), and then, in one transaction, creates the `spawning` session, links its
//! tasks and emits `session:updated`, `session:spawn`, `task:session_added`… A launcher (the
//! desktop app, the web app's host, `maestro run`) reacts to `session:spawn` by starting the
//! agent with `command`, `cwd` and `envVars`.
//!
//! Failure leaves nothing behind: the manifest is removed if the transaction fails, and the
//! session never exists if the manifest cannot be written. Provider API keys never enter the
//! session or the event: the launcher supplies them from its own environment. An idempotency
//! key makes a retried request return the first answer instead of a second session.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use maestro_protocol::ids::{is_valid_id, prefix};
use maestro_protocol::{
    MODES, Project, Session, SpawnEvent, SpawnRequest, SpawnResponse, Task, TeamMember,
    TimelineEvent,
};
use serde_json::{Value, json};

use super::team_members::load_member;
use super::{Domain, load_project};
use crate::error::{Error, Result};
use crate::ports::{Collection, Deadline, ReaderExt, Txn, TxnExt, transact};
use crate::util::{files, iso8601, new_id, now_ms};

fn coded(status: StatusCode, code: &'static str, message: impl Into<String>) -> Error {
    Error::Coded {
        status,
        code,
        message: message.into(),
        details: None,
    }
}

/// Everything resolved before anything is written.
struct Plan {
    project: Project,
    tasks: Vec<Task>,
    members: Vec<TeamMember>,
    mode: String,
    source: String,
    parent: Option<String>,
    model: String,
    agent_tool: String,
    /// The machine whose runner runs the agent.
    machine_id: String,
    /// Who starts the agent: a runner, or the desktop app (on `session:spawn`).
    by_runner: bool,
    prompt: String,
}

fn model_rank(model: &str) -> u8 {
    match model {
        m if m.contains("opus") => 3,
        m if m.contains("sonnet") => 2,
        m if m.contains("haiku") => 1,
        _ => 0,
    }
}

/// How long a spawn's `Idempotency-Key` is remembered: a retry within it gets the first
/// answer; after it, the key may be used again.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// When the answer remembered for a key is forgotten.
fn remembered_until(response: &SpawnResponse) -> i64 {
    response.session.last_activity + IDEMPOTENCY_RETENTION_MS
}

/// Removes a remembered answer and its deadline.
pub(crate) fn forget_answer(tx: &mut dyn Txn, key: &str) {
    tx.delete(Collection::Idempotency, key);
    tx.schedule(Deadline::Idempotency, key, None);
}

impl Domain {
    /// Forgets remembered answers older than [`IDEMPOTENCY_RETENTION_MS`], at most `limit`.
    pub(crate) async fn forget_idempotency(&self, now: i64, limit: usize) -> Result<usize> {
        let due = self.store.due(Deadline::Idempotency, now, limit)?;
        let n = due.len();
        if n > 0 {
            transact(&*self.store, move |tx| {
                for key in &due {
                    forget_answer(tx, key);
                }
                Ok(())
            })
            .await?;
        }
        Ok(n)
    }

    /// Indexes the deadline of every remembered answer (stored before the index existed).
    pub(crate) async fn reindex_idempotency(&self) -> Result<usize> {
        let keys: Vec<(String, i64)> = self
            .reader()?
            .entries::<SpawnResponse>(Collection::Idempotency, None)?
            .into_iter()
            .map(|(key, response)| (key, remembered_until(&response)))
            .collect();
        let n = keys.len();
        if n > 0 {
            transact(&*self.store, move |tx| {
                for (key, due) in &keys {
                    tx.schedule(Deadline::Idempotency, key, Some(*due));
                }
                Ok(())
            })
            .await?;
        }
        Ok(n)
    }

    pub async fn spawn_session(
        &self,
        req: SpawnRequest,
        idempotency_key: Option<String>,
    ) -> Result<SpawnResponse> {
        if let Some(key) = &idempotency_key
            && (key.is_empty() || key.len() > 200 || key.chars().any(char::is_control))
        {
            return Err(Error::validation(
                "Idempotency-Key must be 1-200 printable characters",
            ));
        }
        let idem_key = idempotency_key.map(|k| format!("spawn:{k}"));
        if let Some(key) = &idem_key
            && let Some(previous) = self
                .reader()?
                .get::<SpawnResponse>(Collection::Idempotency, key)?
        {
            return Ok(previous);
        }

        let plan = self.plan_spawn(&req)?;
        let session_id = new_id(prefix::SESSION);
        let manifest_path = self
            .info
            .session_dir
            .join(&session_id)
            .join("manifest.json");
        let manifest = build_manifest(&plan, &req, &session_id);
        write_manifest(&manifest_path, &manifest)
            .await
            .map_err(|e| {
                coded(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "manifest_generation_failed",
                    format!("Failed to generate manifest: {e}"),
                )
            })?;

        let manifest_str = manifest_path.to_string_lossy().into_owned();
        let mut env = BTreeMap::new();
        env.insert("MAESTRO_SESSION_ID".into(), session_id.clone());
        env.insert("MAESTRO_MANIFEST_PATH".into(), manifest_str.clone());
        env.insert("MAESTRO_SERVER_URL".into(), self.info.server_url.clone());
        env.insert("MAESTRO_MODE".into(), plan.mode.clone());
        env.insert("MAESTRO_PROJECT_ID".into(), plan.project.id.clone());
        env.insert(
            "MAESTRO_TASK_IDS".into(),
            plan.tasks
                .iter()
                .map(|t| t.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        env.insert(
            "DATA_DIR".into(),
            self.info.data_dir.to_string_lossy().into_owned(),
        );
        env.insert(
            "SESSION_DIR".into(),
            self.info.session_dir.to_string_lossy().into_owned(),
        );

        let now = now_ms();
        let task_ids: Vec<String> = plan.tasks.iter().map(|t| t.id.clone()).collect();
        let single_member = (plan.members.len() == 1).then(|| plan.members[0].id.clone());
        let member_ids = (!plan.members.is_empty()).then(|| {
            plan.members
                .iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>()
        });
        let launcher = if plan.by_runner { "runner" } else { "desktop" };
        let mut timeline = vec![TimelineEvent {
            id: new_id(prefix::EVENT),
            kind: "session_started".into(),
            timestamp: now,
            message: Some("Session created".into()),
            task_id: None,
            metadata: None,
            extra: Default::default(),
        }];
        for t in &task_ids {
            timeline.push(TimelineEvent {
                id: new_id(prefix::EVENT),
                kind: "task_started".into(),
                timestamp: now,
                message: Some("Started working on task".into()),
                task_id: Some(t.clone()),
                metadata: None,
                extra: Default::default(),
            });
        }
        let verb = if plan.mode == "coordinate" {
            "Coordinate"
        } else {
            "Execute"
        };
        let session = Session {
            id: session_id.clone(),
            project_id: plan.project.id.clone(),
            task_ids: task_ids.clone(),
            name: req
                .session_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| format!("{verb} for {}", task_ids[0])),
            agent_id: None,
            env: env.clone(),
            status: "spawning".into(),
            started_at: now,
            last_activity: now,
            completed_at: None,
            hostname: self.info.hostname.clone(),
            platform: self.info.platform.clone(),
            events: Vec::new(),
            timeline,
            docs: Vec::new(),
            metadata: Some(json!({
                "skills": req.skills.clone().unwrap_or_default(),
                "spawnedBy": plan.parent,
                "spawnSource": plan.source,
                "mode": plan.mode,
                "teamMemberId": single_member,
                "teamMemberIds": member_ids,
                "context": req.context.clone().unwrap_or_else(|| json!({})),
                "agentTool": plan.agent_tool,
                "model": plan.model,
                "launcher": launcher,
                "machineId": plan.machine_id,
                "worktree": req.worktree.unwrap_or(false),
            })),
            needs_input: None,
            team_member_id: single_member.clone(),
            team_member_ids: member_ids.clone(),
            failure_reason: None,
            online: None,
            last_seen: None,
            last_progress: None,
            stalled: None,
        };
        let event = SpawnEvent {
            session: session.clone(),
            command: format!(
                "maestro {} init",
                if plan.mode == "coordinate" {
                    "orchestrator"
                } else {
                    "worker"
                }
            ),
            cwd: plan.project.working_dir.clone(),
            env_vars: env,
            manifest,
            project_id: plan.project.id.clone(),
            task_ids: task_ids.clone(),
            spawn_source: plan.source.clone(),
            parent_session_id: plan.parent.clone(),
            is_spawn_created: true,
        };
        let response = SpawnResponse {
            success: true,
            session_id: session_id.clone(),
            manifest_path: manifest_str,
            message: if plan.by_runner {
                format!(
                    "Spawn queued; a runner on machine {} starts the agent",
                    plan.machine_id
                )
            } else {
                "Spawn requested; a launcher will start the agent".into()
            },
            session: session.clone(),
        };

        let queued = plan.by_runner.then(|| super::runners::QueuedLaunch {
            session_id: session_id.clone(),
            project_id: plan.project.id.clone(),
            machine_id: plan.machine_id.clone(),
            agent_tool: plan.agent_tool.clone(),
            cwd: plan.project.working_dir.clone(),
            worktree: req.worktree.unwrap_or(false),
            env: event.env_vars.clone(),
            prompt: plan.prompt.clone(),
            resume: false,
            queued_at: now,
        });
        let project_id = plan.project.id.clone();
        let key = idem_key.clone();
        let result = transact(&*self.store, move |tx| {
            if let Some(key) = &key
                && let Some(previous) = tx.get::<SpawnResponse>(Collection::Idempotency, key)?
            {
                return Ok((previous, false));
            }
            load_project(tx, &project_id)?;
            for t in &task_ids {
                let mut task: Task = tx
                    .get(Collection::Tasks, t)?
                    .ok_or_else(|| task_not_found(t))?;
                if !task.session_ids.contains(&session_id) {
                    task.session_ids.push(session_id.clone());
                }
                // Touched, as upstream does: the desktop app orders tasks by `updatedAt`.
                task.updated_at = now;
                tx.put(Collection::Tasks, t, None, &task);
            }
            tx.put(
                Collection::Sessions,
                &session_id,
                Some(&project_id),
                &session,
            );
            if let Some(key) = &key {
                tx.put(Collection::Idempotency, key, Some(&project_id), &response);
                tx.schedule(
                    Deadline::Idempotency,
                    key,
                    Some(remembered_until(&response)),
                );
            }
            super::sessions::emit_session_updated(tx, &session);
            match &queued {
                // A runner starts it; `session:spawn` would make a desktop app start it too.
                Some(launch) => super::runners::queue_launch(tx, launch),
                None => tx.emit(&project_id, "session:spawn", &event, Some(&session_id)),
            }
            for t in &task_ids {
                tx.emit(
                    &project_id,
                    "task:session_added",
                    &json!({ "taskId": t, "sessionId": session_id }),
                    Some(&session_id),
                );
            }
            Ok((response.clone(), true))
        })
        .await;
        match result {
            Ok((response, true)) => Ok(response),
            Ok((previous, false)) => {
                // A concurrent retry won the race; our manifest is not needed.
                remove_manifest(&manifest_path).await;
                Ok(previous)
            }
            Err(e) => {
                remove_manifest(&manifest_path).await;
                Err(e)
            }
        }
    }

    /// Validates in upstream's order and resolves tasks, members and defaults.
    fn plan_spawn(&self, req: &SpawnRequest) -> Result<Plan> {
        let bad = |code, msg: &str| coded(StatusCode::BAD_REQUEST, code, msg);
        let project_id = match req.project_id.as_deref() {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => return Err(bad("missing_project_id", "projectId is required")),
        };
        let task_ids = match &req.task_ids {
            Some(ids) if !ids.is_empty() && ids.iter().all(|t| is_valid_id(t)) => ids.clone(),
            _ => {
                return Err(bad(
                    "invalid_task_ids",
                    "taskIds must be a non-empty array of task ids",
                ));
            }
        };
        let source = req.spawn_source.clone().unwrap_or_else(|| "ui".into());
        if source != "ui" && source != "session" {
            return Err(bad(
                "invalid_spawn_source",
                "spawnSource must be 'ui' or 'session'",
            ));
        }
        let mut r = self.reader()?;
        let parent = if source == "session" {
            let Some(parent) = req.session_id.clone().filter(|s| !s.is_empty()) else {
                return Err(bad(
                    "missing_session_id",
                    "sessionId (the parent session) is required when spawnSource is 'session'",
                ));
            };
            let exists =
                is_valid_id(&parent) && r.get_raw(Collection::Sessions, &parent)?.is_some();
            if !exists {
                return Err(coded(
                    StatusCode::NOT_FOUND,
                    "parent_session_not_found",
                    format!("Parent session with id '{parent}' not found"),
                ));
            }
            Some(parent)
        } else {
            None
        };
        let project_ok = is_valid_id(&project_id);
        let member_ids: Vec<String> = match (&req.team_member_ids, &req.team_member_id) {
            (Some(ids), _) if !ids.is_empty() => ids.clone(),
            (_, Some(id)) => vec![id.clone()],
            _ => Vec::new(),
        };
        let members: Vec<TeamMember> = if project_ok {
            member_ids
                .iter()
                .filter(|id| is_valid_id(id))
                .filter_map(|id| load_member(&mut *r, &project_id, id).ok())
                .collect()
        } else {
            Vec::new()
        };
        let mode = req
            .mode
            .clone()
            .or_else(|| members.iter().find_map(|m| m.mode.clone()))
            .unwrap_or_else(|| "execute".into());
        if !MODES.contains(&mode.as_str()) {
            return Err(bad(
                "invalid_mode",
                "mode must be 'execute' or 'coordinate'",
            ));
        }
        let mut tasks = Vec::with_capacity(task_ids.len());
        for t in &task_ids {
            tasks.push(
                r.get::<Task>(Collection::Tasks, t)?
                    .ok_or_else(|| task_not_found(t))?,
            );
        }
        let project = if project_ok {
            r.get::<Project>(Collection::Projects, &project_id)?
        } else {
            None
        }
        .ok_or_else(|| {
            coded(
                StatusCode::NOT_FOUND,
                "project_not_found",
                format!("Project with id '{project_id}' not found"),
            )
        })?;
        if let Some(t) = tasks.iter().find(|t| t.project_id != project_id) {
            return Err(task_not_found(&t.id));
        }
        let model = req.model.clone().unwrap_or_else(|| {
            members
                .iter()
                .filter_map(|m| m.model.clone())
                .max_by_key(|m| model_rank(m))
                .unwrap_or_else(|| "sonnet".into())
        });
        let agent_tool = req
            .agent_tool
            .clone()
            .or_else(|| members.iter().find_map(|m| m.agent_tool.clone()))
            .unwrap_or_else(|| "claude-code".into());
        if agent_tool.is_empty()
            || agent_tool.len() > 64
            || agent_tool.chars().any(char::is_control)
        {
            return Err(bad(
                "invalid_agent_tool",
                "agentTool must be 1-64 printable characters",
            ));
        }
        // The spawn's machine, else the project's, else the server's own.
        let machine_id = match &req.machine_id {
            Some(m) if is_valid_id(m) => m.clone(),
            Some(_) => return Err(bad("invalid_machine_id", "machineId is not a valid id")),
            None => project
                .machine_id
                .clone()
                .unwrap_or_else(|| self.info.machine_id.clone()),
        };
        let launcher = req
            .launcher
            .clone()
            .unwrap_or_else(|| self.info.spawn_launcher.clone());
        let by_runner = match launcher.as_str() {
            "runner" => true,
            "desktop" => false,
            // auto: a connected desktop app launches what it hears; else this machine's
            // runners, when the machine has one (it may be offline for now: the spawn waits).
            "auto" if req.launcher.is_none() => {
                self.desktop_clients
                    .load(std::sync::atomic::Ordering::Relaxed)
                    <= 0
                    && self.machine_has_runner(&machine_id)?
            }
            _ => {
                return Err(bad(
                    "invalid_launcher",
                    "launcher must be 'runner' or 'desktop'",
                ));
            }
        };
        let prompt = match &req.prompt {
            Some(p) if p.len() > 64 * 1024 => {
                return Err(bad("invalid_prompt", "prompt must be at most 64 KiB"));
            }
            Some(p) if !p.trim().is_empty() => p.clone(),
            _ => default_prompt(&tasks),
        };
        Ok(Plan {
            project,
            tasks,
            members,
            mode,
            source,
            parent,
            model,
            agent_tool,
            machine_id,
            by_runner,
            prompt,
        })
    }
}

/// The first thing a spawned agent is told: its tasks.
fn default_prompt(tasks: &[Task]) -> String {
    let mut out = String::new();
    for t in tasks {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&format!("Task {}: {}", t.id, t.title));
        if !t.description.trim().is_empty() {
            out.push_str("\n\n");
            out.push_str(t.description.trim());
        }
    }
    out
}

fn task_not_found(id: &str) -> Error {
    Error::Coded {
        status: StatusCode::NOT_FOUND,
        code: "task_not_found",
        message: format!("Task with id '{id}' not found"),
        details: Some(json!({ "taskId": id })),
    }
}

/// The manifest an agent reads at start-up, in the upstream CLI's format.
fn build_manifest(plan: &Plan, req: &SpawnRequest, session_id: &str) -> Value {
    let tasks: Vec<Value> = plan
        .tasks
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "title": t.title,
                "description": t.description,
                "acceptanceCriteria": ["The task is done when its description is fully satisfied"],
                "projectId": t.project_id,
                "createdAt": iso8601(t.created_at),
                "parentId": t.parent_id,
                "dependencies": t.dependencies,
                "priority": t.priority,
            })
        })
        .collect();
    let mut reference_ids: Vec<String> = Vec::new();
    for t in &plan.tasks {
        for r in &t.reference_task_ids {
            if !reference_ids.contains(r) {
                reference_ids.push(r.clone());
            }
        }
    }
    let mut m = json!({
        "manifestVersion": "1.0",
        "sessionId": session_id,
        "mode": plan.mode,
        "tasks": tasks,
        "session": {
            "model": plan.model,
            "permissionMode": "acceptEdits",
            "thinkingMode": "auto",
            "workingDirectory": plan.project.working_dir,
        },
        "context": { "custom": { "taskIds": plan.tasks.iter().map(|t| &t.id).collect::<Vec<_>>() } },
        "skills": req.skills.clone().unwrap_or_default(),
        "agentTool": plan.agent_tool,
    });
    if !reference_ids.is_empty() {
        m["referenceTaskIds"] = json!(reference_ids);
    }
    if let [member] = plan.members.as_slice() {
        m["teamMemberId"] = json!(member.id);
        m["teamMemberName"] = json!(member.name);
        m["teamMemberAvatar"] = json!(member.avatar);
        m["teamMemberIdentity"] = json!(member.identity);
        m["teamMemberCapabilities"] = json!(member.capabilities);
        m["teamMemberCommandPermissions"] = json!(member.command_permissions);
        m["teamMemberWorkflowTemplateId"] = json!(member.workflow_template_id);
        m["teamMemberCustomWorkflow"] = json!(member.custom_workflow);
    } else if plan.members.len() > 1 {
        m["teamMemberProfiles"] = json!(plan.members);
    }
    if let Some(delegates) = &req.delegate_team_member_ids
        && plan.members.len() <= 1
    {
        m["teamMembers"] = json!(delegates);
    }
    m
}

async fn write_manifest(path: &std::path::Path, manifest: &Value) -> std::io::Result<()> {
    let dir = path.parent().expect("manifest path has a parent");
    files::create_private_dir(dir)?;
    let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    files::write_atomic_async(path.to_path_buf(), bytes, files::PRIVATE_FILE).await
}

async fn remove_manifest(path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
}
