//! Real-time delivery of domain events to clients.
//!
//! - [`legacy`]: upstream's raw WebSocket protocol on any path but `/socket.io/`.

pub mod legacy;
