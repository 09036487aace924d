//! `/api/tasks`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use maestro_protocol::{
    CreateTask, Deleted, Task, TaskDocEntry, TaskTimelineRequest, TaskTimelineResponse, UpdateTask,
};

use super::{AppState, Body, IdPath};
use crate::domain::tasks::TaskFilter;
use crate::error::Result;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks", get(list).post(create))
        .route("/tasks/{id}", get(get_one).patch(update).delete(delete))
        .route("/tasks/{id}/children", get(children))
        .route("/tasks/{id}/timeline", post(timeline))
        .route("/tasks/{id}/docs", get(docs))
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Task>>> {
    let filter = TaskFilter {
        project_id: q.get("projectId").cloned(),
        status: q.get("status").cloned(),
        parent_id: q.get("parentId").map(|p| (p != "null").then(|| p.clone())),
    };
    Ok(Json(s.domain.list_tasks(&filter)?))
}

async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateTask>,
) -> Result<(StatusCode, Json<Task>)> {
    Ok((StatusCode::CREATED, Json(s.domain.create_task(req).await?)))
}

async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Task>> {
    Ok(Json(s.domain.get_task(&id)?))
}

async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateTask>,
) -> Result<Json<Task>> {
    Ok(Json(s.domain.update_task(id, req).await?))
}

async fn delete(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Deleted>> {
    Ok(Json(s.domain.delete_task(id).await?))
}

async fn children(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Vec<Task>>> {
    Ok(Json(s.domain.task_children(&id)?))
}

async fn timeline(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<TaskTimelineRequest>,
) -> Result<Json<TaskTimelineResponse>> {
    Ok(Json(s.domain.task_timeline(id, req).await?))
}

async fn docs(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Vec<TaskDocEntry>>> {
    Ok(Json(s.domain.task_docs(&id)?))
}
