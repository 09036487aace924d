//! A session's changes, diffs and review comments (new in Maestro; see docs/review.md).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use maestro_protocol::{
    AddReviewComment, ChangeStats, Changes, ChangesReport, Deleted, ErrorBody, FileDiff,
    ReviewComment, ReviewSent, SendReview,
};
use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath, only};
use crate::error::{Error, Result};

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; changes, report))
        .routes(routes!(built_for; diff))
        .routes(routes!(built_for; comments, add_comment))
        .routes(routes!(built_for; delete_comment))
        .routes(routes!(built_for; send))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}/changes",
    tag = "review",
    summary = "What the session changed: branch, base, ahead/behind, changed files with +/−",
    description = "Read from the work tree on this server's machine, or, for a session on another machine, as its host last reported it (404 CHANGES_NOT_REPORTED until it has). Includes uncommitted and untracked files.",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Changes), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn changes(State(s): State<AppState>, IdPath(id): IdPath<String>) -> Result<Json<Changes>> {
    Ok(Json(s.domain.session_changes(id).await?))
}

#[utoipa::path(
    put,
    path = "/sessions/{id}/changes",
    tag = "review",
    summary = "A session's host reports its work tree: the summary and changed diffs (scope runner)",
    params(("id" = String, Path)),
    request_body = ChangesReport,
    security(("maestro" = ["runner"])),
    responses((status = 200, body = ChangeStats), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
)]
async fn report(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<ChangesReport>,
) -> Result<Json<ChangeStats>> {
    Ok(Json(s.domain.report_changes(id, req).await?))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}/diff",
    tag = "review",
    summary = "One changed file's diff, in hunks with line numbers",
    description = "Cut at 10,000 lines or 512 KiB (`truncated`, `note`); binary files and files over 8 MiB are named, not sent. A path outside the session's work tree is refused (400 PATH_OUTSIDE_WORK_TREE); a path that did not change is 404 NOT_CHANGED.",
    params(("id" = String, Path), ("path" = String, Query, description = "the file, relative to the work tree")),
    security(("maestro" = ["read"])),
    responses((status = 200, body = FileDiff), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn diff(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<FileDiff>> {
    only(&q, &["path"])?;
    let path = q
        .get("path")
        .cloned()
        .ok_or_else(|| Error::validation("path is required"))?;
    Ok(Json(s.domain.session_diff(id, path).await?))
}

#[utoipa::path(
    get,
    path = "/sessions/{id}/review/comments",
    tag = "review",
    summary = "The session's review comments, oldest first (sent ones carry sentAt)",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<ReviewComment>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn comments(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Vec<ReviewComment>>> {
    Ok(Json(s.domain.review_comments(&id)?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/review/comments",
    tag = "review",
    summary = "Comment on a line of the session's diff (scope respond)",
    params(("id" = String, Path)),
    request_body = AddReviewComment,
    security(("maestro" = ["respond"])),
    responses((status = 201, body = ReviewComment), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn add_comment(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AddReviewComment>,
) -> Result<(StatusCode, Json<ReviewComment>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.domain.add_review_comment(id, req).await?),
    ))
}

#[utoipa::path(
    delete,
    path = "/sessions/{id}/review/comments/{commentId}",
    tag = "review",
    summary = "Delete an unsent review comment (scope respond)",
    params(("id" = String, Path), ("commentId" = String, Path)),
    security(("maestro" = ["respond"])),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn delete_comment(
    State(s): State<AppState>,
    IdPath((id, comment_id)): IdPath<(String, String)>,
) -> Result<Json<Deleted>> {
    Ok(Json(s.domain.delete_review_comment(id, comment_id).await?))
}

#[utoipa::path(
    post,
    path = "/sessions/{id}/review/send",
    tag = "review",
    summary = "Send the unsent comments as one directive to the session (or approve: \"Looks good\") (scope respond)",
    params(("id" = String, Path)),
    request_body = SendReview,
    security(("maestro" = ["respond"])),
    responses((status = 200, body = ReviewSent), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
)]
async fn send(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<SendReview>,
) -> Result<Json<ReviewSent>> {
    Ok(Json(s.domain.send_review(id, req).await?))
}
