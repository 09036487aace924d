//! `/api/team-members`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use maestro_protocol::{CreateTeamMember, Deleted, ProjectRef, TeamMember, UpdateTeamMember};

use super::{AppState, Body, IdPath};
use crate::error::Result;

type Q = Query<HashMap<String, String>>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/team-members", get(list).post(create))
        .route(
            "/team-members/{id}",
            get(get_one).patch(update).delete(delete),
        )
        .route("/team-members/{id}/archive", post(archive))
        .route("/team-members/{id}/unarchive", post(unarchive))
        .route("/team-members/{id}/reset", post(reset))
}

async fn list(State(s): State<AppState>, Query(q): Q) -> Result<Json<Vec<TeamMember>>> {
    Ok(Json(s.domain.list_team_members(
        q.get("projectId").map(String::as_str),
    )?))
}

async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateTeamMember>,
) -> Result<(StatusCode, Json<TeamMember>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.create_team_member(req).await?),
    ))
}

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

async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateTeamMember>,
) -> Result<Json<TeamMember>> {
    Ok(Json(s.domain.update_team_member(id, req).await?))
}

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
