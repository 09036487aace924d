//! Storage backends, one implementation of every port each.
//!
//! - [`local`]: the default; one redb file in `DATA_DIR`, in-process event bus.
//! - [`relay`]: the in-process relay of best-effort messages (Redis has its own).

pub mod local;
mod overlay;
pub mod redis;
pub mod relay;
