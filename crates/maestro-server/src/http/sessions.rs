//! `/api/sessions`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use maestro_protocol::{
    AddDoc, AppendSessionEvent, AppendTimeline, CreateSession, Deleted, DocEntry, ErrorBody,
    Heartbeat, ModalAck, ModalAction, ModalShown, Presence, Session, ShowModal, SpawnRequest,
    SpawnResponse, TimelinePage, UpdateSession,
};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath, number};
use crate::domain::sessions::SessionFilter;
use crate::error::{Error, Result};

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list, create))
        .routes(routes!(built_for; spawn))
        .routes(routes!(built_for; get_one, update, delete))
        .routes(routes!(built_for; events))
        .routes(routes!(built_for; heartbeat))
        .routes(routes!(built_for; timeline, timeline_page))
        .routes(routes!(built_for; docs, add_doc))
        .routes(routes!(built_for; link, unlink))
        .routes(routes!(built_for; modal))
        .routes(routes!(built_for; modal_action))
        .routes(routes!(built_for; modal_close))
}

#[utoipa::path(
    get,
    path = "/sessions",
    tag = "sessions",
    summary = "List sessions (active=true: spawning, idle, working)",
    params(("projectId" = Option<String>, Query), ("taskId" = Option<String>, Query), ("status" = Option<String>, Query), ("active" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Session>), (status = 400, body = ErrorBody)),
)]
async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Session>>> {
    let active = match q.get("active").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Error::validation(format!(
                "active must be 'true' or 'false', not '{other}'"
            )));
        }
    };
    let filter = SessionFilter {
        project_id: q.get("projectId").cloned(),
        task_id: q.get("taskId").cloned(),
        status: q.get("status").cloned(),
        active,
    };
    Ok(Json(s.domain.list_sessions(&filter)?))
}

#[utoipa::path(
    post,
    path = "/sessions",
    tag = "sessions",
    summary = "Create a session",
    request_body = CreateSession,
    security(("maestro" = ["operate"])),
    responses((status = 201, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateSession>,
) -> Result<(StatusCode, Json<Session>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.create_session(req).await?),
    ))
}

#[utoipa::path(
    post,
    path = "/sessions/spawn",
    tag = "sessions",
    summary = "Spawn an agent session (Idempotency-Key header supported)",
    request_body = SpawnRequest,
    security(("maestro" = ["operate"])),
    responses((status = 201, body = SpawnResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)),
)]
async fn spawn(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<SpawnRequest>,
) -> Result<(StatusCode, Json<SpawnResponse>)> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::validation("Idempotency-Key must be printable ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(s.domain.spawn_session(req, key).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}",
    tag = "sessions",
    summary = "Get a session",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Session>> {
    Ok(Json(s.domain.get_session(&id)?))
}

#[utoipa::path(
    patch,
    path = "/sessions/{id}",
    tag = "sessions",
    summary = "Update a session",
    params(("id" = String, Path)),
    request_body = UpdateSession,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateSession>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.update_session(id, req).await?))
}

#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "sessions",
    summary = "Delete a session",
    params(("id" = String, Path)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn delete(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Deleted>> {
    Ok(Json(s.domain.delete_session(id).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/events",
    tag = "sessions",
    summary = "Append a raw activity event",
    params(("id" = String, Path)),
    request_body = AppendSessionEvent,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn events(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AppendSessionEvent>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.append_session_event(id, req).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/timeline",
    tag = "sessions",
    summary = "Append a timeline entry",
    params(("id" = String, Path)),
    request_body = AppendTimeline,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn timeline(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AppendTimeline>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.append_session_timeline(id, req).await?))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}/timeline",
    tag = "sessions",
    summary = "One page of a session's timeline: entries [max(0, before-limit), before), oldest first",
    params(
        ("id" = String, Path),
        ("before" = Option<u64>, Query, description = "Index to page back from (default: the timeline's length)"),
        ("limit" = Option<u64>, Query, description = "At most this many entries (default 100, at most 500)"),
    ),
    security(("maestro" = ["read"])),
    responses((status = 200, body = TimelinePage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn timeline_page(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TimelinePage>> {
    let (before, limit) = (number(&q, "before")?, number(&q, "limit")?);
    Ok(Json(s.domain.session_timeline(&id, before, limit)?))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}/docs",
    tag = "sessions",
    summary = "A session's docs",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<DocEntry>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn docs(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Vec<DocEntry>>> {
    Ok(Json(s.domain.session_docs(&id)?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/docs",
    tag = "sessions",
    summary = "Attach a doc",
    params(("id" = String, Path)),
    request_body = AddDoc,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn add_doc(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AddDoc>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.add_session_doc(id, req).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/tasks/{task_id}",
    tag = "sessions",
    summary = "Link a task to a session",
    params(("id" = String, Path), ("task_id" = String, Path)),
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn link(
    State(s): State<AppState>,
    IdPath((id, task_id)): IdPath<(String, String)>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.link_session_task(id, task_id).await?))
}

#[utoipa::path(
    delete,
    path = "/sessions/{id}/tasks/{task_id}",
    tag = "sessions",
    summary = "Unlink a task from a session",
    params(("id" = String, Path), ("task_id" = String, Path)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn unlink(
    State(s): State<AppState>,
    IdPath((id, task_id)): IdPath<(String, String)>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.unlink_session_task(id, task_id).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/modal",
    tag = "sessions",
    summary = "Show an HTML modal in the UI",
    params(("id" = String, Path)),
    request_body = ShowModal,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = ModalShown), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn modal(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<ShowModal>,
) -> Result<Json<ModalShown>> {
    Ok(Json(s.domain.show_modal(id, req).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/modal/{modal_id}/actions",
    tag = "sessions",
    summary = "Report a modal action",
    params(("id" = String, Path), ("modal_id" = String, Path)),
    request_body = ModalAction,
    security(("maestro" = ["respond"])),
    responses((status = 200, body = ModalAck), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn modal_action(
    State(s): State<AppState>,
    IdPath((id, modal_id)): IdPath<(String, String)>,
    Body(req): Body<ModalAction>,
) -> Result<Json<ModalAck>> {
    Ok(Json(s.domain.modal_action(id, modal_id, req).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/modal/{modal_id}/close",
    tag = "sessions",
    summary = "Report a modal closed",
    params(("id" = String, Path), ("modal_id" = String, Path)),
    security(("maestro" = ["respond"])),
    responses((status = 200, body = ModalAck), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn modal_close(
    State(s): State<AppState>,
    IdPath((id, modal_id)): IdPath<(String, String)>,
) -> Result<Json<ModalAck>> {
    Ok(Json(s.domain.modal_close(id, modal_id).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/heartbeat",
    tag = "sessions",
    summary = "Heartbeat: the agent of this session is alive (progress=true: and moving)",
    params(("id" = String, Path)),
    request_body = Heartbeat,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Presence), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn heartbeat(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<Heartbeat>,
) -> Result<Json<Presence>> {
    Ok(Json(s.domain.heartbeat(id, req).await?))
}
