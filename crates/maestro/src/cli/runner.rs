//! The runner: starts, streams and stops the agents of one machine (docs/runners.md).
//!
//! `maestro serve` runs one for its own machine (unless `RUNNER=off`); `maestro runner
//! --server URL` joins another machine to the fleet. Both run [`run`]: register, then three
//! loops until shutdown:
//! - beats: every TTL/3, one `POST /api/runners/:id/heartbeat` carrying every hosted session
//!   (a runner and its agents fall silent together, which the server reports as
//!   `runner_lost`);
//! - claims: a long-poll that wins spawns for this machine (exactly once across runners);
//! - one task per agent: resolve its command from the agents table, make the git worktree
//!   when asked, start it in a pseudo-terminal with the `maestro run` machinery
//!   ([`super::host`]), report it started, stream its terminal, report its exit.
//!
//! At shutdown the runner stops its agents with the signal ladder and reports them stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use maestro_client::Client;
use maestro_protocol::{AgentExited, Launch, LaunchReport, RegisterRunner, Runner};
use portable_pty::PtySize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::host::{self, Agent, Spec, Uplink};

/// The terminal size agents start with (a viewer in control may resize it).
const START_SIZE: PtySize = PtySize {
    rows: 40,
    cols: 120,
    pixel_width: 0,
    pixel_height: 0,
};

/// How an agent takes its initial prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptMode {
    /// Appended to the command line (after `prompt_flag`, when the entry has one).
    Argument,
    /// Typed into the terminal once the agent has started.
    Stdin,
    /// Not passed at all.
    None,
}

/// One entry of the agents table.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEntry {
    pub command: Vec<String>,
    pub prompt: PromptMode,
    pub prompt_flag: Option<String>,
    pub resume: Option<Vec<String>>,
}

impl AgentEntry {
    /// The command line for a launch.
    pub fn argv(&self, prompt: &str, resume: bool) -> Vec<String> {
        if resume && let Some(r) = &self.resume {
            return r.clone();
        }
        let mut argv = self.command.clone();
        if !resume && self.prompt == PromptMode::Argument && !prompt.trim().is_empty() {
            if let Some(flag) = &self.prompt_flag {
                argv.push(flag.clone());
            }
            argv.push(prompt.to_owned());
        }
        argv
    }
}

/// The built-in agents, then the agents file's entries (which replace built-ins of the same
/// name).
pub fn agents_table(file: Option<&Path>) -> anyhow::Result<BTreeMap<String, AgentEntry>> {
    let entry = |cmd: &[&str], flag: Option<&str>, resume: Option<&[&str]>| AgentEntry {
        command: cmd.iter().map(|s| (*s).to_owned()).collect(),
        prompt: PromptMode::Argument,
        prompt_flag: flag.map(str::to_owned),
        resume: resume.map(|r| r.iter().map(|s| (*s).to_owned()).collect()),
    };
    let mut table = BTreeMap::new();
    table.insert(
        "claude-code".to_owned(),
        entry(&["claude"], None, Some(&["claude", "--continue"])),
    );
    table.insert(
        "codex".to_owned(),
        entry(&["codex"], None, Some(&["codex", "resume", "--last"])),
    );
    table.insert("gemini".to_owned(), entry(&["gemini"], Some("-i"), None));
    let Some(path) = file else {
        return Ok(table);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(table),
        Err(e) => anyhow::bail!("cannot read the agents file {}: {e}", path.display()),
    };
    table
        .extend(parse_agents(&text).map_err(|e| {
            anyhow::anyhow!("the agents file {} is not valid: {e}", path.display())
        })?);
    Ok(table)
}

/// `[agents.<name>] command = [...], prompt = "argument"|"stdin"|"none", prompt_flag = "-p",
/// resume = [...]`.
pub fn parse_agents(text: &str) -> anyhow::Result<BTreeMap<String, AgentEntry>> {
    let doc: toml_edit::DocumentMut = text.parse()?;
    let mut out = BTreeMap::new();
    let Some(agents) = doc.get("agents") else {
        return Ok(out);
    };
    let agents = agents
        .as_table_like()
        .ok_or_else(|| anyhow::anyhow!("`agents` must be a table"))?;
    for (name, item) in agents.iter() {
        if !maestro_protocol::ids::is_valid_id(name) {
            anyhow::bail!("agent name {name:?}: use letters, digits, '-' and '_'");
        }
        let t = item
            .as_table_like()
            .ok_or_else(|| anyhow::anyhow!("agents.{name} must be a table"))?;
        let strings = |key: &str| -> anyhow::Result<Option<Vec<String>>> {
            let Some(v) = t.get(key) else { return Ok(None) };
            let arr = v.as_array().ok_or_else(|| {
                anyhow::anyhow!("agents.{name}.{key} must be an array of strings")
            })?;
            let items: Option<Vec<String>> =
                arr.iter().map(|x| x.as_str().map(str::to_owned)).collect();
            match items {
                Some(items) if !items.is_empty() => Ok(Some(items)),
                _ => anyhow::bail!("agents.{name}.{key} must be a non-empty array of strings"),
            }
        };
        let command = strings("command")?
            .ok_or_else(|| anyhow::anyhow!("agents.{name}.command is missing"))?;
        let prompt = match t.get("prompt").and_then(|v| v.as_str()) {
            None | Some("argument") => PromptMode::Argument,
            Some("stdin") => PromptMode::Stdin,
            Some("none") => PromptMode::None,
            Some(other) => {
                anyhow::bail!("agents.{name}.prompt is {other:?}: use argument, stdin or none")
            }
        };
        let prompt_flag = t
            .get("prompt_flag")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        out.insert(
            name.to_owned(),
            AgentEntry {
                command,
                prompt,
                prompt_flag,
                resume: strings("resume")?,
            },
        );
    }
    Ok(out)
}

/// The default agents file, `~/.maestro/agents.toml`.
pub fn default_agents_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".maestro").join("agents.toml"))
}

/// Finds `program` as a shell would: a path as is, else on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Who the runner is and where it reports.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub server: String,
    pub token: Option<String>,
    /// The owner token, tried when the server refuses a token-less request (`AUTH=required`).
    pub fallback_token: Option<String>,
    /// Where the server writes its owner token when it starts (`maestro serve`'s own runner
    /// reads it once the server answers, since it changes at every start).
    pub owner_token_file: Option<PathBuf>,
    pub name: String,
    pub machine_id: String,
    pub hostname: String,
    pub capacity: u32,
    pub agents_file: Option<PathBuf>,
    /// Beat every `ttl_ms / 3`.
    pub ttl_ms: u64,
    /// Where git worktrees for spawns that ask for one are made.
    pub worktrees_dir: PathBuf,
}

/// `maestro runner`.
#[derive(Debug, Args)]
#[command(after_help = "\
Joins this machine to a Maestro server's fleet: spawns for this machine start here, their
terminals stream to the server, Stop stops them. Needs a token with scope `runner` (or
operate) unless the server is on this machine: `maestro token create --scope runner`, then
MAESTRO_TOKEN=… maestro runner --server https://maestro.example

Agents come from the built-in table (claude-code, codex, gemini) and the agents file.")]
pub struct RunnerArgs {
    /// Tells several runners of one machine apart.
    #[arg(long, default_value = "main")]
    pub name: String,
    /// This machine's id [default: /etc/machine-id, else the host name].
    #[arg(long, env = "MAESTRO_MACHINE_ID")]
    pub machine_id: Option<String>,
    /// Agents run at once at most.
    #[arg(long, env = "RUNNER_CAPACITY", default_value_t = 8)]
    pub capacity: u32,
    /// The agents file [default: ~/.maestro/agents.toml].
    #[arg(long, env = "AGENTS_FILE")]
    pub agents_file: Option<PathBuf>,
}

/// Registers, then beats, claims and hosts until `shutdown`.
pub async fn run(cfg: RunnerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let table = Arc::new(agents_table(cfg.agents_file.as_deref())?);
    let found: Vec<String> = table
        .iter()
        .filter(|(_, e)| find_program(&e.command[0]).is_some())
        .map(|(name, _)| name.clone())
        .collect();
    let mut cfg = cfg;
    if let Some(file) = cfg.owner_token_file.clone() {
        let probe = Client::new(&cfg.server)?;
        let mut delay = Duration::from_millis(20);
        while probe.health().await.is_err() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        cfg.fallback_token = std::fs::read_to_string(file)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    let mut client = Client::new(&cfg.server)?;
    if let Some(t) = &cfg.fallback_token {
        client = client.with_fallback_token(t.clone());
    }
    if let Some(t) = &cfg.token {
        client = client.with_token(t.clone());
    }
    let register = RegisterRunner {
        machine_id: cfg.machine_id.clone(),
        name: Some(cfg.name.clone()),
        hostname: cfg.hostname.clone(),
        agents: found,
        capacity: Some(cfg.capacity),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    };
    let Some(runner) = register_until_ok(&client, &register, &shutdown).await else {
        return Ok(());
    };
    tracing::info!(runner.id = %runner.id, agents = ?runner.agents, "runner registered");
    let hosted: Hosted = Arc::default();
    let beat_now = Arc::new(tokio::sync::Notify::new());
    let tasks = TaskTracker::new();
    tasks.spawn(beat(
        client.clone(),
        runner.id.clone(),
        register.clone(),
        hosted.clone(),
        cfg.ttl_ms,
        beat_now.clone(),
        shutdown.clone(),
    ));
    let ctx = Arc::new(LaunchCtx {
        client: client.clone(),
        runner_id: runner.id.clone(),
        hostname: cfg.hostname.clone(),
        table,
        hosted: hosted.clone(),
        beat_now,
        uplink_token: cfg.token.clone().or(cfg.fallback_token.clone()),
        ws_base: host::ws_base(&cfg.server),
        worktrees_dir: cfg.worktrees_dir.clone(),
        machine_id: cfg.machine_id.clone(),
        shutdown: shutdown.clone(),
    });
    let mut backoff = Duration::from_millis(200);
    loop {
        let claimed = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = client.claim_launches(&runner.id, 25_000) => c,
        };
        match claimed {
            Ok(claimed) => {
                backoff = Duration::from_millis(200);
                for launch in claimed.launches {
                    tasks.spawn(host_launch(ctx.clone(), launch));
                }
            }
            Err(e) => {
                if e.status() == Some(maestro_client::StatusCode::NOT_FOUND) {
                    // The server forgot us (a new store): register again.
                    let _ = client.register_runner(&register).await;
                }
                tracing::debug!(error = %e, "claim failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn register_until_ok(
    client: &Client,
    req: &RegisterRunner,
    shutdown: &CancellationToken,
) -> Option<Runner> {
    let mut backoff = Duration::from_millis(50);
    let mut warned = false;
    loop {
        match client.register_runner(req).await {
            Ok(r) => return Some(r),
            Err(e) => {
                if !warned && backoff >= Duration::from_secs(1) {
                    tracing::warn!(error = %e, "runner cannot register yet; retrying");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The sessions this runner hosts now.
type Hosted = Arc<Mutex<HashMap<String, Arc<Agent>>>>;

async fn beat(
    client: Client,
    id: String,
    register: RegisterRunner,
    hosted: Hosted,
    ttl_ms: u64,
    beat_now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis((ttl_ms / 3).max(100));
    loop {
        let sessions: Vec<String> = hosted.lock().expect("hosted").keys().cloned().collect();
        match client.runner_heartbeat(&id, &sessions).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(maestro_client::StatusCode::NOT_FOUND) => {
                let _ = client.register_runner(&register).await;
            }
            Err(e) => tracing::debug!(error = %e, "runner beat failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            // An agent ended: say so now (`running` on every screen), not a beat later.
            _ = beat_now.notified() => {}
        }
    }
}

struct LaunchCtx {
    client: Client,
    runner_id: String,
    hostname: String,
    table: Arc<BTreeMap<String, AgentEntry>>,
    hosted: Hosted,
    beat_now: Arc<tokio::sync::Notify>,
    uplink_token: Option<String>,
    ws_base: String,
    worktrees_dir: PathBuf,
    machine_id: String,
    shutdown: CancellationToken,
}

impl LaunchCtx {
    async fn report(&self, report: LaunchReport) {
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match self.client.report_launch(&self.runner_id, &report).await {
                Ok(_) => return,
                // A later launch or another runner holds the session: nothing to report.
                Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                    tracing::debug!(error = %e, "launch report refused");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "launch report failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    async fn fail(&self, launch: &Launch, failure: String) {
        tracing::warn!(session.id = %launch.session.id, %failure, "agent could not start");
        self.report(LaunchReport {
            session_id: launch.session.id.clone(),
            fencing_token: launch.fencing_token,
            failure: Some(failure),
            ..Default::default()
        })
        .await;
    }
}

/// Starts one claimed agent and hosts it until it exits.
async fn host_launch(ctx: Arc<LaunchCtx>, launch: Launch) {
    let sid = launch.session.id.clone();
    let Some(entry) = ctx.table.get(&launch.agent_tool) else {
        let known: Vec<&str> = ctx.table.keys().map(String::as_str).collect();
        ctx.fail(
            &launch,
            format!(
                "agent_not_found: no agent named {} on {} (known: {})",
                launch.agent_tool,
                ctx.hostname,
                known.join(", ")
            ),
        )
        .await;
        return;
    };
    let argv = super::agent_tools::agent_argv(&entry.argv(&launch.prompt, launch.resume));
    if find_program(&argv[0]).is_none() {
        ctx.fail(
            &launch,
            format!(
                "agent_not_found: {} is not on PATH on {}",
                argv[0], ctx.hostname
            ),
        )
        .await;
        return;
    }
    let mut cwd = PathBuf::from(&launch.cwd);
    let mut worktree = None;
    let mut base_branch = launch
        .session
        .metadata
        .as_ref()
        .and_then(|m| m.get("baseBranch"))
        .and_then(|b| b.as_str())
        .map(str::to_owned);
    if launch.worktree && !launch.resume {
        match make_worktree(&cwd, &ctx.worktrees_dir, &sid).await {
            Ok((dir, base)) => {
                cwd = dir.clone();
                worktree = Some(dir.to_string_lossy().into_owned());
                base_branch = base;
            }
            Err(e) => {
                ctx.fail(&launch, format!("worktree_failed: {e}")).await;
                return;
            }
        }
    }
    if !cwd.is_dir() {
        ctx.fail(
            &launch,
            format!(
                "cwd_not_found: {} is not a directory on {}",
                cwd.display(),
                ctx.hostname
            ),
        )
        .await;
        return;
    }
    let mut env: Vec<(String, String)> = launch.env.clone().into_iter().collect();
    env.push(("MAESTRO_RUNNER_ID".into(), ctx.runner_id.clone()));
    let sink = super::transcript::Sink::create()
        .inspect_err(
            |e| tracing::warn!(session.id = %sid, "the transcript will not be followed: {e}"),
        )
        .ok();
    env.extend(sink.as_ref().map(super::transcript::Sink::env));
    let agent = match Agent::start(Spec {
        argv: argv.clone(),
        cwd: Some(cwd.clone()),
        env,
        size: START_SIZE,
        echo: false,
    }) {
        Ok(agent) => agent,
        Err(e) => {
            ctx.fail(&launch, format!("start_failed: {}: {e}", argv[0]))
                .await;
            return;
        }
    };
    ctx.hosted
        .lock()
        .expect("hosted")
        .insert(sid.clone(), agent.clone());
    ctx.report(LaunchReport {
        session_id: sid.clone(),
        fencing_token: launch.fencing_token,
        pid: agent.pid,
        worktree,
        base_branch: base_branch.clone(),
        ..Default::default()
    })
    .await;
    let stop_changes = CancellationToken::new();
    let changes = tokio::spawn(super::changes::report_changes(
        ctx.client.clone(),
        super::changes::Watch {
            dir: cwd,
            base: base_branch,
            session_id: sid.clone(),
            machine_id: ctx.machine_id.clone(),
        },
        stop_changes.clone(),
    ));
    let entry_prompt = entry.prompt;
    if entry_prompt == PromptMode::Stdin && !launch.resume && !launch.prompt.trim().is_empty() {
        let mut bytes = launch.prompt.clone().into_bytes();
        bytes.push(b'\r');
        agent.write(bytes);
    }
    let stop_uplink = CancellationToken::new();
    let uplink = tokio::spawn(host::run_uplink(
        agent.clone(),
        Uplink {
            ws_base: ctx.ws_base.clone(),
            token: ctx.uplink_token.clone(),
            session_id: sid.clone(),
            replies: true,
        },
        stop_uplink.clone(),
        |msg: &str| tracing::debug!("{msg}"),
    ));
    let stop_transcript = CancellationToken::new();
    let transcript = sink.map(|sink| {
        tokio::spawn(super::transcript::follow(
            ctx.client.clone(),
            sid.clone(),
            sink,
            stop_transcript.clone(),
        ))
    });
    let exit = tokio::select! {
        exit = agent.wait() => exit,
        _ = ctx.shutdown.cancelled() => {
            agent.stop(Duration::from_millis(500)).await;
            agent.wait().await
        }
    };
    agent.drain_output(Duration::from_secs(2)).await;
    super::changes::finish(changes, &stop_changes).await;
    ctx.hosted.lock().expect("hosted").remove(&sid);
    ctx.beat_now.notify_one();
    ctx.report(LaunchReport {
        session_id: sid.clone(),
        fencing_token: launch.fencing_token,
        exit: Some(AgentExited {
            code: exit.code,
            signal: exit.signal,
            stopped: agent.stop_requested(),
        }),
        ..Default::default()
    })
    .await;
    // The uplink sends the exit status; then it closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_uplink.cancel();
    stop_transcript.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), uplink).await;
    if let Some(transcript) = transcript {
        let _ = tokio::time::timeout(Duration::from_secs(5), transcript).await;
    }
}

/// `git worktree add -b maestro/<sid> <dir>` from the project's repository; the worktree and
/// the branch it was made from (none when the repository's `HEAD` is detached).
async fn make_worktree(
    repo: &Path,
    root: &Path,
    sid: &str,
) -> anyhow::Result<(PathBuf, Option<String>)> {
    std::fs::create_dir_all(root)?;
    let dir = root.join(sid);
    let base = tokio::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["symbolic-ref", "-q", "--short", "HEAD"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|b| !b.is_empty());
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["worktree", "add", "-b"])
        .arg(format!("maestro/{sid}"))
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        anyhow::bail!(
            "git worktree add in {} failed: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((dir, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_file_adds_and_replaces_entries() {
        let parsed = parse_agents(
            r#"
[agents.shell]
command = ["bash", "--norc", "-i"]
prompt = "none"

[agents.claude-code]
command = ["claude", "--model", "opus"]
prompt_flag = "-p"
resume = ["claude", "--resume"]
"#,
        )
        .unwrap();
        let shell = &parsed["shell"];
        assert_eq!(shell.prompt, PromptMode::None);
        assert_eq!(shell.argv("do it", false), ["bash", "--norc", "-i"]);
        let claude = &parsed["claude-code"];
        assert_eq!(
            claude.argv("fix the bug", false),
            ["claude", "--model", "opus", "-p", "fix the bug"]
        );
        assert_eq!(claude.argv("fix the bug", true), ["claude", "--resume"]);
    }

    #[test]
    fn a_bad_agents_file_says_what_is_wrong() {
        let e = parse_agents("[agents.x]\nprompt = \"none\"\n").unwrap_err();
        assert!(e.to_string().contains("agents.x.command is missing"), "{e}");
        let e = parse_agents("[agents.x]\ncommand = []\n").unwrap_err();
        assert!(e.to_string().contains("non-empty"), "{e}");
        let e = parse_agents("[agents.x]\ncommand = [\"a\"]\nprompt = \"pipe\"\n").unwrap_err();
        assert!(e.to_string().contains("argument, stdin or none"), "{e}");
    }

    #[test]
    fn built_ins_pass_the_prompt_as_each_tool_expects() {
        let t = agents_table(None).unwrap();
        assert_eq!(t["claude-code"].argv("hi", false), ["claude", "hi"]);
        assert_eq!(t["gemini"].argv("hi", false), ["gemini", "-i", "hi"]);
        assert_eq!(t["codex"].argv("", true), ["codex", "resume", "--last"]);
    }

    #[test]
    fn programs_are_found_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-not-a-program-here").is_none());
    }
}
