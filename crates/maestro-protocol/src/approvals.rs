//! Tool approvals: an agent asks before it runs a tool ("may I run `rm -rf build/`?"), a human
//! answers from the phone or the desktop, and the agent's hook gets the answer.
//!
//! An approval belongs to a session. It is created `pending` by `maestro approve` (called by
//! the agent tool's permission hook), and ends exactly once: `allowed` or `denied` by a
//! decision, or `cancelled` when its session ends or its agent stops beating. A decision of
//! `allow_session` also answers later identical requests (same tool, same input) of that
//! session without asking.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::Millis;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Decided `allow` or `allow_session` (or answered by an earlier `allow_session`).
    Allowed,
    /// Decided `deny`.
    Denied,
    /// Its session ended, or its agent stopped beating, before anyone decided.
    Cancelled,
}

impl ApprovalStatus {
    pub fn is_pending(self) -> bool {
        self == Self::Pending
    }
}

/// A human's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// Run the tool this once.
    Allow,
    /// Do not run it; the reason goes back to the agent.
    Deny,
    /// Run it, and answer identical requests of this session the same way without asking.
    AllowSession,
}

impl ApprovalDecision {
    pub fn status(self) -> ApprovalStatus {
        match self {
            Self::Allow | Self::AllowSession => ApprovalStatus::Allowed,
            Self::Deny => ApprovalStatus::Denied,
        }
    }
}

/// A tool permission request of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: String,
    pub session_id: String,
    pub project_id: String,
    /// The session's name when the request was made (for notifications and lists).
    pub session_name: String,
    /// The agent tool that asks: `claude-code`, `codex`, `gemini`, or another name.
    pub agent_tool: String,
    /// The tool the agent wants to run, as the agent names it (`Bash`, `Edit`, `shell`, …).
    pub tool_name: String,
    /// The tool's input as the agent gave it (the command; the file and the edit; …).
    #[schema(value_type = Object)]
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub input: Value,
    /// One line for lists: the command, the file path, or the tool and a short input.
    pub summary: String,
    pub status: ApprovalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalDecision>,
    /// The reason given with a denial or a cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who decided: a device's or token's name, `local`, or `rule` for an earlier
    /// `allow_session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The idempotency key the request was created with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The idempotency key of the decision that won, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_request_id: Option<String>,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Millis>,
}

/// `POST /api/sessions/:id/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct CreateApproval {
    /// The agent tool that asks (`claude-code`, `codex`, `gemini`, …).
    pub agent_tool: String,
    /// The tool the agent wants to run.
    pub tool_name: String,
    /// The tool's input (at most 256 KiB once serialised).
    #[serde(default)]
    #[schema(value_type = Object)]
    #[cfg_attr(feature = "ts", ts(type = "unknown"))]
    pub input: Value,
    /// One line for lists [default: derived from the input].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Idempotency key: the same key returns the approval it created, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /api/approvals/:id/decision`, and the `approval:decide` client action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct DecideApproval {
    pub decision: ApprovalDecision,
    /// Told to the agent with a denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Idempotency key: repeating a decision with the same key answers as the first time,
    /// even after it won.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The `approval:decide` client action on `/ui` and `/mobile`: a [`DecideApproval`] for one
/// approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalDecideAction {
    pub approval_id: String,
    pub decision: ApprovalDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
