//! Socket.IO (`/ui`, `/mobile`): the handshake, the client events' payloads and answers, and
//! the server-only events. `docs/realtime.md` describes the protocol around them.
//!
//! Domain events themselves travel as [`EventEnvelope`](crate::EventEnvelope)s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{MailMessage, Millis, Project, Session, Task, TeamMember};

/// The handshake's `auth` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SocketAuth {
    /// A token (`Authorization: Bearer` for sockets); checked by the auth gate. Not needed when
    /// the connection's own request carried a credential (the device cookie) or was local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The project the connection follows; required on `/mobile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The last `seq` of `projectId`'s scope the client saw; the gap after it is replayed
    /// before live events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// `subscribe` / `unsubscribe`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SessionSubscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ids: Option<Vec<String>>,
}

/// `state:sync`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct StateSyncRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

/// Everything a client starts from, read from one snapshot, with the head `seq` of every scope
/// it covers: events with a higher `seq` are newer than the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct StateSnapshot {
    pub projects: Vec<Project>,
    pub tasks: Vec<Task>,
    pub sessions: Vec<Session>,
    pub team_members: Vec<TeamMember>,
    /// Head `seq` per scope: each project id, and `global`.
    pub seqs: BTreeMap<String, u64>,
}

/// `events:replay`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReplayRequest {
    /// Required; `None` only so that a missing field gets a clear error.
    #[serde(default)]
    pub after_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// At most this many events (default and maximum 1000); `hasMore` tells whether to ask
    /// again from the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `session:reply-input`: a human's answer to a session that needs input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReplyInput {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What `session:reply-input` answers (besides `ok`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReplyDelivered {
    /// The session after the reply: `needsInput` cleared, the `user_reply` timeline entry added.
    pub session: Session,
    /// The `directive` mail the agent receives.
    pub mail: MailMessage,
}

/// `session:stop`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct StopSession {
    #[serde(default)]
    pub session_id: Option<String>,
}

/// Payload of the `session:input` domain event: a human answered the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct SessionInput {
    pub session_id: String,
    pub message: String,
    /// The `directive` mail that carries the reply to the agent.
    pub mail_id: String,
    pub timestamp: Millis,
}

/// Payload of `replay:incomplete`: the events after `lastSeq` are no longer all in the journal
/// (or `lastSeq` is ahead of the server); the client resyncs with `state:sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReplayIncomplete {
    /// Always `false`.
    pub recovered: bool,
    /// The scope's project id, or `null` for the global scope.
    pub project_id: Option<String>,
    /// The latest `seq` of the scope when the gap was found.
    pub head_seq: u64,
    /// The `seq` the client (or the server's bridge) had reached.
    pub last_seq: u64,
}
