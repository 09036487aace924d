//! Spawning agents: the request, the answer, and the `session:spawn` event a launcher acts on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::entities::Session;

/// `POST /api/sessions/spawn`. Lenient: unknown keys (e.g. `strategy`) are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SpawnRequest {
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub task_ids: Option<Vec<String>>,
    /// `ui` (default) or `session` (an agent spawning a helper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_source: Option<String>,
    /// The parent session, required when `spawnSource` is `session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skills: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_member_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate_team_member_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The machine that must run the agent (a runner's `machineId`); default the project's
    /// `machineId`, else the server's own machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Run in a fresh git worktree on branch `maestro/<session id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<bool>,
    /// `runner` or `desktop`: who starts the agent (default `SPAWN_LAUNCHER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<String>,
    /// The initial prompt; default the tasks' titles and descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// Answer to a spawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SpawnResponse {
    pub success: bool,
    pub session_id: String,
    pub manifest_path: String,
    pub message: String,
    pub session: Session,
}

/// Payload of `session:spawn`: what a launcher needs to start the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SpawnEvent {
    pub session: Session,
    /// Command line to run, e.g. `maestro worker init`.
    pub command: String,
    /// Working directory (the project's).
    pub cwd: String,
    /// Environment for the agent. Never contains provider API keys: the launcher adds its own.
    pub env_vars: BTreeMap<String, String>,
    pub manifest: Value,
    pub project_id: String,
    pub task_ids: Vec<String>,
    pub spawn_source: String,
    pub parent_session_id: Option<String>,
    #[serde(rename = "_isSpawnCreated")]
    pub is_spawn_created: bool,
}
