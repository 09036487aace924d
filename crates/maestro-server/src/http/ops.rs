//! Operational endpoints at the root: `/health`, `/ready`, `/ws-status`, `/metrics`.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use maestro_protocol::{Health, Ready};
use serde_json::{Value, json};

use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::AppState;
use crate::util::now_ms;

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; health))
        .routes(routes!(built_for; ready))
        .routes(routes!(built_for; ws_status))
        .routes(routes!(built_for; metrics))
}

/// Liveness: the process answers. Same shape as upstream.
#[utoipa::path(get, path = "/health", tag = "operations", security(()), responses((status = 200, body = Health)))]
async fn health(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        timestamp: now_ms(),
        uptime: s.started.elapsed().as_secs_f64(),
    })
}

/// Readiness: the backend can serve; 503 with `degraded` when it cannot.
#[utoipa::path(get, path = "/ready", tag = "operations", security(("maestro" = ["read"])), responses((status = 200, body = Ready), (status = 503, body = Ready)))]
async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Ready>) {
    let ok = s.domain.store.ready().await;
    let body = Ready {
        status: if ok { "ready" } else { "degraded" }.into(),
        backend: s.domain.store.backend().into(),
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Open legacy WebSocket connections, in upstream's shape.
#[utoipa::path(get, path = "/ws-status", tag = "operations", security(("maestro" = ["read"])), responses((status = 200, body = Object)))]
async fn ws_status(State(s): State<AppState>) -> Json<Value> {
    let n = s.ws_clients.load(Ordering::Relaxed);
    let clients: Vec<Value> = (0..n)
        .map(|_| json!({ "readyState": 1, "readyStateText": "OPEN" }))
        .collect();
    Json(json!({ "connectedClients": n, "clients": clients }))
}

/// Prometheus text exposition of the server's gauges.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("maestro" = ["read"])), responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(s): State<AppState>) -> impl axum::response::IntoResponse {
    let waiters = s.domain.mail_metrics.waiters.load(Ordering::Relaxed);
    let approval_waiters = s.domain.approval_waiters.load(Ordering::Relaxed);
    let ws = s.ws_clients.load(Ordering::Relaxed);
    let sio = s.socketio.connections();
    let body = format!(
        "# HELP maestro_uptime_seconds Seconds since the server started.\n\
         # TYPE maestro_uptime_seconds gauge\n\
         maestro_uptime_seconds {:.3}\n\
         # HELP maestro_mail_waiters Requests parked in /api/mail/wait.\n\
         # TYPE maestro_mail_waiters gauge\n\
         maestro_mail_waiters {waiters}\n\
         # HELP maestro_approval_waiters Requests parked in GET /api/approvals/:id/wait.\n\
         # TYPE maestro_approval_waiters gauge\n\
         maestro_approval_waiters {approval_waiters}\n\
         # HELP maestro_ws_clients Open legacy WebSocket connections.\n\
         # TYPE maestro_ws_clients gauge\n\
         maestro_ws_clients {ws}\n\
         # HELP maestro_socketio_clients Connected Socket.IO sockets (/ui and /mobile).\n\
         # TYPE maestro_socketio_clients gauge\n\
         maestro_socketio_clients {sio}\n{}{}{}{}",
        s.started.elapsed().as_secs_f64(),
        s.gate.metrics().render(),
        s.push.metrics().render(),
        s.terminals.render_metrics(),
        s.domain.store.render_metrics(),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
