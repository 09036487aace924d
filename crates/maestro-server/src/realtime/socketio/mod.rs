//! Socket.IO namespaces `/ui` (the desktop app) and `/mobile` (the phone), over our own
//! Engine.IO transport ([`super::engine`]) under `/socket.io/` on the API's port.
//! `docs/realtime.md` is the protocol.
//!
//! How it is laid out:
//! - [`Realtime`] (here) is what `run` creates: the handler for `/socket.io/` requests, and
//!   [`Realtime::bridge`], the one task that feeds every socket (plus the heartbeat).
//! - `hub`: the [`Hub`] of live connections ([`Conn`]), which routes each Socket.IO packet
//!   and fans events out to the sockets.
//! - `handshake`: `connect` checks a handshake (origin allowlist, local trust — the one place
//!   the credential check will go —, the namespace's rules) and registers a `Conn`.
//! - `actions`: client events (`subscribe`, `mail:send`, …) are thin: parse, check the
//!   namespace's rules, call a [`Domain`] operation, ack `{ok: true, …}` or `{ok: false, error}`.
//! - `bridge`: the store's event stream to the hub; `replay`: what a client missed
//!   (handshake `lastSeq`, `events:replay`, `state:sync`); `codec`: the packets on the wire.
//!
//! Delivery: the bridge reads the store's event stream (filling any lag from the journal)
//! and offers each event to every connection. A connection that follows the event's scope
//! and wants it gets the event's frame — encoded once per namespace for all sockets — written
//! straight to its transport by the bridge itself ([`Session::send`]): no task is woken per
//! socket unless its kernel buffer is full. A connection that is still replaying the gap
//! before its handshake's `lastSeq` collects live events in a backlog instead, and sends them
//! after the replay, skipping what the replay already sent. Nothing is dropped silently: a
//! client that stops taking packets is disconnected and recovers with `lastSeq`.
//!
//! With several server instances (Redis backend), each instance's bridge sees every event once
//! through the store's bus and feeds its own sockets: no socket adapter is involved.
//!
//! [`Session::send`]: super::engine::Session::send

mod actions;
mod bridge;
mod codec;
mod handshake;
mod hub;
mod replay;
#[cfg(test)]
mod testing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::bridge::{Bridge, initial_heads};
use self::codec::disconnect_packet;
pub(super) use self::hub::Conn;
use self::hub::Hub;
use super::engine::{Engine, EngineConfig, Frame};
use crate::auth::Gate;
use crate::config::Config;
use crate::domain::Domain;

/// Namespace of the desktop app: every project.
pub const UI_NAMESPACE: &str = "/ui";
/// Namespace of the phone: one project, named in the handshake.
pub const MOBILE_NAMESPACE: &str = "/mobile";

/// How long shutdown waits for sockets to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The Socket.IO side of the server; cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    hub: Arc<Hub>,
    engine: Arc<Engine>,
}

impl Realtime {
    /// Builds the namespaces. Replays run on `tasks`; everything stops when `shutdown` is
    /// cancelled.
    pub fn new(
        domain: Domain,
        config: Arc<Config>,
        gate: Gate,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let engine_config = EngineConfig {
            ping_interval: Duration::from_millis(config.socketio_ping_interval_ms),
            ping_timeout: Duration::from_millis(config.socketio_ping_timeout_ms),
            max_payload: config.max_body_bytes,
            max_sessions: usize::try_from(config.max_socketio_sessions).unwrap_or(usize::MAX),
            max_sessions_per_address: usize::try_from(config.max_socketio_sessions_per_address)
                .unwrap_or(usize::MAX),
            connect_timeout: Some(Duration::from_millis(config.socketio_connect_timeout_ms)),
        };
        let hub = Arc::new(Hub::new(
            domain,
            config,
            gate,
            tasks.clone(),
            shutdown.clone(),
        ));
        let engine = Engine::new(engine_config, hub.clone(), tasks, shutdown);
        Self { hub, engine }
    }

    /// Answers a request under `/socket.io/` (polling, or the WebSocket upgrade).
    pub async fn serve(&self, req: Request<Body>, peer: Option<SocketAddr>) -> Response<Body> {
        self.engine.clone().serve(req, peer).await
    }

    /// Connected sockets, both namespaces.
    pub fn connections(&self) -> usize {
        self.hub.conns.lock().expect("hub lock").len()
    }

    /// The bridge from the store's event stream to the sockets, and the transport's heartbeat.
    /// It subscribes *now* (before the returned future is first polled), so nothing committed
    /// after this call is missed. The future runs until shutdown, then closes every socket.
    pub fn bridge(&self) -> impl Future<Output = ()> + Send + 'static {
        let hub = self.hub.clone();
        let engine = self.engine.clone();
        let rx = hub.domain.store.subscribe();
        let heads = initial_heads(&hub.domain);
        async move {
            let mut bridge = Bridge {
                hub: hub.clone(),
                last: heads,
            };
            tokio::join!(bridge.run(rx), engine.clone().heartbeat());
            engine.close_all(|session| {
                let sockets = session.sockets.lock().expect("sockets lock").clone();
                for conn in sockets {
                    session.send(&Frame::text(&disconnect_packet(conn.kind.namespace())));
                }
            });
            let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
            while engine.sessions() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Which namespace a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ui,
    Mobile,
}

impl Kind {
    fn namespace(self) -> &'static str {
        match self {
            Self::Ui => UI_NAMESPACE,
            Self::Mobile => MOBILE_NAMESPACE,
        }
    }

    fn of(namespace: &str) -> Option<Self> {
        match namespace {
            UI_NAMESPACE => Some(Self::Ui),
            MOBILE_NAMESPACE => Some(Self::Mobile),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}
