//! Sessions: one agent run. Create, PATCH (status, needs-input), timeline, events, docs,
//! task links and modals.
//!
//! Status changes to `completed`, `failed` or `stopped` close the session's open per-task
//! statuses in the same transaction.

use std::path::PathBuf;

use maestro_protocol::ids::prefix;
use maestro_protocol::{
    AddDoc, AppendSessionEvent, AppendTimeline, CreateSession, Deleted, DocEntry, ModalAck,
    ModalAction, ModalShown, NeedsInput, SESSION_STATUSES, SESSION_UPDATE_TAIL, Session,
    SessionAppended, SessionEvent, ShowModal, Task, TimelineEvent, TimelinePage, UpdateSession,
};
use serde_json::{Value, json};

use super::approvals;
use super::claims::release_all;
use super::{Domain, check_enum, check_id, load_project, load_session, load_task, required};
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, Txn, TxnExt, transact};
use crate::util::{files, new_id, now_ms};

/// Filters of `GET /api/sessions`.
#[derive(Debug, Default, Clone)]
pub struct SessionFilter {
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    pub status: Option<String>,
    /// Only sessions still running: `spawning`, `idle` or `working`.
    pub active: bool,
}

const ACTIVE_STATUSES: &[&str] = &["spawning", "idle", "working"];

pub(crate) fn timeline_entry(
    kind: &str,
    message: Option<String>,
    task_id: Option<String>,
    metadata: Option<Value>,
    now: i64,
) -> TimelineEvent {
    TimelineEvent {
        id: new_id(prefix::EVENT),
        kind: kind.to_owned(),
        timestamp: now,
        message,
        task_id,
        metadata,
        extra: Default::default(),
    }
}

/// Default page size of `GET /api/sessions/:id/timeline`.
pub const TIMELINE_PAGE_DEFAULT: usize = 100;
/// Largest page of `GET /api/sessions/:id/timeline` (a larger `limit` is a 400).
pub const TIMELINE_PAGE_MAX: usize = 500;

/// The last `n` items of `items`.
fn tail<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    items[items.len().saturating_sub(n)..].to_vec()
}

/// The payload of `session:updated`: `session` with its timeline and events cut to their last
/// [`SESSION_UPDATE_TAIL`] entries and its docs without `content`, so that the event's size does
/// not grow with the session. REST answers keep the whole session.
pub(crate) fn session_update_payload(session: &Session) -> Session {
    let Session {
        id,
        project_id,
        task_ids,
        name,
        agent_id,
        env,
        status,
        started_at,
        last_activity,
        completed_at,
        hostname,
        platform,
        events,
        timeline,
        docs,
        metadata,
        needs_input,
        team_member_id,
        team_member_ids,
        failure_reason,
        online,
        last_seen,
        last_progress,
        stalled,
    } = session;
    Session {
        id: id.clone(),
        project_id: project_id.clone(),
        task_ids: task_ids.clone(),
        name: name.clone(),
        agent_id: agent_id.clone(),
        env: env.clone(),
        status: status.clone(),
        started_at: *started_at,
        last_activity: *last_activity,
        completed_at: *completed_at,
        hostname: hostname.clone(),
        platform: platform.clone(),
        events: tail(events, SESSION_UPDATE_TAIL),
        timeline: tail(timeline, SESSION_UPDATE_TAIL),
        docs: docs
            .iter()
            .map(|d| DocEntry {
                id: d.id.clone(),
                title: d.title.clone(),
                file_path: d.file_path.clone(),
                content: None,
                task_id: d.task_id.clone(),
                added_at: d.added_at,
                added_by: d.added_by.clone(),
            })
            .collect(),
        metadata: metadata.clone(),
        needs_input: needs_input.clone(),
        team_member_id: team_member_id.clone(),
        team_member_ids: team_member_ids.clone(),
        failure_reason: failure_reason.clone(),
        online: *online,
        last_seen: *last_seen,
        last_progress: *last_progress,
        stalled: *stalled,
    }
}

/// Emits `session:updated` for `session` with the bounded payload of
/// [`session_update_payload`]. Every `session:updated` goes through here.
pub(crate) fn emit_session_updated(tx: &mut dyn Txn, session: &Session) {
    tx.emit(
        &session.project_id,
        "session:updated",
        &session_update_payload(session),
        Some(&session.id),
    );
}

/// Emits `session:appended` with just the items this change added (when it added any), then
/// the bounded `session:updated`. `session` is the session after the change.
pub(crate) fn emit_session_appended(
    tx: &mut dyn Txn,
    session: &Session,
    timeline: &[TimelineEvent],
    events: &[SessionEvent],
    docs: &[DocEntry],
) {
    if !(timeline.is_empty() && events.is_empty() && docs.is_empty()) {
        let appended = SessionAppended {
            session_id: session.id.clone(),
            project_id: session.project_id.clone(),
            timeline: timeline.to_vec(),
            events: events.to_vec(),
            docs: docs.to_vec(),
            status: session.status.clone(),
            last_activity: session.last_activity,
            needs_input: session.needs_input.clone(),
            timeline_length: session.timeline.len() as u64,
            events_length: session.events.len() as u64,
            docs_length: session.docs.len() as u64,
        };
        tx.emit(
            &session.project_id,
            "session:appended",
            &appended,
            Some(&session.id),
        );
    }
    emit_session_updated(tx, session);
}

/// The page of `timeline` before index `before` (default: the end), at most `limit` entries
/// (default [`TIMELINE_PAGE_DEFAULT`], at most [`TIMELINE_PAGE_MAX`]).
pub(crate) fn timeline_page(
    timeline: &[TimelineEvent],
    before: Option<usize>,
    limit: Option<usize>,
) -> Result<TimelinePage> {
    let total = timeline.len();
    let limit = limit.unwrap_or(TIMELINE_PAGE_DEFAULT);
    if limit == 0 || limit > TIMELINE_PAGE_MAX {
        return Err(Error::validation(format!(
            "limit must be between 1 and {TIMELINE_PAGE_MAX}"
        )));
    }
    let before = before.unwrap_or(total).min(total);
    let start = before.saturating_sub(limit);
    Ok(TimelinePage {
        items: timeline[start..before].to_vec(),
        total: total as u64,
        start: start as u64,
    })
}

/// An ended session waits for nobody: its needs-input flag goes off with it, so no phone
/// keeps showing "waiting for input" on a session that completed, failed or was stopped.
pub(crate) fn clear_needs_input(session: &mut Session) {
    if session.needs_input.as_ref().is_some_and(|n| n.active) {
        session.needs_input = Some(NeedsInput::default());
    }
}

impl Domain {
    pub async fn create_session(&self, req: CreateSession) -> Result<Session> {
        let task_ids = match (&req.task_ids, &req.task_id) {
            (Some(ids), _) => ids.clone(),
            (None, Some(id)) => vec![id.clone()],
            (None, None) => return Err(Error::validation("taskIds is required")),
        };
        let project_id = required(req.project_id.as_deref(), "projectId is required")?;
        check_id("projectId", &project_id)?;
        for t in &task_ids {
            check_id("taskIds", t)?;
        }
        let id = match &req.id {
            Some(id) => {
                check_id("id", id)?;
                id.clone()
            }
            None => new_id(prefix::SESSION),
        };
        let status = req.status.clone().unwrap_or_else(|| "idle".into());
        check_enum("status", &status, SESSION_STATUSES)?;
        let now = now_ms();
        let mut timeline = vec![timeline_entry(
            "session_started",
            Some("Session created".into()),
            None,
            None,
            now,
        )];
        for t in &task_ids {
            timeline.push(timeline_entry(
                "task_started",
                Some("Started working on task".into()),
                Some(t.clone()),
                None,
                now,
            ));
        }
        let mut dedup = Vec::new();
        for t in task_ids {
            if !dedup.contains(&t) {
                dedup.push(t);
            }
        }
        let session = Session {
            id: id.clone(),
            project_id: project_id.clone(),
            task_ids: dedup,
            name: req.name.clone().unwrap_or_else(|| "Unnamed Session".into()),
            agent_id: req.agent_id.clone(),
            env: req.env.clone().unwrap_or_default(),
            status: status.clone(),
            started_at: now,
            last_activity: now,
            completed_at: None,
            hostname: self.info.hostname.clone(),
            platform: self.info.platform.clone(),
            events: Vec::new(),
            timeline,
            docs: Vec::new(),
            metadata: req.metadata.clone(),
            needs_input: None,
            team_member_id: None,
            team_member_ids: None,
            failure_reason: None,
            online: None,
            last_seen: None,
            last_progress: None,
            stalled: None,
        };
        let suppress = req.suppress_created_event.unwrap_or(false);
        transact(&*self.store, move |tx| {
            load_project(tx, &project_id)?;
            if tx.get_raw(Collection::Sessions, &id)?.is_some() {
                return Err(Error::Conflict(format!(
                    "Session with id '{id}' already exists"
                )));
            }
            let mut tasks = Vec::new();
            for t in &session.task_ids {
                let task = load_task(tx, t)?;
                if task.project_id != project_id {
                    return Err(Error::validation(format!(
                        "Task '{t}' belongs to a different project"
                    )));
                }
                tasks.push(task);
            }
            tx.put(Collection::Sessions, &id, Some(&project_id), &session);
            for mut task in tasks {
                if !task.session_ids.contains(&id) {
                    task.session_ids.push(id.clone());
                    tx.put(Collection::Tasks, &task.id, None, &task);
                }
            }
            if !suppress {
                tx.emit(&project_id, "session:created", &session, Some(&id));
            }
            for t in &session.task_ids {
                tx.emit(
                    &project_id,
                    "task:session_added",
                    &json!({ "taskId": t, "sessionId": id }),
                    Some(&id),
                );
            }
            Ok(session.clone())
        })
        .await
    }

    pub fn list_sessions(&self, f: &SessionFilter) -> Result<Vec<Session>> {
        if let Some(p) = &f.project_id {
            check_id("projectId", p)?;
        }
        let mut r = self.reader()?;
        let sessions: Vec<Session> = r.list(Collection::Sessions, f.project_id.as_deref())?;
        drop(r);
        let mut sessions: Vec<Session> = sessions
            .into_iter()
            .filter(|s| f.task_id.as_ref().is_none_or(|t| s.task_ids.contains(t)))
            .filter(|s| f.status.as_ref().is_none_or(|st| &s.status == st))
            .filter(|s| !f.active || ACTIVE_STATUSES.contains(&s.status.as_str()))
            .collect();
        self.with_presence(&mut sessions)?;
        Ok(sessions)
    }

    pub fn get_session(&self, id: &str) -> Result<Session> {
        check_id("sessionId", id)?;
        let mut session = [load_session(&mut *self.reader()?, id)?];
        self.with_presence(&mut session)?;
        let [session] = session;
        Ok(session)
    }

    pub async fn update_session(&self, id: String, req: UpdateSession) -> Result<Session> {
        check_id("sessionId", &id)?;
        if let Some(s) = &req.status {
            check_enum("status", s, SESSION_STATUSES)?;
        }
        if let Some(ids) = &req.task_ids {
            for t in ids {
                check_id("taskIds", t)?;
            }
        }
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let before = load_session(tx, &id)?;
            let mut status = req.status.clone();
            // A session that completed stays completed when its terminal later closes.
            if status.as_deref() == Some("stopped") && before.status == "completed" {
                status = None;
                let said_more = req.task_ids.is_some()
                    || req.agent_id.is_some()
                    || req.env.is_some()
                    || req.events.is_some()
                    || req.timeline.is_some()
                    || req.needs_input.is_some()
                    || !req.other.is_empty();
                if !said_more {
                    return Ok(before);
                }
            }
            let mut session = before.clone();
            if let Some(s) = &status {
                session.status = s.clone();
                if session.is_terminal() {
                    session.completed_at = Some(now);
                } else {
                    session.completed_at = None;
                }
            }
            if let Some(ids) = &req.task_ids {
                session.task_ids = ids.clone();
            }
            if let Some(a) = &req.agent_id {
                session.agent_id = Some(a.clone());
            }
            if let Some(env) = &req.env {
                session.env.extend(env.clone());
            }
            if let Some(events) = &req.events {
                session.events.extend(events.iter().cloned());
            }
            if let Some(timeline) = &req.timeline {
                session.timeline.extend(timeline.iter().cloned());
            }
            if let Some(ni) = &req.needs_input {
                session.needs_input = Some(ni.clone());
            }
            session.last_activity = now;

            if let Some(s) = status.as_deref()
                && matches!(s, "completed" | "failed" | "stopped")
            {
                let outcome = if s == "completed" {
                    "completed"
                } else {
                    "failed"
                };
                close_task_statuses(tx, &session, outcome, now)?;
                // However a session ends, its leases end with it, in the same commit (the
                // heartbeat sweep does the same for a session that went silent).
                release_all(tx, &session.project_id, &id, "session_ended")?;
                // And nobody is left to act on an answer.
                approvals::cancel_pending(tx, &session.project_id, &id, "session ended", now)?;
                clear_needs_input(&mut session);
            }
            tx.put(Collection::Sessions, &id, None, &session);
            let scope = session.project_id.clone();
            emit_session_appended(
                tx,
                &session,
                req.timeline.as_deref().unwrap_or_default(),
                req.events.as_deref().unwrap_or_default(),
                &[],
            );
            if before.status != session.status {
                let name = match session.status.as_str() {
                    "completed" => Some("notify:session_completed"),
                    "failed" => Some("notify:session_failed"),
                    _ => None,
                };
                if let Some(name) = name {
                    tx.emit(
                        &scope,
                        name,
                        &json!({ "sessionId": id, "name": session.name }),
                        Some(&id),
                    );
                }
            }
            let was_active = before.needs_input.as_ref().is_some_and(|n| n.active);
            if let Some(ni) = &req.needs_input
                && ni.active
                && !was_active
            {
                tx.emit(
                    &scope,
                    "notify:needs_input",
                    &json!({ "sessionId": id, "name": session.name, "message": ni.message }),
                    Some(&id),
                );
            }
            Ok(session)
        })
        .await
    }

    /// Deletes a session and removes it from its tasks (`sessionIds` and
    /// `taskSessionStatuses`).
    pub async fn delete_session(&self, id: String) -> Result<Deleted> {
        check_id("sessionId", &id)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let session = load_session(tx, &id)?;
            release_all(tx, &session.project_id, &id, "session_deleted")?;
            approvals::cancel_pending(tx, &session.project_id, &id, "session deleted", now)?;
            approvals::delete_all(tx, &id)?;
            super::review::delete_all(tx, &id)?;
            super::transcript::delete_all(tx, &id)?;
            super::liveness::delete_presence(tx, &id);
            tx.delete(Collection::Sessions, &id);
            tx.emit(
                &session.project_id,
                "session:deleted",
                &json!({ "id": id }),
                Some(&id),
            );
            let tasks: Vec<Task> = tx.list(Collection::Tasks, Some(&session.project_id))?;
            for mut task in tasks {
                let had_id = task.session_ids.contains(&id);
                let had_status = task.task_session_statuses.contains_key(&id);
                if !had_id && !had_status {
                    continue;
                }
                task.session_ids.retain(|s| s != &id);
                task.task_session_statuses.remove(&id);
                task.updated_at = now;
                tx.put(Collection::Tasks, &task.id, None, &task);
                tx.emit(&task.project_id, "task:updated", &task, None);
            }
            Ok(Deleted {
                success: true,
                id: id.clone(),
            })
        })
        .await
    }

    pub async fn append_session_event(
        &self,
        id: String,
        req: AppendSessionEvent,
    ) -> Result<Session> {
        check_id("sessionId", &id)?;
        let kind = required(req.kind.as_deref(), "type is required")?;
        let now = now_ms();
        let event = SessionEvent {
            id: new_id(prefix::EVENT),
            timestamp: now,
            kind,
            data: req.data.clone(),
            extra: Default::default(),
        };
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &id)?;
            session.events.push(event.clone());
            session.last_activity = now;
            tx.put(Collection::Sessions, &id, None, &session);
            emit_session_appended(tx, &session, &[], std::slice::from_ref(&event), &[]);
            Ok(session)
        })
        .await
    }

    pub async fn append_session_timeline(
        &self,
        id: String,
        req: AppendTimeline,
    ) -> Result<Session> {
        check_id("sessionId", &id)?;
        let message = match req.message.as_deref() {
            Some(m) if !m.trim().is_empty() => m.to_owned(),
            _ => return Err(Error::validation("message is required")),
        };
        if let Some(t) = &req.task_id {
            check_id("taskId", t)?;
        }
        let kind = req.kind.clone().unwrap_or_else(|| "progress".into());
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let session = load_session(tx, &id)?;
            append_timeline(
                tx,
                session,
                &kind,
                Some(message.clone()),
                req.task_id.clone(),
                req.metadata.clone(),
                now,
            )
        })
        .await
    }

    pub async fn add_session_doc(&self, id: String, req: AddDoc) -> Result<Session> {
        check_id("sessionId", &id)?;
        let title = required(req.title.as_deref(), "title is required")?;
        let file_path = required(req.file_path.as_deref(), "filePath is required")?;
        if let Some(t) = &req.task_id {
            check_id("taskId", t)?;
        }
        let now = now_ms();
        let doc = DocEntry {
            id: new_id(prefix::DOC),
            title: title.clone(),
            file_path: file_path.clone(),
            content: req.content.clone(),
            task_id: req.task_id.clone(),
            added_at: now,
            added_by: Some(id.clone()),
        };
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &id)?;
            session.docs.push(doc.clone());
            let entry = timeline_entry(
                "doc_added",
                Some(format!("Doc added: {title}")),
                doc.task_id.clone(),
                Some(json!({ "docId": doc.id, "filePath": file_path, "title": title })),
                now,
            );
            session.timeline.push(entry.clone());
            session.last_activity = now;
            tx.put(Collection::Sessions, &id, None, &session);
            emit_session_appended(
                tx,
                &session,
                std::slice::from_ref(&entry),
                &[],
                std::slice::from_ref(&doc),
            );
            Ok(session)
        })
        .await
    }

    /// One page of a session's timeline (`GET /api/sessions/:id/timeline`).
    pub fn session_timeline(
        &self,
        id: &str,
        before: Option<usize>,
        limit: Option<usize>,
    ) -> Result<TimelinePage> {
        check_id("sessionId", id)?;
        let session = load_session(&mut *self.reader()?, id)?;
        timeline_page(&session.timeline, before, limit)
    }

    pub fn session_docs(&self, id: &str) -> Result<Vec<DocEntry>> {
        Ok(self.get_session(id)?.docs)
    }

    pub async fn link_session_task(&self, id: String, task_id: String) -> Result<Session> {
        check_id("sessionId", &id)?;
        check_id("taskId", &task_id)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let session = load_session(tx, &id)?;
            let task = load_task(tx, &task_id)?;
            if session.project_id != task.project_id {
                return Err(Error::validation(
                    "Session and task belong to different projects",
                ));
            }
            link_task(tx, session, task, now)
        })
        .await
    }

    pub async fn unlink_session_task(&self, id: String, task_id: String) -> Result<Session> {
        check_id("sessionId", &id)?;
        check_id("taskId", &task_id)?;
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &id)?;
            let mut task = load_task(tx, &task_id)?;
            session.task_ids.retain(|t| t != &task_id);
            session.timeline.push(timeline_entry(
                "task_completed",
                Some("Task removed from session".into()),
                Some(task_id.clone()),
                None,
                now,
            ));
            session.last_activity = now;
            task.session_ids.retain(|s| s != &id);
            task.updated_at = now;
            tx.put(Collection::Sessions, &id, None, &session);
            tx.put(Collection::Tasks, &task_id, None, &task);
            let scope = session.project_id.clone();
            let payload = json!({ "sessionId": id, "taskId": task_id });
            tx.emit(&scope, "session:task_removed", &payload, Some(&id));
            tx.emit(&scope, "task:session_removed", &payload, Some(&id));
            Ok(session)
        })
        .await
    }

    /// Shows an agent-made HTML modal in the UI; the HTML is also written to
    /// `<DATA_DIR>/modals/<modalId>.html` as upstream did.
    pub async fn show_modal(&self, id: String, req: ShowModal) -> Result<ModalShown> {
        check_id("sessionId", &id)?;
        let modal_id = required(req.modal_id.as_deref(), "modalId is required")?;
        check_id("modalId", &modal_id)?;
        let Some(html) = req.html.clone() else {
            return Err(Error::validation("html is required"));
        };
        let session = self.get_session(&id)?;
        let file_path = match &req.file_path {
            Some(p) => p.clone(),
            None => self.write_modal_file(&modal_id, &html).await?,
        };
        let now = now_ms();
        let payload = json!({
            "sessionId": id,
            "modalId": modal_id,
            "title": req.title.clone().unwrap_or_else(|| "Agent Modal".into()),
            "html": html,
            "filePath": file_path,
            "timestamp": now,
        });
        self.emit_only(
            session.project_id.clone(),
            "session:modal",
            payload,
            id.clone(),
        )
        .await?;
        Ok(ModalShown {
            success: true,
            modal_id,
            session_id: id,
            message: "Modal sent to UI".into(),
        })
    }

    pub async fn modal_action(
        &self,
        id: String,
        modal_id: String,
        req: ModalAction,
    ) -> Result<ModalAck> {
        check_id("sessionId", &id)?;
        check_id("modalId", &modal_id)?;
        let action = required(req.action.as_deref(), "action is required")?;
        let session = self.get_session(&id)?;
        let payload = json!({
            "sessionId": id,
            "modalId": modal_id,
            "action": action,
            "data": req.data.clone().unwrap_or_else(|| json!({})),
            "timestamp": now_ms(),
        });
        self.emit_only(session.project_id, "session:modal_action", payload, id)
            .await?;
        Ok(ModalAck {
            success: true,
            modal_id,
            action: Some(action),
        })
    }

    pub async fn modal_close(&self, id: String, modal_id: String) -> Result<ModalAck> {
        check_id("sessionId", &id)?;
        check_id("modalId", &modal_id)?;
        let session = self.get_session(&id)?;
        let payload = json!({ "sessionId": id, "modalId": modal_id, "timestamp": now_ms() });
        self.emit_only(session.project_id, "session:modal_closed", payload, id)
            .await?;
        Ok(ModalAck {
            success: true,
            modal_id,
            action: None,
        })
    }

    async fn emit_only(
        &self,
        scope: String,
        event: &'static str,
        data: Value,
        session: String,
    ) -> Result<()> {
        transact(&*self.store, move |tx| {
            tx.emit(&scope, event, &data, Some(&session));
            Ok(())
        })
        .await
    }

    async fn write_modal_file(&self, modal_id: &str, html: &str) -> Result<String> {
        let dir = self.info.data_dir.join("modals");
        let path: PathBuf = dir.join(format!("{modal_id}.html"));
        let io = |e: std::io::Error| Error::Storage(format!("cannot write modal: {e}"));
        files::create_private_dir(&dir).map_err(io)?;
        files::write_atomic_async(path.clone(), html.as_bytes().to_vec(), files::PRIVATE_FILE)
            .await
            .map_err(io)?;
        Ok(path.to_string_lossy().into_owned())
    }
}

/// Links `task` to `session` on both sides, notes it in the timeline and emits
/// `session:task_added` then `task:session_added`.
pub(crate) fn link_task(
    tx: &mut dyn Txn,
    mut session: Session,
    mut task: Task,
    now: i64,
) -> Result<Session> {
    if !session.task_ids.contains(&task.id) {
        session.task_ids.push(task.id.clone());
    }
    session.timeline.push(timeline_entry(
        "task_started",
        Some("Task added to session".into()),
        Some(task.id.clone()),
        None,
        now,
    ));
    session.last_activity = now;
    if !task.session_ids.contains(&session.id) {
        task.session_ids.push(session.id.clone());
    }
    task.updated_at = now;
    tx.put(Collection::Sessions, &session.id, None, &session);
    tx.put(Collection::Tasks, &task.id, None, &task);
    let scope = session.project_id.clone();
    tx.emit(
        &scope,
        "session:task_added",
        &json!({ "sessionId": session.id, "taskId": task.id }),
        Some(&session.id),
    );
    tx.emit(
        &scope,
        "task:session_added",
        &json!({ "taskId": task.id, "sessionId": session.id }),
        Some(&session.id),
    );
    Ok(session)
}

/// Appends a timeline entry and emits `session:appended`, `session:updated` plus `notify:progress` or
/// `notify:needs_input` for those kinds.
pub(crate) fn append_timeline(
    tx: &mut dyn Txn,
    mut session: Session,
    kind: &str,
    message: Option<String>,
    task_id: Option<String>,
    metadata: Option<Value>,
    now: i64,
) -> Result<Session> {
    let entry = timeline_entry(kind, message.clone(), task_id.clone(), metadata, now);
    session.timeline.push(entry.clone());
    if kind == "needs_input" {
        session.needs_input = Some(NeedsInput {
            active: true,
            message: message.clone(),
            since: Some(now),
        });
    }
    session.last_activity = now;
    tx.put(Collection::Sessions, &session.id, None, &session);
    let (scope, id) = (session.project_id.clone(), session.id.clone());
    emit_session_appended(tx, &session, std::slice::from_ref(&entry), &[], &[]);
    match kind {
        "progress" => {
            let mut data = json!({ "sessionId": id, "message": message });
            if let Some(t) = task_id {
                data["taskId"] = json!(t);
            }
            tx.emit(&scope, "notify:progress", &data, Some(&id));
        }
        "needs_input" => tx.emit(
            &scope,
            "notify:needs_input",
            &json!({ "sessionId": id, "name": session.name, "message": message }),
            Some(&id),
        ),
        _ => {}
    }
    Ok(session)
}

/// Moves the session's still-open per-task statuses to `outcome`, emitting `task:updated`.
pub(crate) fn close_task_statuses(
    tx: &mut dyn Txn,
    session: &Session,
    outcome: &str,
    now: i64,
) -> Result<()> {
    for task_id in &session.task_ids {
        let Some(before) = tx.get::<Task>(Collection::Tasks, task_id)? else {
            continue;
        };
        let open = before
            .task_session_statuses
            .get(&session.id)
            .is_some_and(|s| !matches!(s.as_str(), "completed" | "failed" | "skipped"));
        if !open {
            continue;
        }
        let mut task = before.clone();
        task.task_session_statuses
            .insert(session.id.clone(), outcome.to_owned());
        task.updated_at = now;
        tx.put(Collection::Tasks, task_id, None, &task);
        emit_task_updated_quiet(tx, &task);
    }
    Ok(())
}

/// `task:updated` alone: upstream sends no `notify:task_session_*` for propagated statuses.
fn emit_task_updated_quiet(tx: &mut dyn Txn, task: &Task) {
    tx.emit(&task.project_id, "task:updated", task, None);
}
