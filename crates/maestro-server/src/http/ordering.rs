//! `/api/ordering/:entityType/:projectId`: the UI's display order of tasks and sessions.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use maestro_protocol::{Ordering, UpdateOrdering};

use super::{AppState, Body, IdPath};
use crate::error::Result;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/ordering/{entity_type}/{project_id}",
        get(get_one).put(update),
    )
}

async fn get_one(
    State(s): State<AppState>,
    IdPath((entity_type, project_id)): IdPath<(String, String)>,
) -> Result<Json<Ordering>> {
    Ok(Json(s.domain.get_ordering(&entity_type, &project_id)?))
}

async fn update(
    State(s): State<AppState>,
    IdPath((entity_type, project_id)): IdPath<(String, String)>,
    Body(req): Body<UpdateOrdering>,
) -> Result<Json<Ordering>> {
    Ok(Json(
        s.domain.set_ordering(entity_type, project_id, req).await?,
    ))
}
