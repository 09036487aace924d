//! The read-mostly catalog of the API: UI display orderings, skills found on disk and the
//! built-in workflow templates.
//!
//! None of these are domain entities with events: orderings are per-project UI state, skills
//! are files the user manages, templates are compiled in.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Millis;

/// Entity types that have a display ordering.
pub const ORDERING_ENTITY_TYPES: &[&str] = &["task", "session"];

/// The UI's display order of one project's tasks or sessions.
///
/// Not referentially checked: ids of deleted entities may remain, and the UI skips them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Ordering {
    pub project_id: String,
    /// `task` or `session`.
    pub entity_type: String,
    pub ordered_ids: Vec<String>,
    /// `0` until the ordering is first saved.
    pub updated_at: Millis,
}

/// `PUT /api/ordering/:entityType/:projectId`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UpdateOrdering {
    /// Required; `None` only so that a missing field gets a clear 400.
    #[serde(default)]
    pub ordered_ids: Option<Vec<String>>,
}

/// One entry of `GET /api/skills`: the skill's front matter and its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Skill {
    /// The skill's directory name.
    pub id: String,
    pub name: String,
    pub description: String,
    /// `1.0.0` when the front matter has none.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<String>>,
    /// `orchestrator` marks a coordinate-mode skill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The Markdown after the front matter.
    pub content: String,
    /// Always `false`; kept because upstream clients read it.
    pub has_references: bool,
    /// Always `0`; kept because upstream clients read it.
    pub reference_count: u32,
}

/// A skill's identity: the answer to `GET /api/skills/mode/:mode` (as a list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SkillSummary {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `mode` for orchestrator skills, `custom` otherwise.
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
}

/// `GET /api/skills/:id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SkillDetail {
    #[serde(flatten)]
    pub summary: SkillSummary,
    /// The Markdown after the front matter.
    pub instructions: String,
}

/// `POST /api/skills/:id/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SkillReloaded {
    #[serde(flatten)]
    pub summary: SkillSummary,
    /// Always `true`.
    pub reloaded: bool,
}

/// One step of a workflow template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct WorkflowPhase {
    pub name: String,
    /// What the agent does in this phase, including the `maestro` commands to use.
    pub instruction: String,
}

/// A built-in workflow an agent follows (`GET /api/workflow-templates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct WorkflowTemplate {
    pub id: String,
    pub name: String,
    pub description: String,
    /// `execute` or `coordinate`.
    pub mode: String,
    pub phases: Vec<WorkflowPhase>,
    /// Always `true`: every template is compiled into the server.
    pub built_in: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_detail_is_flat() {
        let detail = SkillDetail {
            summary: SkillSummary {
                id: "a".into(),
                name: "A".into(),
                description: "d".into(),
                kind: "custom".into(),
                version: "1.0.0".into(),
            },
            instructions: "do".into(),
        };
        assert_eq!(
            serde_json::to_value(&detail).unwrap(),
            serde_json::json!({
                "id": "a", "name": "A", "description": "d", "type": "custom",
                "version": "1.0.0", "instructions": "do"
            })
        );
    }

    #[test]
    fn ordering_is_camel_case() {
        let o = Ordering {
            project_id: "p".into(),
            entity_type: "task".into(),
            ordered_ids: vec![],
            updated_at: 0,
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"projectId": "p", "entityType": "task", "orderedIds": [], "updatedAt": 0})
        );
    }
}
