//! `/api/push/*`: the VAPID key and this caller's Web Push subscriptions.
//!
//! Subscribing needs only `read` (a notification tells what the device could read anyway); a
//! subscription belongs to the calling device or token, so revoking it ends its
//! notifications. See [`crate::push`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use maestro_protocol::{
    ErrorBody, PushSubscribe, PushSubscriptionInfo, PushUnsubscribe, PushUnsubscribed,
    VapidPublicKey,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::{AppState, Body};
use crate::error::Result;
use crate::push::subscriptions;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(vapid_public_key))
        .routes(routes!(subscribe, unsubscribe))
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
