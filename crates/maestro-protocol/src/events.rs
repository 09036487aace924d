//! Domain events and the envelopes they travel in.
//!
//! Every event carries a sequence number that is gap-free and increasing within its *scope*:
//! the project it belongs to, or [`GLOBAL_SCOPE`] for project-level events (`project:*`).
//! A client that remembers the last `seq` it saw can ask for exactly what it missed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{DocEntry, Millis, NeedsInput, SessionEvent, TimelineEvent};

/// Scope of events that belong to no single project (`project:created` and friends).
pub const GLOBAL_SCOPE: &str = "global";

/// How many of a session's latest timeline entries and latest events a `session:updated`
/// payload carries. The payload is the session with `timeline` and `events` cut to their last
/// `SESSION_UPDATE_TAIL` entries and every doc's `content` left out, so its size does not grow
/// with the session. The full session is at `GET /api/sessions/:id`; older timeline entries
/// page through `GET /api/sessions/:id/timeline`.
pub const SESSION_UPDATE_TAIL: usize = 50;

/// A domain event as journaled and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// Project id, or [`GLOBAL_SCOPE`].
    pub scope: String,
    /// Position within the scope, starting at 1.
    pub seq: u64,
    /// Event name, e.g. `task:updated`.
    pub event: String,
    pub data: Value,
    pub timestamp: Millis,
    /// The session the event is about, if any; used by per-session subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl EventRecord {
    /// The project id, unless this is a global event.
    pub fn project_id(&self) -> Option<&str> {
        (self.scope != GLOBAL_SCOPE).then_some(self.scope.as_str())
    }

    /// The frame sent to legacy WebSocket and Socket.IO clients.
    pub fn envelope(&self) -> EventEnvelope {
        EventEnvelope {
            kind: self.event.clone(),
            event: self.event.clone(),
            data: self.data.clone(),
            timestamp: self.timestamp,
            seq: self.seq,
            project_id: self.project_id().map(str::to_owned),
        }
    }
}

/// Upstream's `{type, event, data, timestamp}` frame plus `seq` and `projectId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    #[serde(rename = "type")]
    pub kind: String,
    pub event: String,
    pub data: Value,
    pub timestamp: Millis,
    pub seq: u64,
    #[serde(default)]
    pub project_id: Option<String>,
}

/// Payload of `session:appended`: what one change appended to a session, and nothing else.
///
/// Sent, together with a bounded `session:updated`, whenever timeline entries, events or docs
/// are added to a session (`POST /api/sessions/:id/{timeline,events,docs}`,
/// `POST /api/tasks/:id/timeline`, a PATCH carrying `timeline`/`events`, a reply to the session).
/// A client that holds the session appends the items, skipping any whose `id` it already has
/// (so applying an event twice is harmless); the `*Length` fields are the totals after the
/// change, for spotting a gap (then fetch the session, or page the timeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SessionAppended {
    pub session_id: String,
    pub project_id: String,
    /// Timeline entries this change appended, oldest first (may be empty).
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
    /// Raw activity events this change appended, oldest first (may be empty).
    #[serde(default)]
    pub events: Vec<SessionEvent>,
    /// Docs this change attached, with their content (may be empty).
    #[serde(default)]
    pub docs: Vec<DocEntry>,
    /// The session's status after the change.
    pub status: String,
    pub last_activity: Millis,
    /// The session's needs-input flag after the change, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_input: Option<NeedsInput>,
    /// Length of the session's timeline after the change.
    pub timeline_length: u64,
    /// Number of the session's events after the change.
    pub events_length: u64,
    /// Number of the session's docs after the change.
    pub docs_length: u64,
}
