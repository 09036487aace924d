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
    let gate = auth::Gate::new(config_arc.clone(), domain.clone());
    auth::credentials::rotate_owner_token(&domain, &config.data_dir)
        .await
        .context("writing the owner token")?;
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
    let app = http::router(state);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), backend = store.backend(), "maestro listening");
    if !addr.ip().is_loopback() {
        tracing::info!(
            %addr,
            "listening beyond loopback: requests from other machines need a credential \
             (maestro pair, maestro token create) and a Host this server answers to \
             (EXTERNAL_URL, ALLOWED_HOSTS)"
        );
    }

    let limits = ConnectionLimits {
        max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
    };
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
        // Small frames (events, acks) go out at once instead of waiting on Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            // Held for the connection's life, upgraded WebSockets included.
            let _permit = permit;
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
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    header_read_timeout: Duration,
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
        },
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
