//! `/api/team-members`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use maestro_protocol::{
    CreateTeamMember, Deleted, ErrorBody, ProjectRef, TeamMember, UpdateTeamMember,
};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath};
use crate::error::Result;

type Q = Query<HashMap<String, String>>;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list, create))
        .routes(routes!(built_for; get_one, update, delete))
        .routes(routes!(built_for; archive))
        .routes(routes!(built_for; unarchive))
        .routes(routes!(built_for; reset))
}

#[utoipa::path(
    get,
    path = "/team-members",
    tag = "team-members",
    summary = "Built-in and custom members of a project",
    params(("projectId" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<TeamMember>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn list(State(s): State<AppState>, Query(q): Q) -> Result<Json<Vec<TeamMember>>> {
    Ok(Json(s.domain.list_team_members(
        q.get("projectId").map(String::as_str),
    )?))
}

#[utoipa::path(
    post,
    path = "/team-members",
    tag = "team-members",
    summary = "Create a custom member",
    request_body = CreateTeamMember,
    security(("maestro" = ["operate"])),
    responses((status = 201, body = TeamMember), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateTeamMember>,
) -> Result<(StatusCode, Json<TeamMember>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.create_team_member(req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/team-members/{id}",
    tag = "team-members",
    summary = "Get a member",
    params(("id" = String, Path), ("projectId" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = TeamMember), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Q,
) -> Result<Json<TeamMember>> {
    Ok(Json(s.domain.get_team_member(
        &id,
        q.get("projectId").map(String::as_str),
    )?))
}

#[utoipa::path(
    patch,
    path = "/team-members/{id}",
    tag = "team-members",
    summary = "Edit a member (built-ins get an override)",
    params(("id" = String, Path)),
    request_body = UpdateTeamMember,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = TeamMember), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateTeamMember>,
) -> Result<Json<TeamMember>> {
    Ok(Json(s.domain.update_team_member(id, req).await?))
}

#[utoipa::path(
    delete,
    path = "/team-members/{id}",
    tag = "team-members",
    summary = "Delete an archived custom member",
    params(("id" = String, Path), ("projectId" = Option<String>, Query)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
)]
async fn delete(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Q,
) -> Result<Json<Deleted>> {
    Ok(Json(
        s.domain
            .delete_team_member(id, q.get("projectId").map(String::as_str))
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/team-members/{id}/archive",
    tag = "team-members",
    summary = "Archive a custom member",
    params(("id" = String, Path)),
    request_body = ProjectRef,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = TeamMember), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn archive(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<ProjectRef>,
) -> Result<Json<TeamMember>> {
    Ok(Json(
        s.domain
            .set_team_member_archived(id, req.project_id.as_deref(), true)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/team-members/{id}/unarchive",
    tag = "team-members",
    summary = "Restore an archived member",
    params(("id" = String, Path)),
    request_body = ProjectRef,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = TeamMember), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn unarchive(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<ProjectRef>,
) -> Result<Json<TeamMember>> {
    Ok(Json(
        s.domain
            .set_team_member_archived(id, req.project_id.as_deref(), false)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/team-members/{id}/reset",
    tag = "team-members",
    summary = "Restore a built-in as shipped",
    params(("id" = String, Path)),
    request_body = ProjectRef,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = TeamMember), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn reset(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<ProjectRef>,
) -> Result<Json<TeamMember>> {
    Ok(Json(
        s.domain
            .reset_team_member(id, req.project_id.as_deref())
            .await?,
    ))
}
