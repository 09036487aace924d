//! `/api/runners` and a session's `stop` and `resume` (new in Maestro; see docs/runners.md).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use maestro_protocol::{
    Claimed, ErrorBody, LaunchReport, RegisterRunner, Runner, RunnerHeartbeat, Session, StopRequest,
};
use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath, only};
use crate::domain::runners::MAX_CLAIM_WAIT_MS;
use crate::error::{Error, Result};

/// A claim long-poll without `timeout` waits this long.
const DEFAULT_CLAIM_WAIT_MS: u64 = 25_000;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list, register))
        .routes(routes!(built_for; get_one))
        .routes(routes!(built_for; heartbeat))
        .routes(routes!(built_for; claim))
        .routes(routes!(built_for; launched))
        .routes(routes!(built_for; stop))
        .routes(routes!(built_for; resume))
}

#[utoipa::path(
    get,
    path = "/runners",
    tag = "runners",
    summary = "The runners (machines that run agents), online or not",
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Runner>)),
)]
async fn list(State(s): State<AppState>) -> Result<Json<Vec<Runner>>> {
    Ok(Json(s.domain.list_runners()?))
}

#[utoipa::path(
    post,
    path = "/runners",
    tag = "runners",
    summary = "Register a runner (scope runner); again after every restart",
    request_body = RegisterRunner,
    security(("maestro" = ["runner"])),
    responses((status = 201, body = Runner), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)),
)]
async fn register(
    State(s): State<AppState>,
    Body(req): Body<RegisterRunner>,
) -> Result<(StatusCode, Json<Runner>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.register_runner(req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/runners/{id}",
    tag = "runners",
    summary = "One runner",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Runner), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Runner>> {
    Ok(Json(s.domain.get_runner(&id)?))
}

#[utoipa::path(
    post,
    path = "/runners/{id}/heartbeat",
    tag = "runners",
    summary = "One beat for the runner and every session it hosts (scope runner)",
    params(("id" = String, Path)),
    request_body = RunnerHeartbeat,
    security(("maestro" = ["runner"])),
    responses((status = 200, body = Runner), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
)]
async fn heartbeat(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<RunnerHeartbeat>,
) -> Result<Json<Runner>> {
    // Run to the end even if the runner hangs up (it may have just been killed): a beat
    // recorded for the runner but not for its sessions would misreport why they went silent.
    let domain = s.domain.clone();
    let beat = tokio::spawn(async move { domain.runner_heartbeat(id, req.session_ids).await });
    let runner = beat
        .await
        .map_err(|e| Error::Internal(format!("runner beat: {e}")))??;
    Ok(Json(runner))
}

#[utoipa::path(
    post,
    path = "/runners/{id}/claim",
    tag = "runners",
    summary = "Long-poll: claim the spawns waiting for this runner's machine (scope runner)",
    description = "Answers as soon as the runner wins at least one launch, or with none at the timeout. Each launch is won by exactly one runner.",
    params(("id" = String, Path), ("timeout" = Option<u64>, Query, description = "milliseconds, 0-60000 (default 25000)")),
    security(("maestro" = ["runner"])),
    responses((status = 200, body = Claimed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn claim(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Claimed>> {
    only(&q, &["timeout"])?;
    let timeout = match q.get("timeout") {
        None => DEFAULT_CLAIM_WAIT_MS,
        Some(t) => t
            .parse()
            .map_err(|_| Error::validation(format!("timeout must be milliseconds, not '{t}'")))?,
    };
    if timeout > MAX_CLAIM_WAIT_MS {
        return Err(Error::validation(format!(
            "timeout must be at most {MAX_CLAIM_WAIT_MS} ms"
        )));
    }
    Ok(Json(s.domain.claim_launches(id, timeout).await?))
}

#[utoipa::path(
    post,
    path = "/runners/{id}/launched",
    tag = "runners",
    summary = "Report a claimed launch: started, could not start, or exited (scope runner)",
    params(("id" = String, Path)),
    request_body = LaunchReport,
    security(("maestro" = ["runner"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn launched(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<LaunchReport>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.report_launch(id, req).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/stop",
    tag = "sessions",
    summary = "Stop the session's agent: interrupt, terminate, kill",
    description = "When a host (a runner or `maestro run`) holds the agent, it is asked to stop it and ends the session `stopped`; the answer is the session as it is now. A session nothing hosts is `stopped` at once. Stopping an ended session changes nothing.",
    params(("id" = String, Path)),
    request_body = StopRequest,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn stop(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<StopRequest>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.stop_session(id, req.grace_ms).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/resume",
    tag = "sessions",
    summary = "Start a finished session's agent again, on the machine that ran it",
    params(("id" = String, Path)),
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn resume(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Session>> {
    Ok(Json(s.domain.resume_session(id).await?))
}
