//! Upstream's raw WebSocket protocol, for the existing desktop app and CLI.
//!
//! Frames are upstream's `{type, event, data, timestamp}` plus `seq` and `projectId`. Clients
//! may send `ping`, `subscribe {sessionIds}` and `unsubscribe`; anything else is ignored.
//!
//! A subscribed connection receives every event that is not about a session, and the events
//! about the sessions it subscribed to. Which session an event is about is decided by the
//! domain when it emits the event (upstream guessed from the payload and mistook tasks for
//! sessions, so subscribers lost `task:*` events).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maestro_protocol::EventRecord;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Principal;
use crate::config::Config;
use crate::domain::Domain;
use crate::util::now_ms;
use maestro_protocol::{CREDENTIAL_REVOKED, Scope};

/// What the legacy WebSocket needs of the server (the HTTP layer builds it from its own state;
/// this module does not depend on `http`).
#[derive(Clone)]
pub struct LegacyState {
    pub domain: Domain,
    pub config: Arc<Config>,
    /// Open connections, for `/ws-status`.
    pub clients: Arc<std::sync::atomic::AtomicUsize>,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Routes WebSocket upgrades on any path except `/socket.io/` and the live terminal's to the
/// legacy protocol.
pub async fn upgrade_middleware(
    State(state): State<LegacyState>,
    req: Request,
    next: Next,
) -> Response {
    if !is_websocket_upgrade(&req)
        || req.uri().path().starts_with("/socket.io")
        || crate::terminal::is_terminal_path(req.uri().path())
    {
        return next.run(req).await;
    }
    // The auth gate (an outer layer) admitted this request: it carries who it acts for.
    let principal = req.extensions().get::<Principal>().cloned();
    // A browser or web view (the desktop app) sends an Origin; the CLI (`maestro run`,
    // `maestro watch`) does not. Desktop apps launch the spawns they hear about.
    let desktop = req.headers().contains_key(header::ORIGIN);
    let (mut parts, _) = req.into_parts();
    match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        // Client messages are tiny (`ping`, `subscribe`); one as large as an HTTP body is plenty.
        Ok(ws) => ws
            .max_message_size(state.config.max_body_bytes)
            .max_frame_size(state.config.max_body_bytes)
            .on_upgrade(move |socket| serve(socket, state, principal, desktop)),
        Err(rejection) => rejection.into_response(),
    }
}

fn is_websocket_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Whether a connection with `filter` should receive `event`.
pub fn wants(filter: Option<&HashSet<String>>, event: &EventRecord) -> bool {
    match (filter, &event.session_id) {
        (None, _) | (_, None) => true,
        (Some(set), Some(id)) => set.contains(id),
    }
}

/// The frame for an event, serialised once per event and shared by all connections.
pub fn frame(event: &EventRecord) -> Utf8Bytes {
    serde_json::to_string(&event.envelope())
        .expect("envelopes serialise")
        .into()
}

/// Counts a connected desktop app for as long as it is held.
struct DesktopGuard(Arc<std::sync::atomic::AtomicI64>);

impl DesktopGuard {
    fn new(count: Arc<std::sync::atomic::AtomicI64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for DesktopGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct ClientGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(
    mut socket: WebSocket,
    state: LegacyState,
    principal: Option<Principal>,
    desktop: bool,
) {
    let credential = principal.as_ref().and_then(|p| p.id.clone());
    let may_beat = principal.as_ref().is_some_and(|p| p.allows(Scope::Operate));
    state.clients.fetch_add(1, Ordering::Relaxed);
    let _guard = ClientGuard(state.clients.clone());
    let _desktop = desktop.then(|| DesktopGuard::new(state.domain.desktop_clients.clone()));
    let mut events = state.domain.store.subscribe();
    let mut filter: Option<HashSet<String>> = None;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { return };
                let reply = match msg {
                    Message::Text(text) => match heartbeat_of(&text) {
                        Some(session_id) if may_beat => {
                            Some(heartbeat_reply(&state, session_id).await)
                        }
                        Some(_) => Some(json!({
                            "type": "heartbeat",
                            "ok": false,
                            "error": { "code": "FORBIDDEN", "message": "heartbeats need scope 'operate'" },
                            "timestamp": now_ms(),
                        })),
                        None => handle_client_message(&text, &mut filter),
                    },
                    Message::Close(_) => return,
                    _ => None,
                };
                if let Some(reply) = reply
                    && socket.send(Message::Text(reply.to_string().into())).await.is_err()
                {
                    return;
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    if event.event == CREDENTIAL_REVOKED
                        && credential.is_some()
                        && event.data.get("id").and_then(Value::as_str) == credential.as_deref()
                    {
                        tracing::info!(target: "maestro::audit", event = "socket_closed_on_revocation", credential.id = ?credential);
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                    if wants(filter.as_ref(), &event)
                        && socket.send(Message::Text(frame(&event))).await.is_err()
                    {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    // The client cannot keep up; it reconnects and refetches, as upstream
                    // clients do after any disconnect.
                    tracing::warn!(missed = n, "legacy websocket client lagged; closing");
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// The session of a `{"type":"heartbeat","sessionId":…}` message. Upstream clients send
/// `heartbeat` without a session id; those stay ignored.
fn heartbeat_of(text: &str) -> Option<String> {
    let msg: Value = serde_json::from_str(text).ok()?;
    (msg.get("type")?.as_str()? == "heartbeat")
        .then(|| msg.get("sessionId")?.as_str().map(str::to_owned))
        .flatten()
}

async fn heartbeat_reply(state: &LegacyState, session_id: String) -> Value {
    match state.domain.heartbeat(session_id, Default::default()).await {
        Ok(p) => json!({ "type": "heartbeat", "ok": true, "presence": p, "timestamp": now_ms() }),
        Err(e) => json!({
            "type": "heartbeat",
            "ok": false,
            "error": { "code": e.code(), "message": e.body().message },
            "timestamp": now_ms(),
        }),
    }
}

/// Applies a client message; returns the reply to send, if any.
fn handle_client_message(text: &str, filter: &mut Option<HashSet<String>>) -> Option<Value> {
    let msg: Value = serde_json::from_str(text).ok()?;
    match msg.get("type")?.as_str()? {
        "ping" => Some(json!({ "type": "pong", "timestamp": now_ms() })),
        "subscribe" => {
            let ids: Vec<String> = msg
                .get("sessionIds")?
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            *filter = Some(ids.iter().cloned().collect());
            Some(json!({ "type": "subscribed", "sessionIds": ids, "timestamp": now_ms() }))
        }
        "unsubscribe" => {
            *filter = None;
            Some(json!({ "type": "unsubscribed", "timestamp": now_ms() }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(session: Option<&str>) -> EventRecord {
        EventRecord {
            scope: "p".into(),
            seq: 1,
            event: "x".into(),
            data: json!({}),
            timestamp: 0,
            session_id: session.map(str::to_owned),
        }
    }

    #[test]
    fn filter_rules() {
        let set: HashSet<String> = ["s1".to_owned()].into();
        assert!(wants(None, &ev(Some("s2"))));
        assert!(wants(Some(&set), &ev(None)));
        assert!(wants(Some(&set), &ev(Some("s1"))));
        assert!(!wants(Some(&set), &ev(Some("s2"))));
    }

    #[test]
    fn client_messages() {
        let mut f = None;
        assert_eq!(handle_client_message("not json", &mut f), None);
        assert_eq!(
            handle_client_message(r#"{"type":"heartbeat"}"#, &mut f),
            None
        );
        let r = handle_client_message(r#"{"type":"subscribe","sessionIds":["a",1,"b"]}"#, &mut f)
            .unwrap();
        assert_eq!(r["sessionIds"], json!(["a", "b"]));
        assert_eq!(f.as_ref().unwrap().len(), 2);
        let r = handle_client_message(r#"{"type":"unsubscribe"}"#, &mut f).unwrap();
        assert_eq!(r["type"], "unsubscribed");
        assert!(f.is_none());
        assert_eq!(
            handle_client_message(r#"{"type":"ping"}"#, &mut f).unwrap()["type"],
            "pong"
        );
    }
}
