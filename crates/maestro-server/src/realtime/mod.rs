//! Real-time delivery of domain events to clients.
//!
//! - [`legacy`]: upstream's raw WebSocket protocol on any path but `/socket.io/`;
//! - [`socketio`]: Socket.IO namespaces `/ui` and `/mobile`, with replay of missed events.

pub mod legacy;
pub mod socketio;
