//! The handshake of a namespace (`0<ns>,<auth>`): the origin allowlist, the credential check,
//! the namespace's rules; then the connection is registered and replays its `lastSeq` gap.

use std::sync::Arc;

use maestro_protocol::SocketAuth;
use serde_json::Value;

use super::Kind;
use super::codec::{connect_error_packet, connect_packet, parse};
use super::hub::Hub;
use super::replay::replay_gap;
use crate::auth::{Principal, Refusal};
use crate::domain::{Domain, check_id};
use crate::error::{Error, Result};
use crate::realtime::engine::{Frame, Session};

impl Hub {
    /// `0<ns>,<auth>`: the handshake of a namespace.
    pub(super) fn connect(&self, session: &Arc<Session>, ns: &str, auth: &str) {
        let Some(kind) = Kind::of(ns) else {
            session.send(&Frame::text(&connect_error_packet(ns, "Invalid namespace")));
            return;
        };
        let existing = session
            .sockets
            .lock()
            .expect("sockets lock")
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.sid.clone());
        if let Some(sid) = existing {
            session.send(&Frame::text(&connect_packet(ns, &sid)));
            return;
        }
        let (handshake, principal) = match self.authorize(session, kind, auth) {
            Ok(h) => h,
            Err(message) => {
                session.send(&Frame::text(&connect_error_packet(ns, &message)));
                return;
            }
        };
        // Registered before the replay reads the journal: no event falls between the two.
        let conn = self.register(session, kind, handshake.project_id.clone(), principal);
        if session.is_closed() {
            // Closed while the handshake ran: its `on_close` may have missed this socket.
            self.remove(&conn);
            return;
        }
        session.mark_joined();
        session.send(&Frame::text(&connect_packet(ns, &conn.sid)));
        tracing::debug!(socket.id = %conn.sid, ns, project = ?conn.project, last_seq = handshake.last_seq, "socket.io client connected");
        match (handshake.last_seq, conn.project.clone()) {
            (Some(after), Some(project)) => {
                let store = self.domain.store.clone();
                let domain = self.domain.clone();
                self.tasks.spawn(async move {
                    replay_gap(&domain, &*store, &conn, &project, after).await;
                    conn.go_live();
                });
            }
            _ => conn.go_live(),
        }
    }

    /// The handshake's checks (see docs/realtime.md): a refusal is the `connect_error`
    /// message, `"<CODE>: <text>"`.
    fn authorize(
        &self,
        session: &Session,
        kind: Kind,
        auth: &str,
    ) -> std::result::Result<(SocketAuth, Principal), String> {
        let headers = session.headers();
        // The gate checked the Origin of the request that opened the connection; checked again
        // here, so no path to a namespace skips it.
        if let Err(refusal) = crate::auth::check_origin(headers, &self.config) {
            tracing::warn!(ns = kind.namespace(), "socket.io origin refused");
            self.gate
                .audit_refusal(&refusal, session.peer(), headers, kind.namespace());
            return Err(refuse_auth(&refusal));
        }
        let auth = if auth.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str::<Value>(auth)
                .map_err(|e| Error::validation(format!("Invalid auth: {e}")))
        };
        let auth = auth.and_then(parse::<SocketAuth>).map_err(|e| refuse(&e))?;
        let principal = self
            .gate
            .admit_socket(
                session.principal(),
                auth.token.as_deref(),
                session.peer(),
                headers,
            )
            .map_err(|r| refuse_auth(&r))?;
        check_handshake(&self.domain, kind, auth)
            .map(|a| (a, principal))
            .map_err(|e| refuse(&e))
    }
}

/// A rejected handshake: the client's `connect_error` has `message: "<CODE>: <message>"`.
fn refuse(e: &Error) -> String {
    format!("{}: {}", e.code(), e.body().message)
}

/// A refused handshake's `connect_error` message, `"<CODE>: <text>"` like every other.
fn refuse_auth(r: &Refusal) -> String {
    format!("{}: {}", r.code(), r.message())
}

/// The namespace's rules for the handshake.
fn check_handshake(domain: &Domain, kind: Kind, auth: SocketAuth) -> Result<SocketAuth> {
    match (&auth.project_id, kind) {
        (Some(p), _) => {
            check_id("projectId", p)?;
            domain.get_project(p)?;
        }
        (None, Kind::Mobile) => {
            return Err(Error::validation("projectId is required on /mobile"));
        }
        (None, Kind::Ui) => {
            if auth.last_seq.is_some() {
                return Err(Error::validation(
                    "lastSeq counts within a project: pass projectId with it",
                ));
            }
        }
    }
    Ok(auth)
}
