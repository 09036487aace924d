//! Team members: the agent personas a project can spawn sessions as.
//!
//! Unlike every other entity, team members carry ISO-8601 `createdAt`/`updatedAt` strings, as
//! upstream's did.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Agent tools a member can run with.
pub const AGENT_TOOLS: &[&str] = &["claude-code", "codex", "gemini"];
/// Session modes.
pub const MODES: &[&str] = &["execute", "coordinate"];
/// Member statuses.
pub const TEAM_MEMBER_STATUSES: &[&str] = &["active", "archived"];
/// The kinds of built-in member every project has, in listing order.
pub const DEFAULT_MEMBER_KINDS: &[&str] = &[
    "simple_worker",
    "coordinator",
    "batch_coordinator",
    "dag_coordinator",
    "recruiter",
];

/// What a member is allowed to do.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_spawn_sessions: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_edit_tasks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_report_task_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_report_session_level: Option<bool>,
}

/// A team member (built-in or custom).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TeamMember {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub identity: String,
    pub avatar: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default)]
    pub skill_ids: Vec<String>,
    pub is_default: bool,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_permissions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_workflow: Option<String>,
    /// ISO-8601.
    pub created_at: String,
    /// ISO-8601.
    pub updated_at: String,
}

/// `POST /api/team-members`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct CreateTeamMember {
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_permissions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_workflow: Option<String>,
}

/// `PATCH /api/team-members/:id`: `projectId` plus any editable field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UpdateTeamMember {
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_permissions: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_workflow: Option<String>,
}

/// A body that only names the project (`archive`, `unarchive`, `reset`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ProjectRef {
    #[serde(default)]
    pub project_id: Option<String>,
}
