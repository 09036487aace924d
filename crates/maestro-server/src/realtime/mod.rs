//! Real-time delivery of domain events to clients.
//!
//! - [`legacy`]: upstream's raw WebSocket protocol on any path but `/socket.io/`;
//! - [`socketio`]: Socket.IO namespaces `/ui` and `/mobile`, with replay of missed events,
//!   over [`engine`] (Engine.IO v4: long-polling, WebSocket, upgrade, heartbeat), whose
//!   WebSocket framing is [`ws`].

pub mod engine;
pub mod legacy;
pub mod socketio;
pub mod ws;
