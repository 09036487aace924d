//! `/api/ordering/:entityType/:projectId`: the UI's display order of tasks and sessions.

use axum::Json;
use axum::extract::State;
use maestro_protocol::{ErrorBody, Ordering, UpdateOrdering};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath};
use crate::error::Result;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(built_for; get_one, update))
}

#[utoipa::path(
    get,
    path = "/ordering/{entity_type}/{project_id}",
    tag = "ordering",
    summary = "Display order of tasks or sessions",
    params(("entity_type" = String, Path), ("project_id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Ordering), (status = 400, body = ErrorBody)),
)]
async fn get_one(
    State(s): State<AppState>,
    IdPath((entity_type, project_id)): IdPath<(String, String)>,
) -> Result<Json<Ordering>> {
    Ok(Json(s.domain.get_ordering(&entity_type, &project_id)?))
}

#[utoipa::path(
    put,
    path = "/ordering/{entity_type}/{project_id}",
    tag = "ordering",
    summary = "Save a display order",
    params(("entity_type" = String, Path), ("project_id" = String, Path)),
    request_body = UpdateOrdering,
    security(("maestro" = ["operate"])),
    responses((status = 200, body = Ordering), (status = 400, body = ErrorBody)),
)]
async fn update(
    State(s): State<AppState>,
    IdPath((entity_type, project_id)): IdPath<(String, String)>,
    Body(req): Body<UpdateOrdering>,
) -> Result<Json<Ordering>> {
    Ok(Json(
        s.domain.set_ordering(entity_type, project_id, req).await?,
    ))
}
