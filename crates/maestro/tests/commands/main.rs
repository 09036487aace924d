//! The `maestro` command's integration tests, in one test binary (each module was a test file
//! of its own, and each linked everything again). nextest still runs every test in its own
//! process; a module's tests are selected with `-E 'test(/^run::/)'`. The real agent CLIs
//! ([`agents`]) run only in `cargo xtask test`'s step of their own.

mod support;

mod agents;
mod approve;
mod cli;
mod crash;
mod credentials;
mod hooks;
mod liveness;
mod redis_cluster;
mod run;
mod runner;
mod serve;
mod transcript;
mod tunnel;
