//! Storage backends, one implementation of every port each.
//!
//! - [`local`]: the default; one redb file in `DATA_DIR`, in-process event bus.

pub mod local;
mod overlay;
pub mod redis;
