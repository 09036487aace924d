//! `maestro`: the one binary users install.
//!
//! `maestro serve` runs the coordination server. Parsing, logging and signals live here; the
//! server itself is `maestro_server::run`. Every other command is an agent command
//! (`maestro task …`, `maestro run -- <agent>`, …) implemented in [`cli`].

use anyhow::Context;
use clap::{Parser, Subcommand};
use maestro_server::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

mod cli;

/// Coordination server for fleets of AI coding agents.
#[derive(Debug, Parser)]
#[command(
    name = "maestro",
    version,
    about,
    propagate_version = true,
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (REST API, WebSockets) on the local backend.
    Serve(Config),
    #[command(flatten)]
    Agent(cli::Command),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(config),
        Command::Agent(command) => std::process::exit(cli::main(cli.global, command)),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing(&config.log_level);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let addr = (config.host, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        maestro_server::run(config, listener, shutdown).await
    })
}

fn init_tracing(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    token.cancel();
}
