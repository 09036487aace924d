//! `/api/push/*`: the VAPID key, this caller's Web Push subscriptions and notification
//! settings, a test notification, and the notification buttons' actions.
//!
//! Subscribing, settings and the test need only `read` (a notification tells what the device
//! could read anyway, and each touches only the calling device's own records); a
//! subscription belongs to the calling device or token, so revoking it ends its
//! notifications. An action decides an approval, so it needs `respond`. See [`crate::push`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use maestro_protocol::{
    Approval, ErrorBody, NotifySettings, NotifyStatus, PushActionRequest, PushSubscribe,
    PushSubscriptionInfo, PushTestResult, PushUnsubscribe, PushUnsubscribed, VapidPublicKey,
};
use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::auth::Caller;
use super::{AppState, Body};
use crate::error::Result;
use crate::push::{actions, devices, subscriptions};

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; vapid_public_key))
        .routes(routes!(built_for; subscribe, unsubscribe))
        .routes(routes!(built_for; get_settings, put_settings))
        .routes(routes!(built_for; test))
        .routes(routes!(built_for; action))
}

#[utoipa::path(
    get,
    path = "/push/vapid-public-key",
    tag = "push",
    summary = "The server's VAPID public key: the applicationServerKey of pushManager.subscribe()",
    security(("maestro" = ["read"])),
    responses((status = 200, body = VapidPublicKey), (status = 401, body = ErrorBody)),
)]
async fn vapid_public_key(State(s): State<AppState>) -> Json<VapidPublicKey> {
    Json(VapidPublicKey {
        public_key: s.push.public_key().to_owned(),
    })
}

#[utoipa::path(
    post,
    path = "/push/subscriptions",
    tag = "push",
    summary = "Subscribe this device to notifications (a session needs input, fails or completes)",
    description = "The body is PushSubscription.toJSON(). The subscription belongs to the calling device or token (deleted when it is revoked); at most 10 per device, the oldest is replaced. Needs scope read.",
    request_body = PushSubscribe,
    security(("maestro" = ["read"])),
    responses((status = 201, body = PushSubscriptionInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn subscribe(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Body(req): Body<PushSubscribe>,
) -> Result<(StatusCode, Json<PushSubscriptionInfo>)> {
    let allow_local = s.config.push_allow_local_endpoints;
    let info = subscriptions::subscribe(&s.domain, caller.id, req, allow_local).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(
    delete,
    path = "/push/subscriptions",
    tag = "push",
    summary = "Unsubscribe this device's subscription of an endpoint",
    request_body = PushUnsubscribe,
    security(("maestro" = ["read"])),
    responses((status = 200, body = PushUnsubscribed), (status = 401, body = ErrorBody)),
)]
async fn unsubscribe(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Body(req): Body<PushUnsubscribe>,
) -> Result<Json<PushUnsubscribed>> {
    let removed = subscriptions::unsubscribe(&s.domain, caller.id, &req.endpoint).await?;
    Ok(Json(PushUnsubscribed { removed }))
}

#[utoipa::path(
    get,
    path = "/push/settings",
    tag = "push",
    summary = "This device's notification settings, its last delivery and how many subscriptions it has",
    security(("maestro" = ["read"])),
    responses((status = 200, body = NotifyStatus), (status = 401, body = ErrorBody)),
)]
async fn get_settings(
    State(s): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<NotifyStatus>> {
    Ok(Json(devices::status(
        &s.domain,
        actions::device_of(&caller),
    )?))
}

#[utoipa::path(
    put,
    path = "/push/settings",
    tag = "push",
    summary = "Replace this device's notification settings (kinds, quiet hours, its UTC offset)",
    description = "Quiet hours are minutes of the day in the device's local time (`utcOffsetMinutes`); `approvalsStillNotify` lets approvals through them. Needs scope read: it changes only the calling device's notifications.",
    request_body = NotifySettings,
    security(("maestro" = ["read"])),
    responses((status = 200, body = NotifySettings), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
)]
async fn put_settings(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Body(req): Body<NotifySettings>,
) -> Result<Json<NotifySettings>> {
    Ok(Json(
        devices::put_settings(&s.domain, actions::device_of(&caller), req).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/push/test",
    tag = "push",
    summary = "Send a test notification to this device's subscriptions now",
    security(("maestro" = ["read"])),
    responses((status = 200, body = PushTestResult), (status = 401, body = ErrorBody)),
)]
async fn test(State(s): State<AppState>, Caller(caller): Caller) -> Result<Json<PushTestResult>> {
    Ok(Json(s.push.send_test(actions::device_of(&caller)).await?))
}

#[utoipa::path(
    post,
    path = "/push/actions",
    tag = "push",
    summary = "Perform a notification button's action (Allow or Deny on an approval)",
    description = "What the service worker posts when a button of an approval notification is tapped. The token names one approval, decision and device; the caller must be that device (its cookie or token) with scope respond. The decision goes through the same exactly-once path as `POST /approvals/{id}/decision`: once it ended, 409 `APPROVAL_DECIDED` with the approval (who decided) in `details`. 403 `ACTION_REFUSED` for a token that is forged or another device's. Needs no CSRF header: the token itself is the proof a foreign page cannot forge.",
    request_body = PushActionRequest,
    security(("maestro" = ["respond"])),
    responses((status = 200, body = Approval), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn action(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Body(req): Body<PushActionRequest>,
) -> Result<Json<Approval>> {
    Ok(Json(s.push.redeem(&caller, &req.token).await?))
}
