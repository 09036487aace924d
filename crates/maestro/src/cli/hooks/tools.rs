//! What each agent tool gets: the events Maestro wires, the commands and timeouts, where each
//! tool keeps its settings, and what each can do with a permission prompt. Change this file
//! when a tool changes its hooks; the document model and the commands stay as they are.

use std::path::PathBuf;

use super::super::agent_tools::AgentTool;
use super::super::approve::Fallback;
use super::document::shell_quote;

/// Seconds Claude Code and Codex give the permission hook: more than `maestro approve`'s
/// default 600 s wait, so approve's own timeout and fallback decide, not the tool's kill.
pub(super) const APPROVE_HOOK_TIMEOUT_S: u64 = 660;
/// Seconds for the lifecycle hooks (one short REST call each).
pub(super) const LIFECYCLE_TIMEOUT_S: u64 = 30;
/// Codex clamps the timeout of its SessionEnd and Interrupt hooks to 1..=3 s.
const CODEX_SESSION_END_TIMEOUT_S: u64 = 3;

/// One hook Maestro installs.
#[derive(Debug, Clone)]
pub(super) struct HookSpec {
    pub(super) event: &'static str,
    pub(super) matcher: Option<&'static str>,
    pub(super) command: String,
    /// In the tool's unit (seconds; milliseconds for Gemini).
    pub(super) timeout: u64,
    /// Gemini's optional `name`.
    pub(super) name: Option<&'static str>,
}

/// (event, matcher, maestro arguments, timeout in seconds, gemini name).
pub(super) type Wiring = (
    &'static str,
    Option<&'static str>,
    String,
    u64,
    &'static str,
);

pub(super) fn wiring(tool: AgentTool, fallback: Fallback) -> Vec<Wiring> {
    let l = LIFECYCLE_TIMEOUT_S;
    let approve = format!(
        "approve --tool {} --fallback {}",
        tool.name(),
        fallback.name()
    );
    // Events after which nothing the session asked is waiting any more: the person at the
    // desk answered (Claude Code keeps its own dialog open while the permission hook waits)
    // or interrupted. They end the phone's copy.
    let answered = format!("approve --tool {} --answered-at-terminal", tool.name());
    let s = |a: &str| format!("session {a}");
    match tool {
        AgentTool::ClaudeCode => vec![
            ("SessionStart", None, s("register"), l, ""),
            ("UserPromptSubmit", None, s("resume-working"), l, ""),
            ("UserPromptSubmit", None, answered.clone(), l, ""),
            ("Stop", None, s("needs-input"), l, ""),
            ("Stop", None, answered.clone(), l, ""),
            ("Notification", None, s("needs-input"), l, ""),
            ("SessionEnd", None, s("complete"), l, ""),
            (
                "PermissionRequest",
                Some("*"),
                approve,
                APPROVE_HOOK_TIMEOUT_S,
                "",
            ),
            ("PostToolUse", Some("*"), answered.clone(), l, ""),
            ("PostToolUseFailure", Some("*"), answered, l, ""),
        ],
        AgentTool::Codex => vec![
            ("SessionStart", None, s("register"), l, ""),
            ("UserPromptSubmit", None, s("resume-working"), l, ""),
            ("Stop", None, s("needs-input"), l, ""),
            (
                "SessionEnd",
                None,
                s("complete"),
                CODEX_SESSION_END_TIMEOUT_S,
                "",
            ),
            // Codex asks the hook before its own prompt; the desk can only interrupt the turn
            // (Esc), which ends the request on the phone too.
            ("Interrupt", None, answered, CODEX_SESSION_END_TIMEOUT_S, ""),
            (
                "PermissionRequest",
                None,
                approve,
                APPROVE_HOOK_TIMEOUT_S,
                "",
            ),
        ],
        AgentTool::Gemini => vec![
            ("SessionStart", None, s("register"), l, "maestro-register"),
            (
                "BeforeAgent",
                None,
                s("resume-working"),
                l,
                "maestro-resume-working",
            ),
            (
                "AfterAgent",
                None,
                s("needs-input"),
                l,
                "maestro-needs-input",
            ),
            (
                "Notification",
                None,
                s("needs-input"),
                l,
                "maestro-notification",
            ),
            ("SessionEnd", None, s("complete"), l, "maestro-complete"),
            (
                "BeforeTool",
                Some("run_shell_command"),
                approve,
                APPROVE_HOOK_TIMEOUT_S,
                "maestro-approve",
            ),
        ],
    }
}

pub(super) fn specs(tool: AgentTool, fallback: Fallback, exe: &str) -> Vec<HookSpec> {
    wiring(tool, fallback)
        .into_iter()
        .map(|(event, matcher, args, secs, name)| HookSpec {
            event,
            matcher,
            command: format!("{} {args}", shell_quote(exe)),
            timeout: if tool == AgentTool::Gemini {
                secs * 1000
            } else {
                secs
            },
            name: (!name.is_empty()).then_some(name),
        })
        .collect()
}

/// Whether `tool` has a hook that fires exactly when it would ask the human.
pub(super) fn approvals(tool: AgentTool) -> (bool, &'static str) {
    match tool {
        AgentTool::ClaudeCode => (
            true,
            "PermissionRequest hook: fires when Claude Code would show a permission dialog",
        ),
        AgentTool::Codex => (
            true,
            "PermissionRequest hook: fires for shell, exec and network approval prompts",
        ),
        AgentTool::Gemini => (
            true,
            "deny only: a BeforeTool hook asks before each shell command; the phone can deny it, \
             but after an allow Gemini CLI still shows its own confirmation prompt",
        ),
    }
}

/// What `tool` asks the person at its terminal once, before Maestro's hooks run (said by
/// `hooks install`; seen with the versions in docs/hooks.md).
pub(super) fn first_run(tool: AgentTool) -> &'static [&'static str] {
    match tool {
        AgentTool::ClaudeCode => &[],
        AgentTool::Codex => &[
            "Codex asks once, at its next start in this project: to trust the project, then \
             \"Hooks need review\": choose \"Trust all and continue\" (or review them in /hooks).",
            "It keeps that trust under [hooks.state] in ~/.codex/config.toml; installing again \
             with other options changes the hooks, and Codex asks again.",
        ],
        AgentTool::Gemini => &[
            "Gemini CLI runs a project's hooks only in a folder you trust: it asks once \
             \"Do you trust the files in this folder?\" (kept in ~/.gemini/trustedFolders.json).",
        ],
    }
}

/// The settings file for `tool` in a project directory or the user's home.
pub(super) fn config_path(tool: AgentTool, scope: &Scope) -> PathBuf {
    match (tool, scope) {
        // settings.local.json: machine-specific paths stay out of the shared, committed file.
        (AgentTool::ClaudeCode, Scope::Project(d)) => d.join(".claude/settings.local.json"),
        (AgentTool::ClaudeCode, Scope::User(h)) => h.join(".claude/settings.json"),
        (AgentTool::Codex, Scope::Project(d)) => d.join(".codex/config.toml"),
        (AgentTool::Codex, Scope::User(h)) => std::env::var_os("CODEX_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| h.join(".codex"))
            .join("config.toml"),
        (AgentTool::Gemini, Scope::Project(d)) => d.join(".gemini/settings.json"),
        (AgentTool::Gemini, Scope::User(h)) => h.join(".gemini/settings.json"),
    }
}

pub(super) enum Scope {
    Project(PathBuf),
    User(PathBuf),
}

impl Scope {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Scope::Project(_) => "project",
            Scope::User(_) => "user",
        }
    }
}
