//! `/api/projects`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use maestro_protocol::{CreateProject, Deleted, Project, UpdateProject};

use super::{AppState, Body, IdPath};
use crate::error::Result;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/{id}", get(get_one).put(update).delete(delete))
}

async fn list(State(s): State<AppState>) -> Result<Json<Vec<Project>>> {
    Ok(Json(s.domain.list_projects()?))
}

async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateProject>,
) -> Result<(StatusCode, Json<Project>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.create_project(req).await?),
    ))
}

async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Project>> {
    Ok(Json(s.domain.get_project(&id)?))
}

async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateProject>,
) -> Result<Json<Project>> {
    Ok(Json(s.domain.update_project(id, req).await?))
}

async fn delete(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Deleted>> {
    Ok(Json(s.domain.delete_project(id).await?))
}
