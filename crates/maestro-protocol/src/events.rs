//! Domain events and the envelopes they travel in.
//!
//! Every event carries a sequence number that is gap-free and increasing within its *scope*:
//! the project it belongs to, or [`GLOBAL_SCOPE`] for project-level events (`project:*`).
//! A client that remembers the last `seq` it saw can ask for exactly what it missed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::Millis;

/// Scope of events that belong to no single project (`project:created` and friends).
pub const GLOBAL_SCOPE: &str = "global";

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
