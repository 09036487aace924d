//! `/api/projects`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use maestro_protocol::{CreateProject, Deleted, ErrorBody, Project, UpdateProject};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath};
use crate::error::Result;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list, create))
        .routes(routes!(built_for; get_one, update, delete))
}

#[utoipa::path(
    get,
    path = "/projects",
    tag = "projects",
    summary = "List projects",
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Project>)),
)]
async fn list(State(s): State<AppState>) -> Result<Json<Vec<Project>>> {
    Ok(Json(s.domain.list_projects()?))
}

#[utoipa::path(
    post,
    path = "/projects",
    tag = "projects",
    summary = "Create a project",
    request_body = CreateProject,
    security(("maestro" = ["admin"])),
    responses((status = 201, body = Project), (status = 400, body = ErrorBody)),
)]
async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateProject>,
) -> Result<(StatusCode, Json<Project>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.create_project(req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/projects/{id}",
    tag = "projects",
    summary = "Get a project",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Project), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Project>> {
    Ok(Json(s.domain.get_project(&id)?))
}

#[utoipa::path(
    put,
    path = "/projects/{id}",
    tag = "projects",
    summary = "Update a project",
    params(("id" = String, Path)),
    request_body = UpdateProject,
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Project), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateProject>,
) -> Result<Json<Project>> {
    Ok(Json(s.domain.update_project(id, req).await?))
}

#[utoipa::path(
    delete,
    path = "/projects/{id}",
    tag = "projects",
    summary = "Delete an empty project",
    params(("id" = String, Path)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
)]
async fn delete(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Deleted>> {
    Ok(Json(s.domain.delete_project(id).await?))
}
