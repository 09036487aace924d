//! A session's transcript: the structured, bounded view of what the agent wrote in its own
//! transcript file (Claude Code's JSON lines, Codex's rollout file), as the machine that runs
//! the agent uploads it (`POST /api/sessions/:id/transcript`) and as the phone pages it
//! (`GET /api/sessions/:id/transcript`). `docs/runners.md` ("Transcripts") describes the flow
//! and the limits.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Millis;

/// What one transcript entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum TranscriptKind {
    /// A prompt the person (or Maestro, for them) gave the agent.
    User,
    /// Text the agent wrote.
    Assistant,
    /// The agent called a tool: `tool`, `summary`, `input`.
    ToolCall,
    /// The agent changed a file: `tool`, `path`, `diff`.
    Edit,
    /// What a tool call returned: `callId` names the call, `output` its first lines.
    ToolResult,
    /// Token counts the agent reported (`tokens`).
    Tokens,
    /// An entry of a kind this server does not know: `label` names it, `text` is its compact
    /// JSON, cut.
    Other,
}

/// Token counts, as far as the agent reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<u64>,
    /// Input tokens read from the model's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<u64>,
    /// The session's running total, when the agent reports one (Codex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// One entry of a session's transcript. Text fields are cut to the limits in
/// `docs/runners.md`; `truncated` says when any of them was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEntry {
    /// Position in the session's transcript, from 1, increasing; the server numbers entries
    /// (an upload's `seq` is ignored).
    #[serde(default)]
    pub seq: u64,
    pub kind: TranscriptKind,
    /// When the agent wrote it, if its file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Millis>,
    /// The message (user, assistant) or, for `other`, the entry's compact JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The tool's name (`Bash`, `Edit`, `shell`, `apply_patch`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The agent's id of the tool call, shared by the call and its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// One line for a human: the command, the file, or the tool and its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The tool's input, pretty-printed JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The tool's result, its first lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The tool reported a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// The file an edit changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An edit as a unified diff (`-`/`+` lines; hunks start with `@@`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenUsage>,
    /// For `other`: the entry's type as the file names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Some text was cut to the limits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl TranscriptEntry {
    /// An empty entry of `kind`.
    pub fn new(kind: TranscriptKind) -> Self {
        Self {
            seq: 0,
            kind,
            at: None,
            text: None,
            tool: None,
            call_id: None,
            summary: None,
            input: None,
            output: None,
            is_error: None,
            path: None,
            diff: None,
            tokens: None,
            label: None,
            truncated: false,
        }
    }
}

/// Which transcript file the entries came from and how far it has been read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TranscriptSource {
    /// The file's path on the machine that runs the agent.
    pub path: String,
    /// Bytes of the file read and stored (always the end of a whole line).
    pub offset: u64,
}

/// `POST /api/sessions/:id/transcript`: entries the host parsed from the bytes
/// `[start, end)` of the agent's transcript file `path`.
///
/// A batch that ends at or before what the server already stored of the same file is a
/// retry and changes nothing, so a host may resend a batch whose answer it did not get.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TranscriptUpload {
    pub path: String,
    pub start: u64,
    pub end: u64,
    #[serde(default)]
    pub entries: Vec<TranscriptEntry>,
    /// Lines in the range that were not JSON objects (skipped).
    #[serde(default)]
    pub malformed: u64,
}

/// One page of a transcript, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TranscriptPage {
    pub entries: Vec<TranscriptEntry>,
    /// `seq` of the oldest entry still kept (older ones were dropped at the limit); 0 when
    /// there are none.
    pub first: u64,
    /// `seq` of the newest entry; 0 when there are none.
    pub last: u64,
    /// More entries lie beyond this page in the direction asked (after it for `after=`,
    /// before it otherwise).
    pub has_more: bool,
    /// Lines of the agent's files that were not JSON (skipped), over the whole session.
    pub malformed: u64,
    /// The file being followed, when a host reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TranscriptSource>,
}

/// Payload of `session:transcript`: entries just added to a session's transcript.
///
/// `entries` holds every new entry unless they were too large together for one event; then
/// it is empty, `truncated` is true, and clients fetch `after=<their last seq>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SessionTranscript {
    pub session_id: String,
    pub project_id: String,
    pub entries: Vec<TranscriptEntry>,
    /// `seq` of the first and last entry added.
    pub from: u64,
    pub to: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}
