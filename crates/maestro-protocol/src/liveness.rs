//! Liveness (heartbeats, presence) and task claims (leases with fencing tokens).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Millis;

/// `POST /api/sessions/:id/heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// The agent made progress since its last beat (resets the stall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<bool>,
}

/// A session's liveness, as the server sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub session_id: String,
    pub project_id: String,
    /// Beating within its TTL.
    pub online: bool,
    pub last_seen: Millis,
    pub last_progress: Millis,
    /// Beating, but no progress for the configured stall time.
    #[serde(default)]
    pub stalled: bool,
    /// The TTL in force when the session last beat.
    pub ttl_ms: u64,
}

/// A lease on a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub task_id: String,
    pub project_id: String,
    /// The session holding the lease.
    pub holder: String,
    /// Grows with every new lease on the task; a write with an older token is refused.
    pub fencing_token: u64,
    pub expires_at: Millis,
}

/// `POST /api/tasks/:id/claim`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    #[serde(default)]
    pub session_id: Option<String>,
    /// Lease length; default 60 s, at most 1 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// `POST /api/tasks/:id/claim/renew` and `/release`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct LeaseRequest {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub fencing_token: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// Answer to a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Released {
    pub released: bool,
    pub task_id: String,
}
