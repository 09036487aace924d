//! The server's integration tests, in one test binary: each module was a test file of its own,
//! and each of those linked the whole server again (thirty copies of the same code to compile
//! and link, the larger part of a cold `cargo xtask test`). nextest still runs every test in its
//! own process; a module's tests are selected with `-E 'test(/^push::/)'`.

mod common;

mod approvals;
mod catalog;
mod cf_access;
mod claims;
mod concurrency;
mod deadlines;
mod golden;
mod http;
mod import;
mod limits;
mod liveness;
mod mail;
mod openapi;
mod persistence;
mod projects;
mod push;
mod redis_round_trips;
mod review;
mod runners;
mod security;
mod session_appends;
mod sessions;
mod socketio;
mod spawn;
mod store;
mod tasks;
mod team_members;
mod terminal;
mod transcript;
mod web;
mod websocket;
