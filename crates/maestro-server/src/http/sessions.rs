//! `/api/sessions`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use maestro_protocol::{
    AddDoc, AppendSessionEvent, AppendTimeline, CreateSession, Deleted, DocEntry, ModalAck,
    ModalAction, ModalShown, Session, ShowModal, SpawnRequest, SpawnResponse, UpdateSession,
};

use super::{AppState, Body, IdPath};
use crate::domain::sessions::SessionFilter;
use crate::error::{Error, Result};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list).post(create))
        .route("/sessions/spawn", post(spawn))
        .route("/sessions/{id}", get(get_one).patch(update).delete(delete))
        .route("/sessions/{id}/events", post(events))
        .route("/sessions/{id}/timeline", post(timeline))
        .route("/sessions/{id}/docs", get(docs).post(add_doc))
        .route("/sessions/{id}/tasks/{task_id}", post(link).delete(unlink))
        .route("/sessions/{id}/modal", post(modal))
        .route(
            "/sessions/{id}/modal/{modal_id}/actions",
            post(modal_action),
        )
        .route("/sessions/{id}/modal/{modal_id}/close", post(modal_close))
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Session>>> {
    let active = match q.get("active").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Error::validation(format!(
                "active must be 'true' or 'false', not '{other}'"
            )));
        }
    };
    let filter = SessionFilter {
        project_id: q.get("projectId").cloned(),
        task_id: q.get("taskId").cloned(),
        status: q.get("status").cloned(),
        active,
    };
    Ok(Json(s.domain.list_sessions(&filter)?))
}

async fn create(
    State(s): State<AppState>,
    Body(req): Body<CreateSession>,
) -> Result<(StatusCode, Json<Session>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.create_session(req).await?),
    ))
}

async fn spawn(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<SpawnRequest>,
) -> Result<(StatusCode, Json<SpawnResponse>)> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::validation("Idempotency-Key must be printable ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(s.domain.spawn_session(req, key).await?),
    ))
}

async fn get_one(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Session>> {
    Ok(Json(s.domain.get_session(&id)?))
}

async fn update(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<UpdateSession>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.update_session(id, req).await?))
}

async fn delete(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Deleted>> {
    Ok(Json(s.domain.delete_session(id).await?))
}

async fn events(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AppendSessionEvent>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.append_session_event(id, req).await?))
}

async fn timeline(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AppendTimeline>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.append_session_timeline(id, req).await?))
}

async fn docs(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Vec<DocEntry>>> {
    Ok(Json(s.domain.session_docs(&id)?))
}

async fn add_doc(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AddDoc>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.add_session_doc(id, req).await?))
}

async fn link(
    State(s): State<AppState>,
    IdPath((id, task_id)): IdPath<(String, String)>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.link_session_task(id, task_id).await?))
}

async fn unlink(
    State(s): State<AppState>,
    IdPath((id, task_id)): IdPath<(String, String)>,
) -> Result<Json<Session>> {
    Ok(Json(s.domain.unlink_session_task(id, task_id).await?))
}

async fn modal(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<ShowModal>,
) -> Result<Json<ModalShown>> {
    Ok(Json(s.domain.show_modal(id, req).await?))
}

async fn modal_action(
    State(s): State<AppState>,
    IdPath((id, modal_id)): IdPath<(String, String)>,
    Body(req): Body<ModalAction>,
) -> Result<Json<ModalAck>> {
    Ok(Json(s.domain.modal_action(id, modal_id, req).await?))
}

async fn modal_close(
    State(s): State<AppState>,
    IdPath((id, modal_id)): IdPath<(String, String)>,
) -> Result<Json<ModalAck>> {
    Ok(Json(s.domain.modal_close(id, modal_id).await?))
}
