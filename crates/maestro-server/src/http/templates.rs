//! `/api/workflow-templates`: the built-in workflow templates.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use maestro_protocol::WorkflowTemplate;

use super::{AppState, IdPath};
use crate::error::Result;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workflow-templates", get(list))
        .route("/workflow-templates/{id}", get(get_one))
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Vec<WorkflowTemplate>> {
    Json(s.domain.list_templates(q.get("mode").map(String::as_str)))
}

async fn get_one(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<WorkflowTemplate>> {
    Ok(Json(s.domain.get_template(&id)?))
}
