//! Wire types of the Maestro API.
//!
//! Everything that crosses the wire — entities, request bodies, event envelopes — lives here
//! and nowhere else, so the server, the typed client and the tests agree by construction.
//! Field names are camelCase and timestamps epoch milliseconds, as in the upstream API
//! (`docs/compatibility.md` lists where we deliberately differ).
//!
//! The crate does no I/O.

pub mod approvals;
pub mod auth;
pub mod catalog;
pub mod entities;
pub mod events;
pub mod ids;
pub mod liveness;
pub mod mail;
pub mod push;
pub mod realtime;
pub mod requests;
pub mod review;
pub mod runner;
pub mod spawn;
pub mod team;
pub mod transcript;

pub use approvals::*;
pub use auth::*;
pub use catalog::*;
pub use entities::*;
pub use events::*;
pub use liveness::*;
pub use mail::*;
pub use push::*;
pub use realtime::*;
pub use requests::*;
pub use review::*;
pub use runner::*;
pub use spawn::*;
pub use team::*;
pub use transcript::*;

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub type Millis = i64;
