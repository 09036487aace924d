//! `/api/workflow-templates`: the built-in workflow templates.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use maestro_protocol::ErrorBody;
use maestro_protocol::WorkflowTemplate;

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, IdPath};
use crate::error::Result;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list))
        .routes(routes!(built_for; get_one))
}

#[utoipa::path(
    get,
    path = "/workflow-templates",
    tag = "templates",
    summary = "Built-in workflow templates",
    params(("mode" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<WorkflowTemplate>)),
)]
async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Vec<WorkflowTemplate>> {
    Json(s.domain.list_templates(q.get("mode").map(String::as_str)))
}

#[utoipa::path(
    get,
    path = "/workflow-templates/{id}",
    tag = "templates",
    summary = "Get a workflow template",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = WorkflowTemplate), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<WorkflowTemplate>> {
    Ok(Json(s.domain.get_template(&id)?))
}
