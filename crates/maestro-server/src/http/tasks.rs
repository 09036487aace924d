//! `/api/tasks`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use maestro_protocol::{
    Claim, ClaimRequest, CreateTask, Deleted, ErrorBody, LeaseRequest, Released, Task,
    TaskDocEntry, TaskTimelineRequest, TaskTimelineResponse, UpdateTask,
};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath};
use crate::domain::tasks::TaskFilter;
use crate::error::Result;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list, create))
        .routes(routes!(built_for; get_one, update, delete))
        .routes(routes!(built_for; children))
        .routes(routes!(built_for; timeline))
        .routes(routes!(built_for; docs))
        .routes(routes!(built_for; claim, get_claim))
        .routes(routes!(built_for; renew))
        .routes(routes!(built_for; release))
}

#[utoipa::path(
    get,
    path = "/tasks",
    tag = "tasks",
    summary = "List tasks (parentId=null: root tasks)",
    params(("projectId" = Option<String>, Query), ("status" = Option<String>, Query), ("parentId" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Task>), (status = 400, body = ErrorBody)),
)]
async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse> {
    let filter = TaskFilter {
        project_id: q.get("projectId").cloned(),
        status: q.get("status").cloned(),
        parent_id: q.get("parentId").map(|p| (p != "null").then(|| p.clone())),
    };
    // Already JSON (and often cached): sent as it is.
    let body = s.domain.list_tasks_json(&filter).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Bytes::from_owner(body),
    ))
}

#[utoipa::path(
    post,
    path = "/tasks",
    tag = "tasks",
    summary = "Create a task",
    request_body = CreateTask,
    security(("maestro" = ["operate"])),
    responses((status = 201, body = Task), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateTask>,
) -> Result<(StatusCode, Json<Task>)> {
    Ok((StatusCode::CREATED, Json(s.domain.create_task(req).await?)))
}

#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "tasks",
    summary = "Get a task",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Task), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Task>> {
    Ok(Json(s.domain.get_task(&id)?))
}

#[utoipa::path(
    patch,
    path = "/tasks/{id}",
    tag = "tasks",
    summary = "Update a task (user mode, or session mode with updateSource=session)",
    params(("id" = String, Path)),
    request_body = UpdateTask,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Task), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateTask>,
) -> Result<Json<Task>> {
    Ok(Json(s.domain.update_task(id, req).await?))
}

#[utoipa::path(
    delete,
    path = "/tasks/{id}",
    tag = "tasks",
    summary = "Delete a task and its descendants",
    params(("id" = String, Path)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn delete(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Deleted>> {
    Ok(Json(s.domain.delete_task(id).await?))
}

#[utoipa::path(
    get,
    path = "/tasks/{id}/children",
    tag = "tasks",
    summary = "Direct children of a task",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Task>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn children(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Vec<Task>>> {
    Ok(Json(s.domain.task_children(&id)?))
}

#[utoipa::path(
    post,
    path = "/tasks/{id}/timeline",
    tag = "tasks",
    summary = "Add an entry about this task to a session's timeline",
    params(("id" = String, Path)),
    request_body = TaskTimelineRequest,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = TaskTimelineResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn timeline(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<TaskTimelineRequest>,
) -> Result<Json<TaskTimelineResponse>> {
    Ok(Json(s.domain.task_timeline(id, req).await?))
}

#[utoipa::path(
    get,
    path = "/tasks/{id}/docs",
    tag = "tasks",
    summary = "Docs about this task from its sessions",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<TaskDocEntry>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn docs(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Vec<TaskDocEntry>>> {
    Ok(Json(s.domain.task_docs(&id)?))
}

#[utoipa::path(
    post,
    path = "/tasks/{id}/claim",
    tag = "tasks",
    summary = "Claim a task for a session: a lease with a fencing token, or 409 with the holder",
    params(("id" = String, Path)),
    request_body = ClaimRequest,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Claim), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn claim(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<ClaimRequest>,
) -> Result<Json<Claim>> {
    Ok(Json(s.domain.claim_task(id, req).await?))
}

#[utoipa::path(
    get,
    path = "/tasks/{id}/claim",
    tag = "tasks",
    summary = "The task's current lease (null when unclaimed)",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Option<Claim>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_claim(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Option<Claim>>> {
    Ok(Json(s.domain.get_claim(&id)?))
}

#[utoipa::path(
    post,
    path = "/tasks/{id}/claim/renew",
    tag = "tasks",
    summary = "Extend the caller's lease",
    params(("id" = String, Path)),
    request_body = LeaseRequest,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Claim), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn renew(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<LeaseRequest>,
) -> Result<Json<Claim>> {
    Ok(Json(s.domain.renew_claim(id, req).await?))
}

#[utoipa::path(
    post,
    path = "/tasks/{id}/claim/release",
    tag = "tasks",
    summary = "Give the caller's lease up",
    params(("id" = String, Path)),
    request_body = LeaseRequest,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Released), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn release(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<LeaseRequest>,
) -> Result<Json<Released>> {
    Ok(Json(s.domain.release_claim(id, req).await?))
}
