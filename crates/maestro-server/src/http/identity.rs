//! `POST /api/auth/identity`: the server proves it holds this start's owner token, so the CLI
//! and `maestro tunnel` send that token only to the server that wrote it, never to whatever
//! else answers on the configured port (see docs/security.md).

use axum::Json;
use axum::extract::State;
use maestro_protocol::{ErrorBody, IdentityChallenge, IdentityProof};
use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body};
use crate::error::{Error, Result};

/// Shortest and longest nonce a client may send.
const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=128;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(built_for; identity))
}

#[utoipa::path(
    post,
    path = "/auth/identity",
    tag = "auth",
    summary = "Prove this is the server whose owner token is in its DATA_DIR",
    description = "Answers HMAC-SHA256(owner token, label + nonce). A client that can read the owner token checks the proof before it sends the token; an impostor on the port cannot compute it, and the proof reveals nothing of the token.",
    request_body = IdentityChallenge,
    security(()),
    responses((status = 200, body = IdentityProof), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)),
)]
async fn identity(
    State(s): State<AppState>,
    Body(req): Body<IdentityChallenge>,
) -> Result<Json<IdentityProof>> {
    if !NONCE_LEN.contains(&req.nonce.len()) {
        return Err(Error::validation(format!(
            "nonce must be {} to {} characters",
            NONCE_LEN.start(),
            NONCE_LEN.end()
        )));
    }
    let proof = s
        .gate
        .identity_proof(&req.nonce)
        .ok_or_else(|| Error::Unavailable("the owner token is not written yet".into()))?;
    Ok(Json(IdentityProof { proof }))
}
