//! The Maestro coordination server as a library.
//!
//! [`run`] takes a configuration, an already-bound listener and a shutdown token, so the binary
//! and the tests start the same server (tests bind port 0).
//!
//! Layout:
//! - [`domain`]: business rules, one module per feature;
//! - [`ports`]: the traits a storage backend implements; [`backends`]: the implementations;
//! - [`http`]: the REST API; [`realtime`]: event delivery over WebSockets;
//! - [`terminal`]: agents' live terminals, streamed from their hosts to viewers;
//! - [`review`]: reading a session's work tree (changes, diffs), shared with the CLI.
//! - [`transcript`]: agents' own transcript files, parsed into a bounded structured view.

pub mod auth;
pub mod backends;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod import;
pub mod ports;
pub mod push;
pub mod queue;
pub mod realtime;
pub mod review;
pub mod terminal;
pub mod transcript;
pub mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::backends::local::LocalStore;
use crate::domain::{Domain, ServerInfo};
use crate::http::AppState;
use crate::realtime::socketio::Realtime;

/// Serves until `shutdown` is cancelled, then stops accepting, closes sockets, waits for
/// in-flight requests (bounded by `shutdown_grace_secs`) and flushes the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = config.expand_paths();
    let addr = listener.local_addr()?;
    let domain = open(&config, server_url(&config, addr))?;
    let store = domain.store.clone();
    write_server_url(&config, addr).await?;
    let config_arc = Arc::new(config.clone());
    // Background work (the Socket.IO bridge and per-socket writers) is owned here: stopped by
    // `shutdown`, awaited below.
    let tasks = TaskTracker::new();
    let http::Api { routes, scopes } = http::Api::build().map_err(anyhow::Error::msg)?;
    let gate = auth::Gate::new(config_arc.clone(), domain.clone(), scopes);
    if let Err(e) = auth::credentials::check_hash_key(&domain, &config.hash_key_path()).await {
        // Refusing to start: let the next start (with the right key) open the database.
        store.close().await;
        return Err(anyhow::Error::new(e).context("checking the hash key"));
    }
    let owner_token = auth::credentials::rotate_owner_token(&domain, &config.data_dir)
        .await
        .context("writing the owner token")?;
    gate.set_owner_token(owner_token);
    let socketio = Realtime::new(
        domain.clone(),
        config_arc.clone(),
        gate.clone(),
        tasks.clone(),
        shutdown.clone(),
    );
    tasks.spawn(socketio.bridge());
    tasks.spawn(domain.clone().run_sweeper(shutdown.clone()));
    let push = push::Push::start(domain.clone(), config_arc.clone())
        .await
        .context("loading the Web Push key")?;
    tasks.spawn(push.clone().run(shutdown.clone()));
    let relay: Arc<dyn ports::Relay> = match config.redis() {
        Some(url) => Arc::new(
            backends::redis::RedisRelay::start(
                url,
                &config.redis_key_prefix,
                &tasks,
                shutdown.clone(),
            )
            .context("setting up the Redis relay")?,
        ),
        None => Arc::new(backends::relay::LocalRelay::default()),
    };
    let terminals = terminal::Terminals::new(
        config.terminal_scrollback_bytes,
        relay,
        tasks.clone(),
        shutdown.clone(),
    );
    tasks.spawn(terminals.clone().run(store.clone(), shutdown.clone()));
    let state = AppState {
        domain,
        config: config_arc,
        started: Instant::now(),
        ws_clients: Arc::new(AtomicUsize::new(0)),
        shutdown: shutdown.clone(),
        socketio,
        gate,
        push,
        terminals,
    };
    let app = http::router(state, routes);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), backend = store.backend(), "maestro listening");
    if !addr.ip().is_loopback() {
        tracing::info!(
            %addr,
            "listening beyond loopback: requests from other machines need a credential \
             (maestro pair, maestro token create) and a Host this server answers to \
             (EXTERNAL_URL, ALLOWED_HOSTS)"
        );
    }

    let limits = ConnectionLimits::new(&config);
    tracing::info!(
        max_connections = limits.max_connections,
        kept_for_this_machine = limits.reserved_for_local,
        per_address = limits.per_address.limit(),
        open_files_limit = ?open_files_limit(),
        source = if config.max_connections.is_some() { "MAX_CONNECTIONS" } else { "open-files limit" },
        "connection cap"
    );
    let server = tokio::spawn(serve_http(listener, app, limits, shutdown.clone()));
    shutdown.cancelled().await;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    match tokio::time::timeout_at(deadline, server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!(
            ?grace,
            "connections still open after the grace period; closing"
        ),
    }
    tasks.close();
    if tokio::time::timeout_at(deadline, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "background tasks still running after the grace period"
        );
    }
    store.close().await;
    tracing::info!("maestro stopped");
    Ok(())
}

/// Serves HTTP/1.1 (with upgrades) on `listener` until `shutdown`; then stops accepting, lets
/// each connection finish its request in flight, and returns when all have closed.
///
/// Why not `axum::serve`: it hands connections to hyper-util's auto-detecting builder, which
/// wraps each in a private type, so an upgraded connection cannot be turned back into its
/// `TcpStream`. The Socket.IO transport writes events straight to the `TcpStream` of each
/// WebSocket (see `realtime::engine`), which needs exactly that.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let connections = TaskTracker::new();
    // One permit per open connection (mini-redis's model): at the cap, accepting waits and new
    // clients queue in the kernel's backlog instead of exhausting file descriptors.
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the like: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A connection from elsewhere must leave the reserve to this machine (the owner's CLI,
        // the desktop app, the tunnel) and stay within its address's share; else it is closed
        // at once rather than queued, so the backlog holds nobody else up.
        let hold = match limits.admit(peer.ip(), permits.available_permits()) {
            Ok(hold) => hold,
            Err(why) => {
                tracing::debug!(%peer, why, "connection refused");
                continue;
            }
        };
        // Small frames (events, acks) go out at once instead of waiting on Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            // Held for the connection's life, upgraded WebSockets included.
            let _permit = permit;
            let _hold = hold;
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req)
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::trace!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Bounds on what clients can hold open.
#[derive(Debug, Clone)]
struct ConnectionLimits {
    max_connections: usize,
    /// Connections only peers on this machine may use.
    reserved_for_local: usize,
    /// Connections per peer address other than this machine's.
    per_address: auth::per_address::PerAddress,
    header_read_timeout: Duration,
}

impl ConnectionLimits {
    fn new(config: &Config) -> Self {
        let max = config
            .max_connections
            .unwrap_or_else(|| connections_for(open_files_limit()));
        let max_connections = usize::try_from(max).unwrap_or(usize::MAX);
        Self {
            max_connections,
            reserved_for_local: max_connections / 8,
            per_address: auth::per_address::PerAddress::new(
                usize::try_from(config.max_connections_per_address).unwrap_or(usize::MAX),
            ),
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
        }
    }
}

impl ConnectionLimits {
    /// Whether a connection from `peer` is served, with `available` connections left besides
    /// its own: `Ok` with its share of its address (none for a peer on this machine, which
    /// the reserve is for), or why not.
    fn admit(
        &self,
        peer: std::net::IpAddr,
        available: usize,
    ) -> Result<Option<auth::per_address::Hold>, &'static str> {
        if peer.is_loopback() {
            return Ok(None);
        }
        if available < self.reserved_for_local {
            return Err("the rest is kept for this machine");
        }
        self.per_address
            .try_hold(peer)
            .map(Some)
            .ok_or("its address holds its share")
    }
}

/// The default connection cap for an open-files limit: three quarters of it, leaving the
/// rest to the database, Redis connections, agents' terminals and files being written; at
/// least 16 (a limit that low leaves little to share anyway).
fn connections_for(open_files: Option<u64>) -> u64 {
    match open_files {
        Some(n) => (n / 4 * 3).max(16),
        // No limit reported (unlimited, or not a Unix): the historical default.
        None => 20_000,
    }
}

/// The process's open-files limit (`RLIMIT_NOFILE`, soft), if it has one.
fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Opens the configured backend and the domain on top of it, without serving anything (used
/// by `run` and by offline commands such as `maestro import`). `config` must have its paths
/// expanded.
pub fn open(config: &Config, server_url: String) -> anyhow::Result<Domain> {
    let store: Arc<dyn ports::Store> = match config.redis() {
        Some(url) => Arc::new(
            backends::redis::RedisStore::open(
                url,
                &config.redis_key_prefix,
                config.journal_capacity,
            )
            .context("setting up the Redis backend")?,
        ),
        None => Arc::new(
            LocalStore::open(&config.data_dir, config.journal_capacity).with_context(|| {
                format!(
                    "opening the database in {} (is another maestro server using it?)",
                    config.data_dir.display()
                )
            })?,
        ),
    };
    util::files::create_private_dir(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let key_path = config.hash_key_path();
    let hash_key = util::hash::HashKey::load_or_create(&key_path)
        .with_context(|| format!("reading or making the hash key {}", key_path.display()))?;
    Ok(Domain::new(
        store,
        ServerInfo {
            hostname: util::hostname(),
            platform: util::platform().into(),
            data_dir: config.data_dir.clone(),
            skills_dir: config.skills_dir.clone(),
            session_dir: config.session_dir.clone(),
            server_url,
            liveness: domain::liveness::LivenessConfig {
                ttl_ms: config.heartbeat_ttl_ms.max(100),
                grace_ms: config.heartbeat_grace_ms,
                stall_after_ms: config.stall_after_ms.max(1),
                sweep_interval_ms: config.sweep_interval_ms.clamp(10, 60_000),
            },
            machine_id: config.machine_id.clone().unwrap_or_else(util::machine_id),
            spawn_launcher: config.spawn_launcher.clone(),
            stop_grace_ms: config.stop_grace_ms.clamp(10, 60_000),
            long_poll_max_ms: config.long_poll_max_ms,
        },
        hash_key,
    ))
}

/// The URL agents use: `SERVER_URL`, or `http://localhost:<bound port>`.
fn server_url(config: &Config, addr: SocketAddr) -> String {
    config
        .server_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{}", addr.port()))
}

/// Writes `$DATA_DIR/server-url` for CLI discovery.
async fn write_server_url(config: &Config, addr: SocketAddr) -> anyhow::Result<()> {
    let url = server_url(config, addr);
    let path = config.data_dir.join("server-url");
    util::files::write_atomic_async(path, url.into_bytes(), util::files::PRIVATE_FILE).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_leave_the_reserve_to_this_machine_and_hold_a_share_each() {
        let mut config = Config::for_dir(std::path::Path::new("/nonexistent"));
        config.max_connections = Some(80);
        config.max_connections_per_address = 2;
        let limits = ConnectionLimits::new(&config);
        assert_eq!(limits.reserved_for_local, 10);
        let stranger: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let other: std::net::IpAddr = "198.51.100.1".parse().unwrap();
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let first = limits.admit(stranger, 50).unwrap().expect("a share");
        let _second = limits.admit(stranger, 49).unwrap().expect("a share");
        assert!(limits.admit(stranger, 48).is_err(), "its share is used");
        assert!(limits.admit(other, 48).unwrap().is_some());
        drop(first);
        assert!(limits.admit(stranger, 47).unwrap().is_some(), "given back");
        // Only this machine gets the last connections.
        assert!(limits.admit(other, 9).is_err());
        assert!(limits.admit(local, 9).unwrap().is_none());
        assert!(limits.admit(local, 0).unwrap().is_none());
    }

    #[test]
    fn the_connection_cap_follows_the_open_files_limit() {
        assert_eq!(connections_for(Some(1024)), 768);
        assert_eq!(connections_for(Some(1_048_576)), 786_432);
        assert_eq!(connections_for(Some(8)), 16);
        assert_eq!(connections_for(None), 20_000);
    }
}
