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
    /// A runner (a machine hosting agents) stopped beating.
    MachineOffline,
    /// A runner that was offline beats again.
    MachineOnline,
    /// `POST /api/push/test`: the device asked for one.
    Test,
}

impl PushKind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [PushKind; 7] = [
        Self::NeedsInput,
        Self::SessionFailed,
        Self::SessionCompleted,
        Self::Approval,
        Self::MachineOffline,
        Self::MachineOnline,
        Self::Test,
    ];

    /// The wire name (`needs_input`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeedsInput => "needs_input",
            Self::SessionFailed => "session_failed",
            Self::SessionCompleted => "session_completed",
            Self::Approval => "approval",
            Self::MachineOffline => "machine_offline",
            Self::MachineOnline => "machine_online",
            Self::Test => "test",
        }
    }
}

/// The decrypted body of a push, read by the web app's service worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushPayload {
    pub title: String,
    /// At most a short line (the agent's question, cut).
    pub body: String,
    /// The session it is about (empty for a machine's or a test notification).
    pub session_id: String,
    /// The project it is about (empty for a machine's or a test notification).
    pub project_id: String,
    pub kind: PushKind,
    /// Where a tap on the notification goes, relative to the app (`/#/s/<sessionId>`).
    pub url: String,
    /// The notification's tag: a later notification with the same tag replaces this one
    /// (one per session, one per machine).
    #[serde(default)]
    pub tag: String,
    /// How many events this notification stands for (more than 1 when several events of the
    /// same session within the coalescing window were folded into it).
    #[serde(default = "one")]
    pub count: u32,
    /// The approval an `approval` notification asks about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Buttons on the notification (Allow and Deny on an approval, for a device that may
    /// decide); each posts its token to `POST /api/push/actions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<PushAction>,
}

fn one() -> u32 {
    1
}

/// A button on a notification and the single-use token that performs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushAction {
    /// `allow` or `deny`: the `action` of the `notificationclick` event.
    pub action: String,
    pub title: String,
    /// Bound to this approval, this decision and this device; valid until the approval ends.
    pub token: String,
}

/// `POST /api/push/actions`: what a notification's button sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushActionRequest {
    pub token: String,
}

/// Which kinds of notification a device gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", default)]
pub struct NotifyKinds {
    pub approvals: bool,
    pub needs_input: bool,
    pub failed: bool,
    pub completed: bool,
    /// A machine (runner) went offline or came back.
    pub machine_offline: bool,
}

impl Default for NotifyKinds {
    fn default() -> Self {
        Self {
            approvals: true,
            needs_input: true,
            failed: true,
            completed: true,
            machine_offline: true,
        }
    }
}

/// Hours in which a device is not notified, in the device's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct QuietHours {
    /// Minute of the day they start (0-1439), local time.
    pub start: u16,
    /// Minute of the day they end (0-1439); before `start` means they run past midnight.
    pub end: u16,
    /// Approvals notify even during quiet hours.
    #[serde(default = "yes")]
    pub approvals_still_notify: bool,
}

fn yes() -> bool {
    true
}

/// A device's notification settings, kept on the server (`GET`/`PUT /api/push/settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct NotifySettings {
    #[serde(default)]
    pub kinds: NotifyKinds,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// The device's offset from UTC in minutes (`-new Date().getTimezoneOffset()`): quiet
    /// hours are in its local time. The app sends it again when it changes (travel, DST).
    #[serde(default)]
    pub utc_offset_minutes: i16,
}

/// `GET /api/push/settings`: this device's settings and its last delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct NotifyStatus {
    pub settings: NotifySettings,
    /// When a push service last accepted a notification for this device.
    pub last_delivery_at: Option<crate::Millis>,
    /// This device's push subscriptions (browsers) on the server.
    pub subscriptions: u32,
    /// Whether the server counts this device as looking at the app now (it then gets no push
    /// for what the app shows).
    pub visible: bool,
}

/// `POST /api/push/test`: how many of this device's subscriptions took the test notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushTestResult {
    pub sent: u32,
    pub failed: u32,
}

/// The answer to `DELETE /api/push/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PushUnsubscribed {
    /// Whether the caller had a subscription with that endpoint.
    pub removed: bool,
}

/// `client:visibility` (Socket.IO, either namespace): whether the app is on screen. While a
/// device's app is visible and connected it gets no push for what it already shows; the app
/// says it again every few seconds while visible (the server forgets it after
/// [`VISIBLE_FOR_MS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ClientVisibility {
    pub visible: bool,
}

/// How long a `client:visibility {visible: true}` holds without being said again.
pub const VISIBLE_FOR_MS: i64 = 15_000;
