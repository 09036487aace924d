//! `/api/skills`: skills read from `SKILLS_DIR`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use maestro_protocol::{Skill, SkillDetail, SkillReloaded, SkillSummary};

use super::{AppState, IdPath};
use crate::error::Result;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/skills", get(list))
        .route("/skills/mode/{mode}", get(by_mode))
        .route("/skills/{id}", get(get_one))
        .route("/skills/{id}/reload", post(reload))
}

async fn list(State(s): State<AppState>) -> Result<Json<Vec<Skill>>> {
    Ok(Json(s.domain.list_skills().await?))
}

async fn get_one(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<SkillDetail>> {
    Ok(Json(s.domain.get_skill(&id).await?))
}

async fn by_mode(
    State(s): State<AppState>,
    IdPath(mode): IdPath<String>,
) -> Result<Json<Vec<SkillSummary>>> {
    Ok(Json(s.domain.skills_for_mode(&mode).await?))
}

async fn reload(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<SkillReloaded>> {
    Ok(Json(s.domain.reload_skill(&id).await?))
}
