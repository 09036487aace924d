//! Web Push (`/api/push/*`): the server's VAPID key and the browsers' push subscriptions.
//!
//! A subscription is what a browser's `pushManager.subscribe()` returns: the push service's
//! URL for this browser and the keys the payload is encrypted to (RFC 8291). The server sends
//! a short notification when a session needs input, fails or completes; see
//! `docs/security.md` for what a notification carries.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/push/vapid-public-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct VapidPublicKey {
    /// The server's P-256 VAPID key as an uncompressed point (65 bytes), base64url without
    /// padding: the `applicationServerKey` of `pushManager.subscribe()`.
    pub public_key: String,
}

/// The keys of a push subscription, base64url as browsers give them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushKeys {
    /// The browser's P-256 public key (uncompressed point).
    pub p256dh: String,
    /// The browser's 16-byte authentication secret.
    pub auth: String,
}

/// `POST /api/push/subscriptions`: `PushSubscription.toJSON()` (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushSubscribe {
    /// The push service URL for this browser (`https://…`).
    pub endpoint: String,
    pub keys: PushKeys,
}

/// `DELETE /api/push/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushUnsubscribe {
    pub endpoint: String,
}

/// A stored subscription as the API shows it (no keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushSubscriptionInfo {
    pub id: String,
    pub endpoint: String,
    /// The device (or token) it belongs to; `null` for a local caller.
    pub device_id: Option<String>,
    pub created_at: crate::Millis,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    NeedsInput,
    SessionFailed,
    SessionCompleted,
    /// An agent asks to run a tool (`approval:requested`).
    Approval,
}

/// The decrypted body of a push, read by the web app's service worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushPayload {
    pub title: String,
    /// At most a short line (the agent's question, cut).
    pub body: String,
    pub session_id: String,
    pub project_id: String,
    pub kind: PushKind,
    /// Where a tap on the notification goes, relative to the app (`/#/s/<sessionId>`).
    pub url: String,
}

/// The answer to `DELETE /api/push/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushUnsubscribed {
    /// Whether the caller had a subscription with that endpoint.
    pub removed: bool,
}
