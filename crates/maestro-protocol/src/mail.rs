//! Agent-to-agent mail.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::Millis;

/// Mail types accepted by the API.
pub const MAIL_TYPES: &[&str] = &[
    "assignment",
    "status_update",
    "query",
    "response",
    "directive",
    "notification",
];

/// A message from one session to another, or to the whole project (`toSessionId: null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MailMessage {
    pub id: String,
    pub project_id: String,
    pub from_session_id: String,
    pub to_session_id: Option<String>,
    pub reply_to_mail_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub body: Value,
    pub created_at: Millis,
    /// Position in the project's mail, increasing; read cursors (`ack`) refer to it.
    #[serde(default)]
    pub seq: u64,
}

/// `POST /api/mail`. Strict, as upstream: unknown keys are rejected.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMail {
    pub project_id: String,
    pub from_session_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_team_member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_mail_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Map<String, Value>>,
}

/// The answer to a send: one message, or one per recipient session of a team member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(untagged)]
pub enum SentMail {
    One(MailMessage),
    Many(Vec<MailMessage>),
}

/// `DELETE /api/mail/:id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct MailDeleted {
    pub deleted: bool,
    pub id: String,
}

/// `POST /api/mail/inbox/:sessionId/ack`: marks everything up to `upTo` as read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckMail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    pub up_to: u64,
}

/// `POST /api/mail/wait/:sessionId`: long-poll for unread mail and move the read cursor past
/// what is returned, atomically (each message is received once). A write, so it is a POST: a
/// `GET` never moves the cursor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaitMail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Milliseconds, 1,000–120,000 (default 30,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// A session's read cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct MailCursor {
    pub session_id: String,
    pub project_id: String,
    /// The highest `seq` the session has read.
    pub cursor: u64,
}
