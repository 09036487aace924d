//! The agent-facing commands of `maestro`: a drop-in for the upstream CLI's commands that
//! agents and their hooks call, plus claims, heartbeats and `maestro run`.
//!
//! Each command resolves its [`Context`](context::Context) (server, session, project),
//! makes the REST calls upstream's CLI made (contract §6.2) through `maestro-client`, and
//! prints either human text or upstream's `--json` envelope ([`output`]). Commands run on a
//! single-threaded Tokio runtime and set up nothing else, because hooks call them on every
//! agent event and start-up time is the cost an agent feels.
//!
//! Layout: one module per command group (`project`, `task`, `session`, `mail`, `team`,
//! `claims`), `watch` for `session watch`, `run` for `maestro run`, `tunnel` for
//! `maestro tunnel` (with `qr` drawing pairing QR codes).

#[macro_use]
mod output;
pub(crate) mod agent_tools;
mod approve;
mod approve_mcp;
pub(crate) mod changes;
mod claims;
mod context;
pub mod credentials;
mod hooks;
pub(crate) mod host;
mod mail;
mod project;
pub mod qr;
mod run;
pub(crate) mod runner;
mod session;
mod task;
mod team;
mod transcript;
pub mod tunnel;
mod watch;

use clap::Subcommand;
use serde_json::json;

use context::Context;
pub use context::GlobalArgs;
pub use output::EXIT_CODES_HELP;
use output::{CmdResult, emit, kv};

/// Agent commands (everything but `serve`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage projects.
    #[command(subcommand)]
    Project(project::ProjectCommand),
    /// Manage tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Manage sessions; hook commands (register, complete, needs-input, resume-working).
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Report the current session's progress, completion, blocker or error.
    #[command(subcommand)]
    Report(session::ReportCommand),
    /// Mail between sessions.
    #[command(subcommand)]
    Mail(mail::MailCommand),
    /// Manage team members.
    #[command(subcommand, name = "team-member")]
    TeamMember(team::TeamMemberCommand),
    /// Print the current context (server, project, session, tasks, mode).
    Whoami,
    /// Summary of the current project: tasks by status and priority, active sessions.
    Status,
    /// Claim a task for the current session (a lease with a fencing token).
    Claim(claims::ClaimArgs),
    /// Extend a claim the current session holds.
    Renew(claims::RenewArgs),
    /// Give up a claim.
    Release(claims::ReleaseArgs),
    /// Tell the server the current session's agent is alive.
    Heartbeat,
    /// Run an agent in a terminal that Maestro keeps alive and reachable.
    Run(run::RunArgs),
    /// API tokens for anything that is not this machine (CI, agents elsewhere).
    #[command(subcommand)]
    Token(credentials::TokenCommand),
    /// Pair a phone: prints a single-use URL, its QR code and a short code.
    Pair(credentials::PairArgs),
    /// Paired devices: list or revoke.
    #[command(subcommand)]
    Devices(credentials::DevicesCommand),
    /// A tool permission hook: asks the phone or the desktop app, waits for the decision and
    /// prints it in the tool's format (reads the tool's hook payload on stdin).
    ///
    /// Outside a Maestro session (no MAESTRO_SESSION_ID) it answers "ask" at once, so the tool
    /// prompts at its own terminal. When the server cannot be reached or nobody decides in
    /// time, it answers the --fallback. `maestro hooks install` wires it.
    Approve(approve::ApproveArgs),
    /// Wire an agent tool's hooks to Maestro: lifecycle and permission prompts.
    #[command(subcommand)]
    Hooks(hooks::HooksCommand),
    /// Run the agents of this machine for a Maestro server: spawns for this machine start
    /// here, their terminals stream to the server, Stop stops them.
    Runner(runner::RunnerArgs),
    /// The machines that run agents: online or not, agents found, sessions running.
    Runners,
}

/// Runs an agent command and returns the process exit code.
pub fn main(global: GlobalArgs, command: Command) -> i32 {
    if std::env::var_os("MAESTRO_DEBUG").is_some_and(|v| !v.is_empty() && v != "0") {
        init_debug_tracing();
    }
    let ctx = Context::resolve(global);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return output::exit::FAILED;
        }
    };
    let result = runtime.block_on(dispatch(&ctx, command));
    // Do not wait for leftover blocking work (a stdin reader, a DNS lookup) to finish.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            e.print(ctx.json);
            e.exit
        }
    }
}

async fn dispatch(ctx: &Context, command: Command) -> CmdResult<i32> {
    match command {
        Command::Project(c) => project::run(ctx, c).await?,
        Command::Task(c) => task::run(ctx, c).await?,
        Command::Session(c) => return session::run(ctx, c).await,
        Command::Report(c) => session::report(ctx, c).await?,
        Command::Mail(c) => mail::run(ctx, c).await?,
        Command::TeamMember(c) => team::run(ctx, c).await?,
        Command::Whoami => whoami(ctx),
        Command::Status => status(ctx).await?,
        Command::Claim(a) => claims::claim(ctx, a).await?,
        Command::Renew(a) => claims::renew(ctx, a).await?,
        Command::Release(a) => claims::release(ctx, a).await?,
        Command::Heartbeat => claims::heartbeat(ctx).await?,
        Command::Run(a) => return run::run(ctx, a).await,
        Command::Token(c) => credentials::token(ctx, c).await?,
        Command::Pair(a) => credentials::pair(ctx, a).await?,
        Command::Devices(c) => credentials::devices(ctx, c).await?,
        Command::Hooks(c) => hooks::run(ctx, c)?,
        Command::Approve(a) => return Ok(approve::approve(ctx, a).await),
        Command::Runner(a) => return run_runner(ctx, a).await,
        Command::Runners => list_runners(ctx).await?,
    }
    Ok(output::exit::OK)
}

async fn run_runner(ctx: &Context, args: runner::RunnerArgs) -> CmdResult<i32> {
    let (token, owner_token) = ctx.tokens();
    let machine_id = args
        .machine_id
        .unwrap_or_else(maestro_server::util::machine_id);
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let cfg = runner::RunnerConfig {
        server: ctx.server.clone(),
        token,
        fallback_token: owner_token,
        owner_token_file: None,
        name: args.name,
        machine_id,
        hostname: maestro_server::util::hostname(),
        capacity: args.capacity,
        agents_file: args.agents_file.or_else(runner::default_agents_file),
        ttl_ms: std::env::var("MAESTRO_HEARTBEAT_TTL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15_000),
        worktrees_dir: home
            .unwrap_or_else(std::env::temp_dir)
            .join(".maestro")
            .join("worktrees"),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        stop.cancel();
    });
    eprintln!(
        "maestro runner: machine {} ({}), serving {}",
        cfg.machine_id, cfg.hostname, cfg.server
    );
    match runner::run(cfg, shutdown).await {
        Ok(()) => Ok(output::exit::OK),
        Err(e) => Err(output::CliError::failed("runner_failed", format!("{e:#}"))),
    }
}

async fn list_runners(ctx: &Context) -> CmdResult {
    let client = ctx.client()?;
    let runners = client.list_runners().await.map_err(|e| ctx.err(e))?;
    emit(ctx.json, &runners, || {
        if runners.is_empty() {
            say!("No runners. `maestro serve` runs one for its own machine unless RUNNER=off.");
        }
        for r in &runners {
            say!(
                "{} {:<20} {} running {}/{}  agents: {}{}",
                if r.online { "●" } else { "○" },
                r.hostname,
                r.id,
                r.running,
                r.capacity,
                if r.agents.is_empty() {
                    "none found on PATH".to_owned()
                } else {
                    r.agents.join(", ")
                },
                if r.local {
                    "  (this server's machine)"
                } else {
                    ""
                },
            );
        }
    });
    Ok(())
}

fn whoami(ctx: &Context) {
    let data = json!({
        "server": ctx.server,
        "projectId": ctx.project_id,
        "sessionId": ctx.session_id,
        "taskIds": ctx.task_ids,
        "mode": ctx.mode,
    });
    emit(ctx.json, &data, || {
        let na = |v: &Option<String>| v.clone().unwrap_or_else(|| "N/A".into());
        kv("Server", &ctx.server);
        kv("Project ID", na(&ctx.project_id));
        kv("Session ID", na(&ctx.session_id));
        let tasks = ctx.task_ids.join(", ");
        kv(
            "Task IDs",
            if tasks.is_empty() {
                "N/A".into()
            } else {
                tasks
            },
        );
        kv("Mode", &ctx.mode);
    });
}

async fn status(ctx: &Context) -> CmdResult {
    let project = ctx.project()?;
    let client = ctx.client()?;
    let tasks = client
        .list_tasks(&maestro_client::TaskQuery {
            project_id: Some(project.to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|e| ctx.err(e))?;
    let sessions = client
        .list_sessions(&maestro_client::SessionQuery {
            project_id: Some(project.to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|e| ctx.err(e))?;
    let mut by_status = serde_json::Map::new();
    let mut by_priority = serde_json::Map::new();
    for t in &tasks {
        for (map, key) in [(&mut by_status, &t.status), (&mut by_priority, &t.priority)] {
            let n = map.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
            map.insert(key.clone(), json!(n + 1));
        }
    }
    let active = sessions
        .iter()
        .filter(|s| matches!(s.status.as_str(), "working" | "spawning"))
        .count();
    let summary = json!({
        "project": project,
        "tasks": { "total": tasks.len(), "byStatus": by_status, "byPriority": by_priority },
        "sessions": { "active": active },
    });
    emit(ctx.json, &summary, || {
        let count = |s: &str| by_status.get(s).and_then(|v| v.as_u64()).unwrap_or(0);
        say!("Project Status");
        say!();
        kv("Project ID", project);
        say!();
        say!("Tasks: {} total", tasks.len());
        for (label, key) in [
            ("Todo", "todo"),
            ("In Progress", "in_progress"),
            ("In Review", "in_review"),
            ("Blocked", "blocked"),
            ("Completed", "completed"),
            ("Cancelled", "cancelled"),
        ] {
            say!("  {label}: {}", count(key));
        }
        say!();
        say!("Active Sessions: {active}");
    });
    Ok(())
}

/// Logs to stderr at debug level; only with `MAESTRO_DEBUG`, so plain commands start fast.
fn init_debug_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
