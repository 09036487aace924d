//! `/api/mail`. Strict like upstream: unknown body or query keys are rejected.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use maestro_protocol::{
    AckMail, ErrorBody, MailCursor, MailDeleted, MailMessage, SendMail, SentMail, WaitMail,
};
use serde_json::json;

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath, only};
use crate::domain::mail::{DEFAULT_WAIT_MS, InboxQuery, WaitQuery};
use crate::error::{Error, Result};

type Q = Query<HashMap<String, String>>;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; send))
        .routes(routes!(built_for; inbox))
        .routes(routes!(built_for; ack))
        .routes(routes!(built_for; wait, wait_and_ack))
        .routes(routes!(built_for; get_one, delete))
}

fn number<T: std::str::FromStr>(q: &HashMap<String, String>, key: &str) -> Result<Option<T>> {
    q.get(key)
        .map(|v| {
            v.parse().map_err(|_| Error::Validation {
                message: "Invalid query parameters".into(),
                details: Some(json!([{ "path": key, "message": "Expected a number" }])),
            })
        })
        .transpose()
}

fn flag(q: &HashMap<String, String>, key: &str) -> Result<bool> {
    match q.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(Error::Validation {
            message: "Invalid query parameters".into(),
            details: Some(json!([{ "path": key, "message": "Expected true or false" }])),
        }),
    }
}

#[utoipa::path(
    post,
    path = "/mail",
    tag = "mail",
    summary = "Send mail (direct, broadcast or to a team member)",
    request_body = SendMail,
    security(("maestro" = ["respond"])),
    responses((status = 201, body = SentMail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn send(
    State(s): State<AppState>,
    Body(req): Body<SendMail>,
) -> Result<(StatusCode, Json<SentMail>)> {
    Ok((StatusCode::CREATED, Json(s.domain.send_mail(req).await?)))
}

#[utoipa::path(
    get,
    path = "/mail/inbox/{id}",
    tag = "mail",
    summary = "A session's inbox",
    params(("id" = String, Path), ("projectId" = Option<String>, Query), ("type" = Option<String>, Query), ("since" = Option<String>, Query), ("unread" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<MailMessage>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn inbox(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Q,
) -> Result<Json<Vec<MailMessage>>> {
    only(&q, &["projectId", "type", "since", "unread"])?;
    let query = InboxQuery {
        project_id: q.get("projectId").cloned(),
        kind: q.get("type").cloned(),
        since: number(&q, "since")?,
        unread: flag(&q, "unread")?,
    };
    Ok(Json(s.domain.inbox(&id, &query)?))
}

/// A `GET` must not move the read cursor: any page can make the browser send one (an `<img>`
/// needs no CORS), so `ack=true` is refused and names the route that acknowledges.
fn refuse_ack_on_get(q: &HashMap<String, String>) -> Result<()> {
    if flag(q, "ack")? {
        return Err(Error::Validation {
            message: "GET never moves the read cursor: POST /api/mail/wait/:id \
                      {projectId?, timeout?} waits for unread mail and acknowledges it"
                .into(),
            details: Some(json!([{ "path": "ack", "message": "Use POST /api/mail/wait/:id" }])),
        });
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/mail/wait/{id}",
    tag = "mail",
    summary = "Long-poll for mail (never acknowledges: `ack=true` is 400, see the POST)",
    params(("id" = String, Path), ("projectId" = Option<String>, Query), ("timeout" = Option<String>, Query), ("since" = Option<String>, Query), ("ack" = Option<String>, Query)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = Vec<MailMessage>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn wait(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Query(q): Q,
) -> Result<Json<Vec<MailMessage>>> {
    only(&q, &["projectId", "timeout", "since", "ack"])?;
    refuse_ack_on_get(&q)?;
    let query = WaitQuery {
        project_id: q.get("projectId").cloned(),
        timeout_ms: number(&q, "timeout")?.unwrap_or(DEFAULT_WAIT_MS),
        since: number(&q, "since")?,
        ack: false,
    };
    Ok(Json(s.domain.wait_mail(&id, query).await?))
}

#[utoipa::path(
    post,
    path = "/mail/wait/{id}",
    tag = "mail",
    summary = "Long-poll for unread mail and move the read cursor past it (each message once)",
    params(("id" = String, Path)),
    request_body = WaitMail,
    security(("maestro" = ["respond"])),
    responses((status = 200, body = Vec<MailMessage>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn wait_and_ack(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<WaitMail>,
) -> Result<Json<Vec<MailMessage>>> {
    let query = WaitQuery {
        project_id: req.project_id,
        timeout_ms: req.timeout.unwrap_or(DEFAULT_WAIT_MS),
        since: None,
        ack: true,
    };
    Ok(Json(s.domain.wait_mail(&id, query).await?))
}

#[utoipa::path(
    post,
    path = "/mail/inbox/{id}/ack",
    tag = "mail",
    summary = "Move a session's read cursor",
    params(("id" = String, Path)),
    request_body = AckMail,
    security(("maestro" = ["respond"])),
    responses((status = 200, body = MailCursor), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn ack(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
    Body(req): Body<AckMail>,
) -> Result<Json<MailCursor>> {
    Ok(Json(s.domain.ack_mail(id, req).await?))
}

#[utoipa::path(
    get,
    path = "/mail/{id}",
    tag = "mail",
    summary = "Get a message",
    params(("id" = String, Path)),
    security(("maestro" = ["read"])),
    responses((status = 200, body = MailMessage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn get_one(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<MailMessage>> {
    Ok(Json(s.domain.get_mail(&id)?))
}

#[utoipa::path(
    delete,
    path = "/mail/{id}",
    tag = "mail",
    summary = "Delete a message",
    params(("id" = String, Path)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = MailDeleted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
)]
async fn delete(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<MailDeleted>> {
    Ok(Json(s.domain.delete_mail(id).await?))
}
