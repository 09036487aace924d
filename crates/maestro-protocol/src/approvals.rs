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
    /// Its session ended, or its agent stopped beating, before anyone decided; or the person
    /// at the agent's own terminal answered first (reason [`ANSWERED_AT_TERMINAL`]).
    Cancelled,
}

/// The reason of an approval withdrawn because it was answered in the agent tool's own
/// dialog: the phone's answer would come too late to matter.
pub const ANSWERED_AT_TERMINAL: &str = "answered_at_terminal";

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

/// Longest [`summarize`] line, in characters.
pub const SUMMARY_MAX: usize = 200;

/// Tools that run a shell command, by agent.
const SHELL_TOOLS: &[&str] = &["Bash", "run_shell_command", "shell", "exec_command"];
/// Input fields that name the file an edit or write tool changes.
const PATH_FIELDS: &[&str] = &["file_path", "notebook_path", "absolute_path", "path"];
/// Tools that change files, by agent.
const FILE_TOOLS: &[&str] = &[
    "Edit",
    "MultiEdit",
    "Write",
    "NotebookEdit",
    "write_file",
    "replace",
    "apply_patch",
];

/// `text` on one line (runs of whitespace become one space), cut to `max` characters with an
/// ellipsis when longer.
pub fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One line for a human about a tool request: the command of a shell tool, the file of an
/// edit or write tool, else the tool's name and its input; at most [`SUMMARY_MAX`] characters.
/// The server uses it for an approval created without a summary, `maestro approve` for the
/// summary it sends.
pub fn summarize(tool_name: &str, input: &Value) -> String {
    let line = if SHELL_TOOLS.contains(&tool_name) {
        match input.get("command") {
            Some(Value::String(c)) => Some(c.clone()),
            // Some agents send argv.
            Some(Value::Array(argv)) => Some(
                argv.iter()
                    .map(|a| {
                        a.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| a.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        }
    } else if FILE_TOOLS.contains(&tool_name) {
        PATH_FIELDS
            .iter()
            .find_map(|f| input.get(*f).and_then(Value::as_str))
            .map(str::to_owned)
    } else {
        None
    };
    let line = line.unwrap_or_else(|| match input {
        Value::Null => tool_name.to_owned(),
        Value::Object(m) if m.is_empty() => tool_name.to_owned(),
        other => format!("{tool_name} {other}"),
    });
    one_line(&line, SUMMARY_MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_say_what_will_run() {
        assert_eq!(
            summarize(
                "Bash",
                &json!({"command": "rm -rf build/", "description": "x"})
            ),
            "rm -rf build/"
        );
        assert_eq!(
            summarize(
                "Edit",
                &json!({"file_path": "src/main.rs", "old_string": "a"})
            ),
            "src/main.rs"
        );
        assert_eq!(
            summarize("shell", &json!({"command": ["cargo", "test"]})),
            "cargo test"
        );
        assert_eq!(summarize("WebFetch", &json!({})), "WebFetch");
        assert_eq!(
            summarize("WebFetch", &json!({"url": "https://x"})),
            r#"WebFetch {"url":"https://x"}"#
        );
        let long = summarize("Bash", &json!({"command": "x".repeat(500)}));
        assert_eq!(long.chars().count(), SUMMARY_MAX);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(one_line("a \n\t b", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
