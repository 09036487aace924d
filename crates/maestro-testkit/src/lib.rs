//! Helpers shared by Maestro's test suites. Not part of the product.
//!
//! - [`redis`]: real `redis-server` processes that tests can kill and restart;
//! - [`cloudflared`]: the fake `cloudflared` that tunnel tests put on `PATH`;
//! - [`process`]: `maestro serve` as a child process.

pub mod cloudflared;
pub mod process;
pub mod redis;
