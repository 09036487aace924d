//! `/api/sessions/:id/terminal` (viewers) and `/api/sessions/:id/terminal/host` (the host):
//! the live terminal's WebSockets (`docs/runners.md`, "The terminal protocol"). The handlers
//! check what can be answered with an HTTP status before upgrading — the session exists, the
//! terminal limit — and hand the socket to [`crate::terminal`].
//!
//! Not in the OpenAPI document, like `/socket.io/`: a WebSocket has no operation to describe.

use axum::Router;
use axum::extract::{FromRequestParts, Path, Request, State, WebSocketUpgrade};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maestro_protocol::Scope;

use super::AppState;
use crate::auth::Principal;
use crate::auth::routes::Declared;
use crate::auth::trust::Need;
use crate::error::Error;
use crate::terminal::Access;

const VIEWER: &str = "/api/sessions/{id}/terminal";
const HOST: &str = "/api/sessions/{id}/terminal/host";

/// Watching needs `read` (typing is checked per message: `operate`); hosting is a runner's.
pub const DECLARED: &[Declared] = &[
    Declared {
        path: VIEWER,
        method: Method::GET,
        need: Need::Scope(Scope::Read),
    },
    Declared {
        path: HOST,
        method: Method::GET,
        need: Need::Scope(Scope::Runner),
    },
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route(VIEWER, axum::routing::get(viewer))
        .route(HOST, axum::routing::get(host))
}

/// What a viewer's WebSocket reads into before a message is parsed (tungstenite's default is
/// 128 KiB per connection, allocated at the upgrade). A viewer sends keystrokes and small JSON.
const VIEWER_READ_BUFFER: usize = 4 * 1024;
/// The same for a host, which streams output: a runner sends at most 16 KiB per message.
const HOST_READ_BUFFER: usize = 64 * 1024;

#[derive(Clone, Copy)]
enum Role {
    Viewer,
    Host,
}

async fn viewer(State(s): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    upgrade(s, id, req, Role::Viewer).await
}

async fn host(State(s): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    upgrade(s, id, req, Role::Host).await
}

async fn upgrade(s: AppState, id: String, req: Request, role: Role) -> Response {
    if let Err(e) = s.domain.get_session(&id) {
        return e.into_response();
    }
    // The gate admitted the request with a scope that covers the route.
    let principal = req.extensions().get::<Principal>().cloned();
    let access = Access {
        can_type: principal.as_ref().is_some_and(|p| p.allows(Scope::Operate)),
        credential: principal.and_then(|p| p.id),
    };
    if let Err(refused) = s.terminals.reserve(&id) {
        return Error::Coded {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "TOO_MANY_TERMINALS",
            message: refused.message(),
            details: None,
        }
        .into_response();
    }
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &s).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let max = s.config.max_body_bytes;
    let terminals = s.terminals.clone();
    let read_buffer = match role {
        // Keystrokes and small JSON: a larger message still fits, the buffer grows for it.
        Role::Viewer => VIEWER_READ_BUFFER,
        Role::Host => HOST_READ_BUFFER,
    };
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(read_buffer)
        // Each message is flushed as it is sent: no buffer to fill first.
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            match role {
                Role::Viewer => terminals.serve_viewer(socket, id, access).await,
                Role::Host => terminals.serve_host(socket, id, access).await,
            }
        })
}
