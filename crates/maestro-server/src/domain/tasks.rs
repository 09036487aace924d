//! Tasks: CRUD, the two PATCH modes, children, per-task timeline and docs.
//!
//! The session-mode PATCH (an agent reporting `sessionStatus`) reads and writes the task inside
//! one transaction, so two agents reporting on the same task at once both land (upstream lost
//! one of them).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use maestro_protocol::ids::prefix;
use maestro_protocol::{
    CreateTask, Deleted, Session, TASK_PRIORITIES, TASK_SESSION_STATUSES, TASK_STATUSES, Task,
    TaskDocEntry, TaskTimelineRequest, TaskTimelineResponse, UpdateTask,
};
use serde_json::json;

use super::claims::check_fence;
use super::sessions::{append_timeline, emit_session_updated, link_task};
use super::{Domain, check_enum, check_id, load_project, load_session, load_task, required};
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, Txn, TxnExt, transact};
use crate::util::{new_id, now_ms};

/// Filters of `GET /api/tasks`.
#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    pub project_id: Option<String>,
    pub status: Option<String>,
    /// `Some(None)` = root tasks only (`parentId=null`).
    pub parent_id: Option<Option<String>>,
}

/// Most bytes of serialized task lists kept by [`ListCache`].
const LIST_CACHE_BYTES: usize = 16 << 20;

/// The JSON of unfiltered `GET /api/tasks` answers, per project (`""`: every task), with the
/// tasks collection version it was computed at.
#[derive(Default)]
pub struct ListCache {
    entries: Mutex<HashMap<String, CachedList>>,
}

/// A list's JSON and the tasks collection version it was computed at.
type CachedList = (u64, Arc<[u8]>);

impl ListCache {
    fn get(&self, key: &str, version: u64) -> Option<Arc<[u8]>> {
        let entries = self.entries.lock().expect("list cache lock");
        entries
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, body)| body.clone())
    }

    fn put(&self, key: String, version: u64, body: Arc<[u8]>) {
        if body.len() > LIST_CACHE_BYTES / 4 {
            return;
        }
        let mut entries = self.entries.lock().expect("list cache lock");
        // Entries of an older version are never used again.
        entries.retain(|_, (v, _)| *v >= version);
        let held: usize = entries.values().map(|(_, b)| b.len()).sum();
        if held + body.len() > LIST_CACHE_BYTES {
            entries.clear();
        }
        entries.insert(key, (version, body));
    }
}

impl Domain {
    /// [`Domain::list_tasks`] as the JSON array the API returns. Without `status` or
    /// `parentId` the answer is kept and served again until a task is written anywhere (the
    /// store's version of the tasks collection moves): screens and agents poll this list far
    /// more often than tasks change, and serializing a thousand tasks costs milliseconds.
    pub async fn list_tasks_json(&self, filter: &TaskFilter) -> Result<Arc<[u8]>> {
        let encode = |tasks: Vec<Task>| -> Result<Arc<[u8]>> {
            serde_json::to_vec(&tasks)
                .map(Arc::from)
                .map_err(|e| Error::Internal(format!("cannot encode tasks: {e}")))
        };
        if filter.status.is_some() || filter.parent_id.is_some() {
            return encode(self.list_tasks(filter)?);
        }
        if let Some(p) = &filter.project_id {
            check_id("projectId", p)?;
        }
        // Before the snapshot: what is read below is at least as new as `version`.
        let version = self.store.collection_version(Collection::Tasks).await?;
        let key = filter.project_id.clone().unwrap_or_default();
        if let Some(body) = self.task_lists.get(&key, version) {
            return Ok(body);
        }
        let body = encode(self.list_tasks(filter)?)?;
        self.task_lists.put(key, version, body.clone());
        Ok(body)
    }

    pub async fn create_task(&self, req: CreateTask) -> Result<Task> {
        let project_id = required(req.project_id.as_deref(), "projectId is required")?;
        check_id("projectId", &project_id)?;
        let title = required(req.title.as_deref(), "Task title is required")?;
        if let Some(p) = &req.priority {
            check_enum("priority", p, TASK_PRIORITIES)?;
        }
        if let Some(parent) = &req.parent_id {
            check_id("parentId", parent)?;
        }
        for id in req
            .skill_ids
            .iter()
            .chain(&req.reference_task_ids)
            .flatten()
        {
            check_id("id", id)?;
        }
        let now = now_ms();
        let task = Task {
            id: new_id(prefix::TASK),
            project_id: project_id.clone(),
            parent_id: req.parent_id.clone(),
            title,
            description: req.description.clone().unwrap_or_default(),
            status: "todo".into(),
            task_session_statuses: BTreeMap::new(),
            priority: req.priority.clone().unwrap_or_else(|| "medium".into()),
            created_at: now,
            updated_at: now,
            started_at: None,
            completed_at: None,
            initial_prompt: req.initial_prompt.clone().unwrap_or_default(),
            session_ids: Vec::new(),
            skill_ids: req.skill_ids.clone().unwrap_or_default(),
            agent_ids: Vec::new(),
            dependencies: Vec::new(),
            reference_task_ids: req.reference_task_ids.clone().unwrap_or_default(),
            pinned: None,
            team_member_id: req.team_member_id.clone(),
            team_member_ids: req.team_member_ids.clone(),
        };
        transact(&*self.store, move |tx| {
            match &task.parent_id {
                // Only the project's existence matters here: the commit checks it, no read.
                None => tx.require(Collection::Projects, &project_id, "Project"),
                // A missing project is reported before a missing parent.
                Some(_) => drop(load_project(tx, &project_id)?),
            }
            if let Some(parent_id) = &task.parent_id {
                let parent = tx
                    .get::<Task>(Collection::Tasks, parent_id)?
                    .ok_or_else(|| Error::not_found("Parent task", parent_id))?;
                if parent.project_id != project_id {
                    return Err(Error::validation(
                        "Parent task belongs to a different project",
                    ));
                }
            }
            // A fresh id: the commit checks it is free, without a read here.
            tx.insert(Collection::Tasks, &task.id, Some(&project_id), &task);
            tx.emit(&project_id, "task:created", &task, None);
            Ok(task.clone())
        })
        .await
    }

    pub fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        if let Some(p) = &filter.project_id {
            check_id("projectId", p)?;
        }
        let mut r = self.reader()?;
        let tasks: Vec<Task> = r.list(Collection::Tasks, filter.project_id.as_deref())?;
        Ok(tasks
            .into_iter()
            .filter(|t| filter.status.as_ref().is_none_or(|s| &t.status == s))
            .filter(|t| {
                filter
                    .parent_id
                    .as_ref()
                    .is_none_or(|p| t.parent_id.as_ref() == p.as_ref())
            })
            .collect())
    }

    pub fn get_task(&self, id: &str) -> Result<Task> {
        check_id("taskId", id)?;
        load_task(&mut *self.reader()?, id)
    }

    /// Direct children of a task, in creation order.
    pub fn task_children(&self, id: &str) -> Result<Vec<Task>> {
        check_id("taskId", id)?;
        let mut r = self.reader()?;
        let parent = load_task(&mut *r, id)?;
        let tasks: Vec<Task> = r.list(Collection::Tasks, Some(&parent.project_id))?;
        Ok(tasks
            .into_iter()
            .filter(|t| t.parent_id.as_deref() == Some(id))
            .collect())
    }

    pub async fn update_task(&self, id: String, req: UpdateTask) -> Result<Task> {
        check_id("taskId", &id)?;
        if req.update_source.as_deref() == Some("session") {
            return self.report_task_session_status(id, req).await;
        }
        if let Some(t) = &req.title
            && t.trim().is_empty()
        {
            return Err(Error::validation("Task title cannot be empty"));
        }
        if let Some(s) = &req.status {
            check_enum("status", s, TASK_STATUSES)?;
        }
        if let Some(p) = &req.priority {
            check_enum("priority", p, TASK_PRIORITIES)?;
        }
        for (session, status) in req.task_session_statuses.iter().flatten() {
            check_id("sessionId", session)?;
            check_enum("taskSessionStatuses", status, TASK_SESSION_STATUSES)?;
        }
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let before = load_task(tx, &id)?;
            let mut task = before.clone();
            if let Some(t) = &req.title {
                task.title = t.trim().to_owned();
            }
            if let Some(d) = &req.description {
                task.description = d.clone();
            }
            if let Some(p) = &req.priority {
                task.priority = p.clone();
            }
            if let Some(p) = req.pinned {
                task.pinned = Some(p);
            }
            if let Some(m) = &req.team_member_id {
                task.team_member_id = Some(m.clone());
            }
            if let Some(s) = &req.status {
                task.status = s.clone();
                if s == "in_progress" && task.started_at.is_none() {
                    task.started_at = Some(now);
                }
                if s == "completed" && task.completed_at.is_none() {
                    task.completed_at = Some(now);
                }
            }
            for (field, value) in [
                (&mut task.session_ids, &req.session_ids),
                (&mut task.skill_ids, &req.skill_ids),
                (&mut task.agent_ids, &req.agent_ids),
                (&mut task.reference_task_ids, &req.reference_task_ids),
            ] {
                if let Some(v) = value {
                    *field = v.clone();
                }
            }
            if let Some(ids) = &req.team_member_ids {
                task.team_member_ids = Some(ids.clone());
            }
            if let Some(map) = &req.task_session_statuses {
                for (k, v) in map {
                    task.task_session_statuses.insert(k.clone(), v.clone());
                }
            }
            task.updated_at = now;
            tx.put(Collection::Tasks, &id, None, &task);
            emit_task_updated(tx, &before, &task);
            Ok(task)
        })
        .await
    }

    /// Session-mode PATCH: an agent sets its own status on the task, linking itself first if
    /// needed.
    async fn report_task_session_status(&self, id: String, req: UpdateTask) -> Result<Task> {
        let session_id = required(
            req.session_id.as_deref(),
            "sessionId is required when updateSource is 'session'",
        )?;
        check_id("sessionId", &session_id)?;
        let status = required(
            req.session_status.as_deref(),
            "sessionStatus is required when updateSource is 'session'",
        )?;
        check_enum("sessionStatus", &status, TASK_SESSION_STATUSES)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let task = load_task(tx, &id)?;
            let session = load_session(tx, &session_id)?;
            if session.project_id != task.project_id {
                return Err(Error::validation(
                    "Session and task belong to different projects",
                ));
            }
            check_fence(tx, &id, &session_id, req.fencing_token, now)?;
            if !session.task_ids.contains(&id) {
                link_task(tx, session, task, now)?;
            }
            let before = load_task(tx, &id)?;
            let mut task = before.clone();
            task.task_session_statuses
                .insert(session_id.clone(), status.clone());
            task.updated_at = now;
            tx.put(Collection::Tasks, &id, None, &task);
            emit_task_updated(tx, &before, &task);
            Ok(task)
        })
        .await
    }

    /// Deletes a task and all its descendants; `task:deleted` goes out for each, children
    /// before their parents. Deleted ids are also removed from the sessions that had them.
    pub async fn delete_task(&self, id: String) -> Result<Deleted> {
        check_id("taskId", &id)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let root = load_task(tx, &id)?;
            let all: Vec<Task> = tx.list(Collection::Tasks, Some(&root.project_id))?;
            let mut doomed = Vec::new();
            collect_descendants(&all, &id, &mut doomed);
            doomed.push(root.clone());
            let mut touched_sessions = Vec::new();
            for task in &doomed {
                tx.delete(Collection::Tasks, &task.id);
                // Its lease record (and deadline) goes with it; the fencing counter stays, so
                // a token is never reused.
                tx.delete(Collection::Claims, &task.id);
                tx.schedule(crate::ports::Deadline::ClaimExpiry, &task.id, None);
                tx.emit(
                    &root.project_id,
                    "task:deleted",
                    &json!({ "id": task.id }),
                    None,
                );
                for s in &task.session_ids {
                    if !touched_sessions.contains(s) {
                        touched_sessions.push(s.clone());
                    }
                }
            }
            for sid in touched_sessions {
                if let Some(mut session) = tx.get::<Session>(Collection::Sessions, &sid)? {
                    let len = session.task_ids.len();
                    session
                        .task_ids
                        .retain(|t| !doomed.iter().any(|d| &d.id == t));
                    if session.task_ids.len() != len {
                        session.last_activity = now;
                        tx.put(Collection::Sessions, &sid, None, &session);
                        emit_session_updated(tx, &session);
                    }
                }
            }
            Ok(Deleted {
                success: true,
                id: id.clone(),
            })
        })
        .await
    }

    /// `POST /api/tasks/:id/timeline`: a timeline entry on `sessionId`'s session about this task.
    pub async fn task_timeline(
        &self,
        id: String,
        req: TaskTimelineRequest,
    ) -> Result<TaskTimelineResponse> {
        check_id("taskId", &id)?;
        let message = match req.message.as_deref() {
            Some(m) if !m.trim().is_empty() => m.to_owned(),
            _ => return Err(Error::validation("message is required")),
        };
        let session_id = required(req.session_id.as_deref(), "sessionId is required")?;
        check_id("sessionId", &session_id)?;
        let kind = req.kind.clone().unwrap_or_else(|| "progress".into());
        let now = now_ms();
        let token = req.fencing_token;
        transact(&*self.store, move |tx| {
            load_task(tx, &id)?;
            let session = load_session(tx, &session_id)?;
            check_fence(tx, &id, &session_id, token, now)?;
            append_timeline(
                tx,
                session,
                &kind,
                Some(message.clone()),
                Some(id.clone()),
                None,
                now,
            )?;
            Ok(TaskTimelineResponse {
                success: true,
                task_id: id.clone(),
                session_id: session_id.clone(),
                message: message.clone(),
                kind: kind.clone(),
            })
        })
        .await
    }

    /// Docs about this task from every session working on it, oldest first.
    pub fn task_docs(&self, id: &str) -> Result<Vec<TaskDocEntry>> {
        check_id("taskId", id)?;
        let mut r = self.reader()?;
        let task = load_task(&mut *r, id)?;
        let sessions: Vec<Session> = r.list(Collection::Sessions, Some(&task.project_id))?;
        let mut docs: Vec<TaskDocEntry> = sessions
            .into_iter()
            .filter(|s| s.task_ids.iter().any(|t| t == id))
            .flat_map(|s| {
                let (sid, name) = (s.id.clone(), s.name.clone());
                s.docs
                    .into_iter()
                    .filter(|d| d.task_id.as_deref().is_none_or(|t| t == id))
                    .map(move |doc| TaskDocEntry {
                        doc,
                        session_id: sid.clone(),
                        session_name: name.clone(),
                    })
            })
            .collect();
        docs.sort_by_key(|d| d.doc.added_at);
        Ok(docs)
    }
}

fn collect_descendants(all: &[Task], parent: &str, out: &mut Vec<Task>) {
    for child in all
        .iter()
        .filter(|t| t.parent_id.as_deref() == Some(parent))
    {
        collect_descendants(all, &child.id, out);
        out.push(child.clone());
    }
}

/// `task:updated`, then the notifications its changes call for.
pub(crate) fn emit_task_updated(tx: &mut dyn Txn, before: &Task, after: &Task) {
    let scope = after.project_id.as_str();
    tx.emit(scope, "task:updated", after, None);
    if before.status != after.status {
        let name = match after.status.as_str() {
            "completed" => Some("notify:task_completed"),
            "cancelled" => Some("notify:task_failed"),
            "in_review" => Some("notify:task_in_review"),
            "blocked" => Some("notify:task_blocked"),
            _ => None,
        };
        if let Some(name) = name {
            tx.emit(
                scope,
                name,
                &json!({ "taskId": after.id, "title": after.title }),
                None,
            );
        }
    }
    for (session_id, status) in &after.task_session_statuses {
        if before.task_session_statuses.get(session_id) == Some(status) {
            continue;
        }
        let name = match status.as_str() {
            "completed" => "notify:task_session_completed",
            "failed" => "notify:task_session_failed",
            _ => continue,
        };
        tx.emit(
            scope,
            name,
            &json!({ "taskId": after.id, "sessionId": session_id, "title": after.title }),
            Some(session_id),
        );
    }
}
