//! `/api/sessions/:id/transcript`: a session's transcript, uploaded by the agent's host and
//! paged by the phone (new in Maestro; see docs/runners.md, "Transcripts").

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use maestro_protocol::{ErrorBody, TranscriptPage, TranscriptUpload};
use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath, number, only};
use crate::domain::transcript::Window;
use crate::error::{Error, Result};

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(built_for; page, upload))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}/transcript",
    tag = "sessions",
    summary = "One page of a session's transcript, oldest first",
    description = "`after=N`: the entries after seq N; `before=N`: the newest entries before seq N; neither: the newest entries. `limit` defaults to 100 (at most 500; 0 answers only the totals and the source).",
    params(
        ("id" = String, Path),
        ("after" = Option<u64>, Query, description = "seq to read after"),
        ("before" = Option<u64>, Query, description = "seq to read back from"),
        ("limit" = Option<u64>, Query, description = "entries, 0-500 (default 100)"),
    ),
    security(("maestro" = ["read"])),
    responses((status = 200, body = TranscriptPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn page(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<TranscriptPage>> {
    only(&q, &["after", "before", "limit"])?;
    let window = match (number(&q, "after")?, number(&q, "before")?) {
        (Some(_), Some(_)) => return Err(Error::validation("give after or before, not both")),
        (Some(after), None) => Window::After(after),
        (None, Some(before)) => Window::Before(before),
        (None, None) => Window::Tail,
    };
    Ok(Json(s.domain.transcript_page(
        &id,
        window,
        number(&q, "limit")?,
    )?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/transcript",
    tag = "sessions",
    summary = "Add entries the agent's host read from its transcript file (scope runner)",
    description = "A batch that ends at or before what is stored of the same file is a retry and changes nothing. Answers the totals and the source (no entries).",
    params(("id" = String, Path)),
    request_body = TranscriptUpload,
    security(("maestro" = ["runner"])),
    responses((status = 200, body = TranscriptPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
)]
async fn upload(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<TranscriptUpload>,
) -> Result<Json<TranscriptPage>> {
    Ok(Json(s.domain.append_transcript(id, req).await?))
}
