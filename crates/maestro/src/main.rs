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

// `C` is [`Command`], every command; `maestro serve …` is parsed with [`ServeOnly`] instead: the
// same `serve` and global flags, without first building the parser of every agent command (a
// long-running server would otherwise keep that code mapped: about half a megabyte of its idle
// memory). Not a doc comment: clap shows the doc comment as the program's description.
/// Coordination server for fleets of AI coding agents.
#[derive(Debug, Parser)]
#[command(
    name = "maestro",
    version,
    about,
    propagate_version = true,
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli<C: Subcommand = Command> {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: C,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(about = SERVE_ABOUT)]
    Serve(Config),
    /// Import an upstream maestro-server data directory (JSON files) into this server's store.
    ///
    /// Reads projects, tasks (current and legacy layouts), sessions, mail, orderings and team
    /// members; applies upstream's own migrations; drops provider API keys from session env.
    /// Safe to run twice (records keep their ids). Stop the server first when using the
    /// embedded database.
    Import(ImportArgs),
    /// Expose the server through a Cloudflare Tunnel (runs and supervises `cloudflared`) and
    /// print a QR code to pair a phone.
    Tunnel(cli::tunnel::TunnelArgs),
    #[command(flatten)]
    Agent(cli::Command),
}

const SERVE_ABOUT: &str = "Run the server: REST API, Socket.IO (/ui, /mobile) and the legacy \
    WebSocket, on the embedded database or on Redis (REDIS_URL)";

#[derive(Debug, Subcommand)]
enum ServeOnly {
    #[command(about = SERVE_ABOUT)]
    Serve(Config),
}

impl Cli {
    fn parse_args() -> Self {
        if std::env::args_os().nth(1).is_some_and(|a| a == "serve") {
            let Cli {
                global,
                command: ServeOnly::Serve(config),
            } = Cli::<ServeOnly>::parse();
            return Cli {
                global,
                command: Command::Serve(config),
            };
        }
        Cli::parse()
    }
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The upstream DATA_DIR (holding projects/, tasks/, sessions/, …).
    upstream_dir: std::path::PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: Config,
}

fn main() {
    let cli = Cli::parse_args();
    let result = match cli.command {
        Command::Serve(config) => serve(config),
        Command::Import(args) => import(args),
        Command::Tunnel(args) => cli::tunnel::main(args),
        Command::Agent(command) => std::process::exit(cli::main(cli.global, command)),
    };
    if let Err(e) = result {
        eprintln!("maestro: error: {e:#}");
        std::process::exit(1);
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
        let runner = (config.runner == "on").then(|| {
            let cfg = local_runner(
                &config,
                listener.local_addr().map(|a| a.port()).unwrap_or(0),
            );
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = cli::runner::run(cfg, stop).await {
                    tracing::error!(error = %format!("{e:#}"), "this machine's runner stopped");
                }
            })
        });
        let served = maestro_server::run(config, listener, shutdown).await;
        if let Some(runner) = runner {
            // It stops its agents (bounded by the ladder) once shutdown is cancelled.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), runner).await;
        }
        served
    })
}

/// The runner `maestro serve` runs for its own machine: it reaches the server on loopback
/// (local trust; the owner token when `AUTH=required`).
fn local_runner(config: &Config, port: u16) -> cli::runner::RunnerConfig {
    let config = config.clone().expand_paths();
    let host = if config.host.is_unspecified() || config.host.is_loopback() {
        "127.0.0.1".to_owned()
    } else if config.host.is_ipv6() {
        format!("[{}]", config.host)
    } else {
        config.host.to_string()
    };
    cli::runner::RunnerConfig {
        server: format!("http://{host}:{port}"),
        token: None,
        fallback_token: None,
        owner_token_file: Some(config.data_dir.join("owner-token")),
        name: format!("serve-{port}"),
        machine_id: config
            .machine_id
            .clone()
            .unwrap_or_else(maestro_server::util::machine_id),
        hostname: maestro_server::util::hostname(),
        capacity: config.runner_capacity,
        agents_file: config
            .agents_file
            .clone()
            .or_else(cli::runner::default_agents_file),
        ttl_ms: config.heartbeat_ttl_ms.max(100),
        worktrees_dir: config.data_dir.join("worktrees"),
    }
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    init_tracing("warn");
    if !args.upstream_dir.is_dir() {
        anyhow::bail!("{} is not a directory", args.upstream_dir.display());
    }
    let config = args.config.expand_paths();
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let domain = maestro_server::open(&config, String::new())?;
        let report = maestro_server::import::import_upstream(&domain, &args.upstream_dir).await;
        domain.store.close().await;
        anyhow::Ok(report?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let target = config
        .redis()
        .map(|_| "Redis".to_owned())
        .unwrap_or_else(|| config.data_dir.display().to_string());
    println!("Imported {} into {target}:", args.upstream_dir.display());
    for (kind, n) in &report.imported {
        println!("  {kind:<12} {n}");
    }
    if report.imported.is_empty() {
        println!("  nothing (no upstream files found)");
    }
    if report.migrated_away > 0 {
        println!(
            "  dropped {} team-member task(s), as upstream does at start-up",
            report.migrated_away
        );
    }
    if !report.skipped.is_empty() {
        println!("Skipped {} file(s):", report.skipped.len());
        for s in &report.skipped {
            println!("  {}: {}", s.path.display(), s.reason);
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use clap::Parser;

    use super::{Cli, Command, ServeOnly};

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::<Command>::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "maestro", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::<Command>::command().debug_assert();
        Cli::<ServeOnly>::command().debug_assert();
    }

    /// `maestro serve` is parsed by `Cli<ServeOnly>`: its help, and what it accepts, are those of
    /// the full command line's `serve`.
    #[test]
    fn serve_parses_alike_either_way() {
        let help = |mut cmd: clap::Command| {
            cmd.build();
            let serve = cmd.find_subcommand_mut("serve").expect("serve").clone();
            let mut serve = serve.bin_name("maestro serve");
            (
                serve.render_long_help().to_string(),
                serve.render_usage().to_string(),
            )
        };
        assert_eq!(
            help(Cli::<ServeOnly>::command()),
            help(Cli::<Command>::command())
        );
        let args = [
            "maestro",
            "serve",
            "--port",
            "4000",
            "--json",
            "--host",
            "127.0.0.1",
        ];
        let Command::Serve(full) = Cli::<Command>::try_parse_from(args).unwrap().command else {
            panic!("not serve")
        };
        let ServeOnly::Serve(fast) = Cli::<ServeOnly>::try_parse_from(args).unwrap().command;
        assert_eq!(format!("{full:?}"), format!("{fast:?}"));
        let bad = ["maestro", "serve", "--no-such-flag"];
        assert_eq!(
            Cli::<Command>::try_parse_from(bad).unwrap_err().kind(),
            Cli::<ServeOnly>::try_parse_from(bad).unwrap_err().kind()
        );
    }
}
