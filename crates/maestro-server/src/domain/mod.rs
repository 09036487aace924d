//! Business rules, one module per feature.
//!
//! This is the only place that knows what an operation means: what it validates, what it
//! changes, and which events it emits in which order. Each operation validates its input,
//! then runs one transaction through the [`Store`] port; it never sees redb or Redis.

pub mod approvals;
pub mod claims;
pub mod interaction;
pub mod liveness;
pub mod mail;
pub mod ordering;
pub mod projects;
pub mod review;
pub mod runners;
pub mod sessions;
pub mod skills;
pub mod spawn;
pub mod sync;
pub mod tasks;
pub mod team_members;
pub mod templates;
pub mod transcript;

use std::path::PathBuf;
use std::sync::Arc;

use maestro_protocol::ids::is_valid_id;
use maestro_protocol::{GLOBAL_SCOPE, Project, Session, Task};

use crate::error::{Error, Result};
use crate::ports::{Collection, Reader, ReaderExt, Store};
use crate::util::hash::HashKey;

/// Facts about this server that operations record (sessions carry the host they run on) or
/// read from (skills live in `skills_dir`).
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub hostname: String,
    pub platform: String,
    pub data_dir: PathBuf,
    /// Where skills are read from (`SKILLS_DIR`).
    pub skills_dir: PathBuf,
    /// Where spawn manifests go.
    pub session_dir: PathBuf,
    /// The URL agents are told to use.
    pub server_url: String,
    /// Heartbeat and sweep timing.
    pub liveness: liveness::LivenessConfig,
    /// This machine's id: spawns go to its runners unless they name another machine.
    pub machine_id: String,
    /// `SPAWN_LAUNCHER`: `auto`, `runner` or `desktop`.
    pub spawn_launcher: String,
    /// `STOP_GRACE_MS`: time between the steps of Stop's signal ladder.
    pub stop_grace_ms: u64,
    /// `LONG_POLL_MAX_MS`: no long-poll holds a request longer.
    pub long_poll_max_ms: u64,
}

/// Entry point to every domain operation; cheap to clone.
#[derive(Clone)]
pub struct Domain {
    pub store: Arc<dyn Store>,
    pub info: Arc<ServerInfo>,
    pub mail_metrics: Arc<mail::MailMetrics>,
    /// Requests parked in `GET /api/approvals/:id/wait` right now (`/metrics`).
    pub approval_waiters: Arc<std::sync::atomic::AtomicI64>,
    /// Serialized task lists, reused while no task changes (see [`Domain::list_tasks_json`]).
    task_lists: Arc<tasks::ListCache>,
    /// Desktop apps connected to this server (legacy WebSocket clients that sent an
    /// `Origin`): with `SPAWN_LAUNCHER=auto` they launch spawns instead of the runners.
    pub desktop_clients: Arc<std::sync::atomic::AtomicI64>,
    /// The key token and pairing-code hashes are made with (kept in `DATA_DIR`, never in the
    /// store).
    pub hash_key: Arc<HashKey>,
}

impl Domain {
    /// When a long-poll asking for `timeout_ms` answers: then, or at `LONG_POLL_MAX_MS`.
    pub(crate) fn long_poll_deadline(&self, timeout_ms: u64) -> tokio::time::Instant {
        let ms = timeout_ms.min(self.info.long_poll_max_ms);
        tokio::time::Instant::now() + std::time::Duration::from_millis(ms)
    }

    pub fn new(store: Arc<dyn Store>, info: ServerInfo, hash_key: HashKey) -> Self {
        Self {
            store,
            hash_key: Arc::new(hash_key),
            info: Arc::new(info),
            mail_metrics: Arc::default(),
            approval_waiters: Arc::default(),
            task_lists: Arc::default(),
            desktop_clients: Arc::default(),
        }
    }

    /// A consistent snapshot to read from.
    pub fn reader(&self) -> Result<Box<dyn Reader + Send + '_>> {
        self.store.reader()
    }
}

/// Rejects an id that is malformed (could escape a key space or a path).
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::Validation {
            message: format!(
                "Invalid {what}: ids are 1-128 characters of A-Z, a-z, 0-9, '_' and '-'"
            ),
            details: Some(serde_json::json!([{ "path": what, "message": "invalid id" }])),
        })
    }
}

/// Rejects a value outside `allowed`.
pub fn check_enum(field: &str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Error::Validation {
            message: format!(
                "Invalid {field} '{value}': expected one of {}",
                allowed.join(", ")
            ),
            details: Some(serde_json::json!([{ "path": field, "message": "invalid value" }])),
        })
    }
}

/// A required, non-blank string field, trimmed.
pub fn required(value: Option<&str>, message: &str) -> Result<String> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => Err(Error::validation(message)),
    }
}

pub(crate) fn load_project(r: &mut (impl Reader + ?Sized), id: &str) -> Result<Project> {
    r.get(Collection::Projects, id)?
        .ok_or_else(|| Error::not_found("Project", id))
}

pub(crate) fn load_task(r: &mut (impl Reader + ?Sized), id: &str) -> Result<Task> {
    r.get(Collection::Tasks, id)?
        .ok_or_else(|| Error::not_found("Task", id))
}

pub(crate) fn load_session(r: &mut (impl Reader + ?Sized), id: &str) -> Result<Session> {
    r.get(Collection::Sessions, id)?
        .ok_or_else(|| Error::not_found("Session", id))
}

/// Scope of project-level events.
pub(crate) const GLOBAL: &str = GLOBAL_SCOPE;
