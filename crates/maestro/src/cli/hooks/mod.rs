//! `maestro hooks install|uninstall|status`: wires an agent tool's lifecycle hooks and
//! permission prompts to `maestro session …` and `maestro approve`.
//!
//! Each tool keeps hooks in its own settings file (JSON for Claude Code and Gemini CLI, TOML
//! for Codex). Install merges Maestro's entries into that file without touching anything
//! else; uninstall removes exactly those entries and, when nothing else changed, puts the
//! file's original bytes back (kept under `$HOME/.maestro/hooks/`, 0700, each backup 0600).
//! See `docs/hooks.md`.
//!
//! Layout, by reason to change: this file is the commands (arguments, files, the pre-install
//! state); [`document`] the settings file as a document (JSON or TOML, key order and layout
//! kept) and the rule that recognises Maestro's entries; [`tools`] what each agent tool gets.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use maestro_server::util::files;
use serde_json::{Value, json};

use super::agent_tools::AgentTool;
use super::approve::Fallback;
use super::context::Context;
use super::output::{CliError, CmdResult, emit, table};
use document::{Doc, is_toml, wanted};
use tools::{Scope, approvals, config_path, specs};

mod document;
mod tools;

/// Install, remove or inspect Maestro's hooks in an agent tool's settings.
#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Add Maestro's hooks to a tool's settings, merged with what the file already holds.
    Install(InstallArgs),
    /// Remove exactly the hooks `install` added (restoring the original file when unchanged).
    Uninstall(UninstallArgs),
    /// Show, per tool and scope, the settings file and which Maestro hooks it wires.
    Status(StatusArgs),
}

/// Where the hooks go: a project (default: the current directory) or the user's settings.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Project directory whose settings to change [default: the current directory].
    #[arg(long = "project-dir", value_name = "DIR", conflicts_with = "user")]
    project_dir: Option<PathBuf>,
    /// Change the user-level settings under $HOME instead of a project's.
    #[arg(long)]
    user: bool,
}

/// `maestro hooks install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The agent tool whose hooks to wire.
    #[arg(value_enum)]
    tool: AgentTool,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Print the file and the content it would get; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Answer to a permission prompt when the server is unreachable or nobody decides in time
    /// (ask = let the tool prompt at its own terminal).
    #[arg(long, value_enum, default_value_t = Fallback::Ask)]
    fallback: Fallback,
    /// The maestro executable the hooks run [default: the absolute path of this executable].
    #[arg(long, value_name = "PATH")]
    command: Option<PathBuf>,
}

/// `maestro hooks uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The agent tool whose Maestro hooks to remove.
    #[arg(value_enum)]
    tool: AgentTool,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Print what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `maestro hooks status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this tool [default: all].
    #[arg(value_enum)]
    tool: Option<AgentTool>,
    /// Project directory to inspect [default: the current directory].
    #[arg(long = "project-dir", value_name = "DIR")]
    project_dir: Option<PathBuf>,
}

/// Runs a `maestro hooks` command.
pub fn run(ctx: &Context, cmd: HooksCommand) -> CmdResult {
    match cmd {
        HooksCommand::Install(a) => install(ctx, a),
        HooksCommand::Uninstall(a) => uninstall(ctx, a),
        HooksCommand::Status(a) => status(ctx, a),
    }
}

fn home() -> CmdResult<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| CliError::usage("HOME is not set"))
}

fn absolute(p: &Path) -> CmdResult<PathBuf> {
    std::path::absolute(p)
        .map_err(|e| CliError::usage(format!("cannot resolve {}: {e}", p.display())))
}

fn project_scope(dir: Option<&Path>) -> CmdResult<Scope> {
    let dir = match dir {
        Some(d) => absolute(d)?,
        None => std::env::current_dir()
            .map_err(|e| CliError::usage(format!("cannot read the current directory: {e}")))?,
    };
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "project directory {} does not exist",
            dir.display()
        )));
    }
    Ok(Scope::Project(dir))
}

fn scope_of(a: &ScopeArgs) -> CmdResult<Scope> {
    if a.user {
        Ok(Scope::User(home()?))
    } else {
        project_scope(a.project_dir.as_deref())
    }
}

// ---------------------------------------------------------------------------------------
// Files: reading, atomic writes, the pre-install state.

fn read_optional(path: &Path) -> CmdResult<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            CliError::failed(
                "invalid_config",
                format!("{} is not UTF-8 text; nothing was changed", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::failed(
            "io_error",
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn parse_doc(tool: AgentTool, path: &Path, text: Option<&str>) -> CmdResult<Doc> {
    Doc::parse(tool, text.unwrap_or("")).map_err(|e| {
        CliError::failed(
            "invalid_config",
            format!(
                "{} is not valid {}: {e}",
                path.display(),
                if is_toml(tool) { "TOML" } else { "JSON" }
            ),
        )
        .with_hint("Fix the file (or move it away) and run the command again; nothing was changed.")
    })
}

/// Writes a tool's settings file atomically ([`files::write_atomic`]: a 0600 temp file and a
/// rename). The file keeps the mode it had; a new one is 0600, since settings may hold API
/// keys. A symlinked file is written through the link.
fn write_settings(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mode = existing_mode(&path).unwrap_or(files::PRIVATE_FILE);
    files::write_atomic(&path, bytes, mode)
}

#[cfg(unix)]
fn existing_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn existing_mode(_: &Path) -> Option<u32> {
    None
}

fn io_err(path: &Path, e: std::io::Error) -> CliError {
    CliError::failed("io_error", format!("cannot write {}: {e}", path.display()))
}

/// Where the pre-install bytes of `config` are kept.
fn state_path(config: &Path) -> CmdResult<PathBuf> {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in config.to_string_lossy().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(home()?
        .join(".maestro/hooks")
        .join(format!("{h:016x}.json")))
}

/// The directories above `config` that do not exist yet, nearest first: what writing it
/// creates, and what uninstall removes again when they are left empty.
fn missing_dirs(config: &Path) -> Vec<PathBuf> {
    config
        .ancestors()
        .skip(1)
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect()
}

fn save_state(config: &Path, original: Option<&str>) -> CmdResult {
    let created: Vec<String> = missing_dirs(config)
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let state = json!({
        "path": config.to_string_lossy(),
        "existed": original.is_some(),
        "original": original,
        "createdDirs": created,
    });
    let path = state_path(config)?;
    let text = serde_json::to_string_pretty(&state).expect("JSON serialises");
    // The original may hold API keys: the backups live in a 0700 directory, each 0600.
    let dir = path.parent().expect("the state path has a parent");
    files::create_private_dir(dir).map_err(|e| io_err(dir, e))?;
    files::write_atomic(&path, text.as_bytes(), files::PRIVATE_FILE).map_err(|e| io_err(&path, e))
}

/// What install saved about `config` before its first write.
struct Saved {
    existed: bool,
    original: Option<String>,
    /// Directories install created for the file, nearest first.
    created_dirs: Vec<PathBuf>,
}

fn load_state(config: &Path) -> CmdResult<Option<Saved>> {
    let path = state_path(config)?;
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Ok(None);
    };
    if v["path"].as_str() != Some(&*config.to_string_lossy()) {
        return Ok(None);
    }
    Ok(Some(Saved {
        existed: v["existed"].as_bool().unwrap_or(true),
        original: v["original"].as_str().map(str::to_owned),
        created_dirs: v["createdDirs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

/// Removes the directories install created, nearest first, as long as they are empty (a
/// directory that holds anything else stays, and so do the ones above it).
fn remove_created_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
    }
}

fn forget_state(config: &Path) -> CmdResult {
    let path = state_path(config)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path, e)),
    }
}

// ---------------------------------------------------------------------------------------
// The commands.

fn executable(given: Option<&Path>) -> CmdResult<String> {
    let exe = match given {
        Some(p) => absolute(p)?,
        None => std::env::current_exe().map_err(|e| {
            CliError::failed(
                "io_error",
                format!("cannot find this executable's path: {e}; pass --command"),
            )
        })?,
    };
    exe.to_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::usage(format!("{} is not valid UTF-8", exe.display())))
}

fn install(ctx: &Context, a: InstallArgs) -> CmdResult {
    let tool = a.tool;
    let scope = scope_of(&a.scope)?;
    let path = config_path(tool, &scope);
    let exe = executable(a.command.as_deref())?;
    let before = read_optional(&path)?;
    let doc = parse_doc(tool, &path, before.as_deref())?;
    let specs = specs(tool, a.fallback, &exe);
    let events: Vec<&str> = specs.iter().map(|s| s.event).collect();
    let found = doc.found();
    let (approvals_supported, approvals_note) = approvals(tool);
    let report = |changed: bool, content: Option<&str>| {
        json!({
            "tool": tool.name(),
            "scope": scope.name(),
            "path": path.to_string_lossy(),
            "changed": changed,
            "dryRun": a.dry_run,
            "events": events,
            "approvals": { "supported": approvals_supported, "note": approvals_note },
            "content": content,
        })
    };
    if found == wanted(&specs) {
        emit(ctx.json, &report(false, None), || {
            say!(
                "Maestro's {} hooks are already installed in {}; nothing changed.",
                tool.display_name(),
                path.display()
            );
        });
        return Ok(());
    }
    let mut new = doc.clone();
    new.strip();
    new.add(&specs).map_err(|e| {
        CliError::failed(
            "invalid_config",
            format!("cannot add hooks to {}: {e}", path.display()),
        )
        .with_hint("Fix the file by hand and run the command again; nothing was changed.")
    })?;
    let text = new.render();
    if a.dry_run {
        emit(ctx.json, &report(true, Some(&text)), || {
            say!("Would write {}:", path.display());
            say!("{}", text.trim_end());
        });
        return Ok(());
    }
    // The original bytes, for uninstall: only while the file holds none of our hooks
    // (afterwards it is no longer the original).
    if found.is_empty() {
        save_state(&path, before.as_deref())?;
    }
    write_settings(&path, text.as_bytes()).map_err(|e| io_err(&path, e))?;
    emit(ctx.json, &report(true, None), || {
        say!(
            "Installed Maestro's {} hooks in {}:",
            tool.display_name(),
            path.display()
        );
        for s in &specs {
            say!("  {:<18} {}", s.event, s.command);
        }
        say!("Approvals: {approvals_note}.");
        for line in tools::first_run(tool) {
            say!("{line}");
        }
        say!("The hooks do nothing unless MAESTRO_SESSION_ID is set (agents started by Maestro).");
    });
    Ok(())
}

fn uninstall(ctx: &Context, a: UninstallArgs) -> CmdResult {
    let tool = a.tool;
    let scope = scope_of(&a.scope)?;
    let path = config_path(tool, &scope);
    let before = read_optional(&path)?;
    let report = |action: &str, content: Option<&str>| {
        json!({
            "tool": tool.name(),
            "scope": scope.name(),
            "path": path.to_string_lossy(),
            "action": action,
            "dryRun": a.dry_run,
            "content": content,
        })
    };
    let Some(before) = before else {
        if !a.dry_run {
            forget_state(&path)?;
        }
        emit(ctx.json, &report("none", None), || {
            say!("{} does not exist; nothing to remove.", path.display());
        });
        return Ok(());
    };
    let doc = parse_doc(tool, &path, Some(&before))?;
    if doc.found().is_empty() {
        if !a.dry_run {
            forget_state(&path)?;
        }
        emit(ctx.json, &report("none", None), || {
            say!("No Maestro hooks in {}; nothing to remove.", path.display());
        });
        return Ok(());
    }
    let mut stripped = doc.clone();
    stripped.strip();
    let now = stripped.canonical();
    enum Plan {
        Delete,
        Restore(String),
        Write(String),
    }
    let saved = load_state(&path)?;
    let plan = match &saved {
        Some(Saved { existed: false, .. }) if now == json!({}) => Plan::Delete,
        Some(Saved {
            existed: true,
            original: Some(orig),
            ..
        }) if Doc::parse(tool, orig).is_ok_and(|o| o.canonical() == now) => {
            Plan::Restore(orig.clone())
        }
        _ => Plan::Write(stripped.render()),
    };
    let (action, content) = match &plan {
        Plan::Delete => ("delete", None),
        Plan::Restore(t) => ("restore", Some(t.as_str())),
        Plan::Write(t) => ("write", Some(t.as_str())),
    };
    if a.dry_run {
        emit(ctx.json, &report(action, content), || match &plan {
            Plan::Delete => say!("Would delete {} (install created it).", path.display()),
            Plan::Restore(t) => {
                say!("Would restore {} to its original content:", path.display());
                say!("{}", t.trim_end());
            }
            Plan::Write(t) => {
                say!("Would write {}:", path.display());
                say!("{}", t.trim_end());
            }
        });
        return Ok(());
    }
    match &plan {
        Plan::Delete => {
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            if let Some(saved) = &saved {
                remove_created_dirs(&saved.created_dirs);
            }
        }
        Plan::Restore(t) | Plan::Write(t) => {
            write_settings(&path, t.as_bytes()).map_err(|e| io_err(&path, e))?
        }
    }
    forget_state(&path)?;
    emit(ctx.json, &report(action, None), || match &plan {
        Plan::Delete => say!(
            "Removed Maestro's {} hooks: deleted {} (install created it).",
            tool.display_name(),
            path.display()
        ),
        Plan::Restore(_) => say!(
            "Removed Maestro's {} hooks: {} has its original content again.",
            tool.display_name(),
            path.display()
        ),
        Plan::Write(_) => say!(
            "Removed Maestro's {} hooks from {} (your own changes are kept).",
            tool.display_name(),
            path.display()
        ),
    });
    Ok(())
}

fn status(ctx: &Context, a: StatusArgs) -> CmdResult {
    let project = project_scope(a.project_dir.as_deref())?;
    let user = Scope::User(home()?);
    let tools: Vec<AgentTool> = match a.tool {
        Some(t) => vec![t],
        None => AgentTool::ALL.to_vec(),
    };
    let mut rows = Vec::new();
    for tool in tools {
        let (supported, note) = approvals(tool);
        let permission_event = super::agent_tools::permission_event(tool);
        for scope in [&project, &user] {
            let path = config_path(tool, scope);
            let mut entry = json!({
                "tool": tool.name(),
                "scope": scope.name(),
                "path": path.to_string_lossy(),
                "exists": path.exists(),
                "installed": false,
                "events": [],
                "approvals": { "supported": supported, "wired": false, "note": note },
            });
            let parsed = read_optional(&path).and_then(|t| parse_doc(tool, &path, t.as_deref()));
            match parsed {
                Ok(doc) => {
                    let mut events: Vec<String> =
                        doc.found().into_iter().map(|f| f.event).collect();
                    events.dedup();
                    entry["installed"] = json!(!events.is_empty());
                    entry["approvals"]["wired"] =
                        json!(supported && events.iter().any(|e| e == permission_event));
                    entry["events"] = json!(events);
                }
                Err(e) => entry["error"] = json!(e.message),
            }
            rows.push(entry);
        }
    }
    emit(ctx.json, &rows, || {
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let events: Vec<&str> = r["events"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let installed = if let Some(e) = r["error"].as_str() {
                    format!("error: {e}")
                } else if r["installed"] == true {
                    "yes".into()
                } else {
                    "no".into()
                };
                let approvals = if r["approvals"]["supported"] != true {
                    "not supported".to_owned()
                } else if r["approvals"]["wired"] == true {
                    "wired".to_owned()
                } else {
                    "not wired".to_owned()
                };
                vec![
                    r["tool"].as_str().unwrap_or("").to_owned(),
                    r["scope"].as_str().unwrap_or("").to_owned(),
                    installed,
                    if events.is_empty() {
                        "-".into()
                    } else {
                        events.join(",")
                    },
                    approvals,
                    r["path"].as_str().unwrap_or("").to_owned(),
                ]
            })
            .collect();
        table(
            &["TOOL", "SCOPE", "INSTALLED", "EVENTS", "APPROVALS", "FILE"],
            &table_rows,
        );
        if rows.iter().any(|r| r["tool"] == "gemini") {
            say!();
            say!("gemini approvals: {}.", approvals(AgentTool::Gemini).1);
        }
    });
    Ok(())
}
