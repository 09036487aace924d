//! The persisted entities, as they appear on the wire.
//!
//! Optional fields that upstream omits until set are `Option` + `skip_serializing_if`; fields
//! that upstream writes as `null` are plain `Option` (serialised as `null`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::Millis;

/// Task statuses accepted by the API.
pub const TASK_STATUSES: &[&str] = &[
    "todo",
    "in_progress",
    "in_review",
    "completed",
    "cancelled",
    "blocked",
    "archived",
];

/// Per-session statuses of a task (`taskSessionStatuses` values).
pub const TASK_SESSION_STATUSES: &[&str] = &[
    "queued",
    "working",
    "blocked",
    "completed",
    "failed",
    "skipped",
];

/// Task priorities accepted by the API.
pub const TASK_PRIORITIES: &[&str] = &["low", "medium", "high"];

/// Session statuses accepted by the API.
pub const SESSION_STATUSES: &[&str] = &[
    "spawning",
    "idle",
    "working",
    "completed",
    "failed",
    "stopped",
];

/// Session statuses after which an agent is done.
pub const TERMINAL_SESSION_STATUSES: &[&str] = &["completed", "failed", "stopped"];

/// A project: a working directory that tasks and sessions belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub description: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The machine whose runner runs this project's spawns (a runner's `machineId`; new in
    /// Maestro). Absent: the server's own machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
}

/// A unit of work, possibly with a parent task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub project_id: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub status: String,
    /// Each session's own view of its progress on this task, keyed by session id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_session_statuses: BTreeMap<String, String>,
    pub priority: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    #[serde(default)]
    pub started_at: Option<Millis>,
    #[serde(default)]
    pub completed_at: Option<Millis>,
    #[serde(default)]
    pub initial_prompt: String,
    #[serde(default)]
    pub session_ids: Vec<String>,
    #[serde(default)]
    pub skill_ids: Vec<String>,
    #[serde(default)]
    pub agent_ids: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub reference_task_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_member_ids: Option<Vec<String>>,
}

/// The "waiting on a human" flag of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct NeedsInput {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Millis>,
}

/// One entry of a session's human-readable timeline.
///
/// `type` is free-form: clients post their own kinds (the upstream CLI posts
/// `task_status_changed`). Extra fields a client sends are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TimelineEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// One entry of a session's raw activity log (e.g. `file_modified`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SessionEvent {
    pub id: String,
    pub timestamp: Millis,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// A document an agent produced, attached to its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct DocEntry {
    pub id: String,
    pub title: String,
    pub file_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub added_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

/// A doc listed for a task, with the session it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TaskDocEntry {
    #[serde(flatten)]
    pub doc: DocEntry,
    pub session_id: String,
    pub session_name: String,
}

/// One agent run (a terminal with Claude Code, Codex, …) working on some tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub project_id: String,
    #[serde(default)]
    pub task_ids: Vec<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub status: String,
    pub started_at: Millis,
    pub last_activity: Millis,
    #[serde(default)]
    pub completed_at: Option<Millis>,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub events: Vec<SessionEvent>,
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
    #[serde(default)]
    pub docs: Vec<DocEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_input: Option<NeedsInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_member_ids: Option<Vec<String>>,
    /// Why the session failed, when the server failed it (e.g. `agent_disconnected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Liveness, for sessions whose agent heartbeats (filled in on read, not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<bool>,
}

impl Session {
    /// Whether the session has ended (`completed`, `failed` or `stopped`).
    pub fn is_terminal(&self) -> bool {
        TERMINAL_SESSION_STATUSES.contains(&self.status.as_str())
    }
}

/// `{success: true, id}`, the answer to most deletes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Deleted {
    pub success: bool,
    pub id: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Health {
    pub status: String,
    pub timestamp: Millis,
    /// Seconds since the server started.
    pub uptime: f64,
}

/// `GET /ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Ready {
    /// `ready` or `degraded`.
    pub status: String,
    pub backend: String,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Always `true`; kept because upstream clients test it.
    pub error: bool,
    pub status_code: u16,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}
