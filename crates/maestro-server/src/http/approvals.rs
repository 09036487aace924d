//! `/api/approvals` and `/api/sessions/:id/approvals`: tool permission requests (new in
//! Maestro; see `docs/compatibility.md`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use maestro_protocol::{Approval, ApprovalStatus, CreateApproval, DecideApproval, ErrorBody};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::auth::Caller;
use super::{AppState, Body, IdPath, only};
use crate::domain::approvals::DEFAULT_WAIT_MS;
use crate::error::{Error, Result};

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; session_list, create))
        .routes(routes!(built_for; pending))
        .routes(routes!(built_for; get_one))
        .routes(routes!(built_for; wait))
        .routes(routes!(built_for; decide))
        .routes(routes!(built_for; cancel))
}

fn status_param(q: &HashMap<String, String>) -> Result<Option<ApprovalStatus>> {
    q.get("status")
        .map(|s| {
            serde_json::from_value(serde_json::Value::String(s.clone())).map_err(|_| {
                Error::validation(format!(
                    "status must be pending, allowed, denied or cancelled, not '{s}'"
                ))
            })
        })
        .transpose()
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/approvals",
    tag = "approvals",
    summary = "Ask a human before running a tool (what `maestro approve` calls)",
    description = "Creates a pending approval and sends `approval:requested`, or, when an earlier `allow_session` decision of this session matches the same tool and input, answers at once (status `allowed`). The same `requestId` returns the approval it created (200).",
    params(("id" = String, Path)),
    request_body = CreateApproval,
    security(("maestro" = ["operate"])),
    responses((status = 201, body = Approval), (status = 200, body = Approval), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)),
)]
async fn create(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<CreateApproval>,
) -> Result<(StatusCode, Json<Approval>)> {
    let (approval, created) = s.domain.create_approval(id, req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(approval)))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}/approvals",
    tag = "approvals",
    summary = "A session's approvals, oldest first",
    params(("id" = String, Path), ("status" = Option<String>, Query, description = "pending, allowed, denied or cancelled")),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Approval>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn session_list(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Approval>>> {
    only(&q, &["status"])?;
    Ok(Json(s.domain.session_approvals(&id, status_param(&q)?)?))
}

#[utoipa::path(
    get,
    path = "/approvals",
    tag = "approvals",
    summary = "Every pending approval (of one project with projectId), oldest first",
    params(("projectId" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Approval>), (status = 400, body = ErrorBody)),
)]
async fn pending(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Approval>>> {
    only(&q, &["projectId"])?;
    Ok(Json(s.domain.pending_approvals(
        q.get("projectId").map(String::as_str),
    )?))
}

#[utoipa::path(
    get,
    path = "/approvals/{id}",
    tag = "approvals",
    summary = "One approval",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Approval), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Approval>> {
    Ok(Json(s.domain.get_approval(&id)?))
}

#[utoipa::path(
    get,
    path = "/approvals/{id}/wait",
    tag = "approvals",
    summary = "Long-poll: the approval as soon as it is decided or cancelled, or as it is at the timeout",
    params(("id" = String, Path), ("timeout" = Option<u64>, Query, description = "milliseconds, 0-120000 (default 30000)")),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Approval), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn wait(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Approval>> {
    only(&q, &["timeout"])?;
    let timeout = match q.get("timeout") {
        None => DEFAULT_WAIT_MS,
        Some(t) => t
            .parse()
            .map_err(|_| Error::validation(format!("timeout must be milliseconds, not '{t}'")))?,
    };
    Ok(Json(s.domain.wait_approval(&id, timeout).await?))
}

#[utoipa::path(
    post,
    path = "/approvals/{id}/decision",
    tag = "approvals",
    summary = "Decide a pending approval (scope respond); the first decision wins",
    description = "409 `APPROVAL_DECIDED` (with the approval as it was decided in `details`) when it was already decided or cancelled, unless the request repeats the winning decision's `requestId`.",
    params(("id" = String, Path)),
    request_body = DecideApproval,
    security(("maestro" = ["respond"])),
    responses((status = 200, body = Approval), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn decide(
    State(s): State<AppState>,
    Caller(caller): Caller,
    IdPath(id): IdPath<String>,
    Body(req): Body<DecideApproval>,
) -> Result<Json<Approval>> {
    Ok(Json(
        s.domain.decide_approval(id, req, caller.label()).await?,
    ))
}

/// `POST /api/approvals/:id/cancel`.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelApproval {
    /// Why the agent stopped waiting.
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/approvals/{id}/cancel",
    tag = "approvals",
    summary = "Withdraw a pending approval (the agent stopped waiting); an ended one is returned as it is",
    params(("id" = String, Path)),
    request_body = CancelApproval,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Approval), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn cancel(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<CancelApproval>,
) -> Result<Json<Approval>> {
    Ok(Json(s.domain.cancel_approval(id, req.reason).await?))
}
