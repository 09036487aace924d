//! `/api/skills`: skills read from `SKILLS_DIR`.

use axum::Json;
use axum::extract::State;
use maestro_protocol::{ErrorBody, Skill, SkillDetail, SkillReloaded, SkillSummary};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, IdPath};
use crate::error::Result;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list))
        .routes(routes!(built_for; by_mode))
        .routes(routes!(built_for; get_one))
        .routes(routes!(built_for; reload))
}

#[utoipa::path(
    get,
    path = "/skills",
    tag = "skills",
    summary = "Skills found in SKILLS_DIR",
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<Skill>)),
)]
async fn list(State(s): State<AppState>) -> Result<Json<Vec<Skill>>> {
    Ok(Json(s.domain.list_skills().await?))
}

#[utoipa::path(
    get,
    path = "/skills/{id}",
    tag = "skills",
    summary = "Get a skill",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = SkillDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<SkillDetail>> {
    Ok(Json(s.domain.get_skill(&id).await?))
}

#[utoipa::path(
    get,
    path = "/skills/mode/{mode}",
    tag = "skills",
    summary = "Skills for a session mode",
    params(("mode" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<SkillSummary>), (status = 400, body = ErrorBody)),
)]
async fn by_mode(
    State(s): State<AppState>,
    IdPath(mode): IdPath<String>,
) -> Result<Json<Vec<SkillSummary>>> {
    Ok(Json(s.domain.skills_for_mode(&mode).await?))
}

#[utoipa::path(
    post,
    path = "/skills/{id}/reload",
    tag = "skills",
    summary = "Re-read a skill from disk",
    params(("id" = String, Path)),
    security(("maestro" = ["operate"])),
    responses((status = 200, body = SkillReloaded), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn reload(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<SkillReloaded>> {
    Ok(Json(s.domain.reload_skill(&id).await?))
}
