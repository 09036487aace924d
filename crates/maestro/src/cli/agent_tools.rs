//! What Maestro knows about each agent tool's hooks: the permission-request payload a tool
//! writes on a hook's stdin, and the answer it expects on stdout. Pure functions; the
//! `maestro approve` and `maestro hooks` commands do the I/O.
//!
//! Formats targeted (see `docs/hooks.md` for the URLs):
//! - Claude Code `PermissionRequest` hook: stdin has `session_id`, `cwd`, `tool_name`,
//!   `tool_input`; stdout `{"hookSpecificOutput":{"hookEventName":"PermissionRequest",
//!   "decision":{"behavior":"allow"|"deny","message"?}}}`; no output lets the dialog show.
//! - Codex `PermissionRequest` hook: the same shapes (`tool_name` is `Bash` for shell,
//!   exec and network approvals, `tool_input.command` the command line).
//! - Gemini CLI `BeforeTool` hook: stdin has `session_id`, `cwd`, `tool_name`, `tool_input`;
//!   stdout `{"decision":"allow"|"deny","reason"?}`; `{}` leaves the decision to the CLI.

// `maestro approve` (being written alongside) is the user of the parse/render half.

use anyhow::{Context as _, bail};
use maestro_protocol::summarize;
use serde_json::{Value, json};

/// An agent tool whose hooks Maestro can wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum AgentTool {
    /// Anthropic's Claude Code.
    #[value(name = "claude-code")]
    ClaudeCode,
    /// OpenAI's Codex CLI.
    #[value(name = "codex")]
    Codex,
    /// Google's Gemini CLI.
    #[value(name = "gemini")]
    Gemini,
}

impl AgentTool {
    /// Every tool, in the order `hooks status` lists them.
    pub const ALL: [AgentTool; 3] = [AgentTool::ClaudeCode, AgentTool::Codex, AgentTool::Gemini];

    /// The command-line name (`claude-code`, `codex`, `gemini`).
    pub fn name(self) -> &'static str {
        match self {
            AgentTool::ClaudeCode => "claude-code",
            AgentTool::Codex => "codex",
            AgentTool::Gemini => "gemini",
        }
    }

    /// The name people know the tool by.
    pub fn display_name(self) -> &'static str {
        match self {
            AgentTool::ClaudeCode => "Claude Code",
            AgentTool::Codex => "Codex CLI",
            AgentTool::Gemini => "Gemini CLI",
        }
    }
}

/// Codex's subcommands that are not its interactive terminal (they take no `--no-daemon`).
const CODEX_SUBCOMMANDS: &[&str] = &[
    "agents",
    "exec",
    "e",
    "review",
    "login",
    "logout",
    "mcp",
    "plugin",
    "app-server",
    "remote-control",
    "completion",
    "update",
    "doctor",
    "sandbox",
    "debug",
    "apply",
    "a",
    "resume",
    "queue",
    "archive",
    "delete",
    "migrate-rollouts",
    "migrate-nfs-db",
    "unarchive",
    "fork",
    "cloud",
    "exec-server",
    "features",
    "help",
];

/// The command line to start an agent with, so that its hooks report to the session that
/// started it.
///
/// Codex's terminal runs its turns, hooks included, in a background app-server that all of a
/// user's Codex terminals share, and that server has the environment of whichever terminal
/// started it: another session's `MAESTRO_SESSION_ID`, or none. `--no-daemon` (Codex 0.171)
/// makes this terminal run its own, with this agent's environment. Other commands are
/// returned as they are.
pub fn agent_argv(argv: &[String]) -> Vec<String> {
    let mut out = argv.to_vec();
    let Some(program) = argv.first() else {
        return out;
    };
    let name = std::path::Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let interactive = match argv.get(1) {
        None => true,
        Some(a) => !CODEX_SUBCOMMANDS.contains(&a.as_str()),
    };
    if name == "codex" && interactive && !argv.iter().any(|a| a == "--no-daemon") {
        out.insert(1, "--no-daemon".to_owned());
    }
    out
}

/// A tool's request to use a tool, as its permission hook reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionRequest {
    /// The agent's tool name (`Bash`, `Edit`, `run_shell_command`, …).
    pub tool_name: String,
    /// The tool's arguments as the agent sent them.
    pub input: Value,
    /// One line for a human: the command, the file path, or the tool and its input.
    pub summary: String,
    /// The agent's own session id.
    pub agent_session: Option<String>,
    /// The agent's working directory.
    pub cwd: Option<String>,
}

/// Reads the permission-hook payload `tool` writes on stdin.
pub fn parse_permission_request(
    tool: AgentTool,
    stdin: &[u8],
) -> anyhow::Result<PermissionRequest> {
    let payload: Value = serde_json::from_slice(stdin)
        .with_context(|| format!("{} hook payload is not JSON", tool.display_name()))?;
    let Some(obj) = payload.as_object() else {
        bail!("{} hook payload is not a JSON object", tool.display_name());
    };
    let tool_name = obj
        .get("tool_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .with_context(|| {
            format!(
                "{} hook payload has no tool_name (is this hook wired to {}?)",
                tool.display_name(),
                permission_event(tool)
            )
        })?
        .to_owned();
    let input = obj.get("tool_input").cloned().unwrap_or(Value::Null);
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(PermissionRequest {
        summary: summarize(&tool_name, &input),
        tool_name,
        input,
        agent_session: text("session_id"),
        cwd: text("cwd"),
    })
}

/// The agent's own transcript file, as any of the tools' hook payloads names it
/// (`transcript_path`; Codex sends `null` when it keeps none).
pub fn transcript_path(stdin: &[u8]) -> Option<std::path::PathBuf> {
    let payload: Value = serde_json::from_slice(stdin).ok()?;
    payload
        .get("transcript_path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
}

/// The hook event a tool's permission requests arrive on.
pub fn permission_event(tool: AgentTool) -> &'static str {
    match tool {
        AgentTool::ClaudeCode | AgentTool::Codex => "PermissionRequest",
        AgentTool::Gemini => "BeforeTool",
    }
}

/// A human's answer to a permission request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the tool run.
    Allow,
    /// Refuse it; the reason goes back to the agent.
    Deny { reason: String },
    /// Decide nothing: the tool asks at its own terminal as if no hook ran.
    Ask,
}

/// What the permission hook prints on stdout, and its exit code, for `v`.
pub fn render_verdict(tool: AgentTool, v: &Verdict) -> (String, i32) {
    let out = match (tool, v) {
        (AgentTool::ClaudeCode | AgentTool::Codex, Verdict::Ask) => String::new(),
        (AgentTool::ClaudeCode | AgentTool::Codex, Verdict::Allow) => json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": { "behavior": "allow" },
            }
        })
        .to_string(),
        (AgentTool::ClaudeCode | AgentTool::Codex, Verdict::Deny { reason }) => json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": { "behavior": "deny", "message": reason },
            }
        })
        .to_string(),
        // Gemini parses stdout as JSON: an empty object states no decision.
        (AgentTool::Gemini, Verdict::Ask) => "{}".to_owned(),
        (AgentTool::Gemini, Verdict::Allow) => json!({ "decision": "allow" }).to_string(),
        (AgentTool::Gemini, Verdict::Deny { reason }) => {
            json!({ "decision": "deny", "reason": reason }).to_string()
        }
    };
    (out, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tool: AgentTool, v: Value) -> PermissionRequest {
        parse_permission_request(tool, v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn claude_code_bash_request() {
        let r = parse(
            AgentTool::ClaudeCode,
            json!({
                "session_id": "c0ffee-1",
                "transcript_path": "/home/u/.claude/projects/p/c0ffee-1.jsonl",
                "cwd": "/work/app",
                "permission_mode": "default",
                "hook_event_name": "PermissionRequest",
                "tool_name": "Bash",
                "tool_input": { "command": "cargo   test\n --all", "description": "Run tests" },
                "permission_suggestions": [
                    { "type": "addRules", "behavior": "allow", "destination": "localSettings",
                      "rules": [{ "toolName": "Bash", "ruleContent": "cargo test:*" }] }
                ]
            }),
        );
        assert_eq!(r.tool_name, "Bash");
        assert_eq!(r.summary, "cargo test --all");
        assert_eq!(r.agent_session.as_deref(), Some("c0ffee-1"));
        assert_eq!(r.cwd.as_deref(), Some("/work/app"));
        assert_eq!(r.input["description"], "Run tests");
    }

    #[test]
    fn claude_code_edit_request_summarises_the_path() {
        let r = parse(
            AgentTool::ClaudeCode,
            json!({
                "session_id": "s", "cwd": "/w", "hook_event_name": "PermissionRequest",
                "tool_name": "Edit",
                "tool_input": { "file_path": "/w/src/lib.rs", "old_string": "a", "new_string": "b" }
            }),
        );
        assert_eq!(r.summary, "/w/src/lib.rs");
    }

    #[test]
    fn other_tools_summarise_name_and_compact_input() {
        let r = parse(
            AgentTool::ClaudeCode,
            json!({
                "session_id": "s", "hook_event_name": "PermissionRequest",
                "tool_name": "WebFetch",
                "tool_input": { "url": "https://example.com/x", "prompt": "p".repeat(400) }
            }),
        );
        assert!(r.summary.starts_with("WebFetch {"), "{}", r.summary);
        assert_eq!(r.summary.chars().count(), maestro_protocol::SUMMARY_MAX);
        assert!(r.summary.ends_with('…'));
        assert_eq!(r.cwd, None);
    }

    #[test]
    fn codex_shell_request() {
        let r = parse(
            AgentTool::Codex,
            json!({
                "session_id": "019a-thread",
                "turn_id": "turn-3",
                "transcript_path": null,
                "cwd": "/repo",
                "hook_event_name": "PermissionRequest",
                "model": "gpt-5-codex",
                "permission_mode": "default",
                "tool_name": "Bash",
                "tool_input": { "command": "rm -rf target", "description": "clean the build" }
            }),
        );
        assert_eq!(r.tool_name, "Bash");
        assert_eq!(r.summary, "rm -rf target");
        assert_eq!(r.agent_session.as_deref(), Some("019a-thread"));
        assert_eq!(r.cwd.as_deref(), Some("/repo"));
    }

    #[test]
    fn gemini_before_tool_requests() {
        let shell = parse(
            AgentTool::Gemini,
            json!({
                "session_id": "g-1", "transcript_path": "/t.json", "cwd": "/proj",
                "hook_event_name": "BeforeTool", "timestamp": "2026-05-01T10:00:00Z",
                "tool_name": "run_shell_command",
                "tool_input": { "command": "npm install", "description": "deps" }
            }),
        );
        assert_eq!(shell.summary, "npm install");
        let write = parse(
            AgentTool::Gemini,
            json!({
                "session_id": "g-1", "cwd": "/proj", "hook_event_name": "BeforeTool",
                "tool_name": "write_file",
                "tool_input": { "file_path": "/proj/a.txt", "content": "hi" }
            }),
        );
        assert_eq!(write.summary, "/proj/a.txt");
        assert_eq!(write.agent_session.as_deref(), Some("g-1"));
    }

    #[test]
    fn bad_payloads_are_errors() {
        for tool in AgentTool::ALL {
            assert!(parse_permission_request(tool, b"not json").is_err());
            assert!(parse_permission_request(tool, b"[1]").is_err());
            let e = parse_permission_request(tool, br#"{"session_id":"s"}"#).unwrap_err();
            assert!(e.to_string().contains("tool_name"), "{e}");
        }
    }

    #[test]
    fn claude_code_and_codex_verdicts() {
        for tool in [AgentTool::ClaudeCode, AgentTool::Codex] {
            let (out, code) = render_verdict(tool, &Verdict::Allow);
            assert_eq!(code, 0);
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                v,
                json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                    "decision": {"behavior": "allow"}}})
            );
            let (out, code) = render_verdict(
                tool,
                &Verdict::Deny {
                    reason: "not on main".into(),
                },
            );
            assert_eq!(code, 0);
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["hookSpecificOutput"]["decision"]["behavior"], "deny");
            assert_eq!(
                v["hookSpecificOutput"]["decision"]["message"],
                "not on main"
            );
            assert_eq!(render_verdict(tool, &Verdict::Ask), (String::new(), 0));
        }
    }

    #[test]
    fn gemini_verdicts() {
        let g = AgentTool::Gemini;
        assert_eq!(
            render_verdict(g, &Verdict::Allow),
            (r#"{"decision":"allow"}"#.into(), 0)
        );
        let (out, code) = render_verdict(
            g,
            &Verdict::Deny {
                reason: "no".into(),
            },
        );
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, json!({"decision": "deny", "reason": "no"}));
        assert_eq!(render_verdict(g, &Verdict::Ask), ("{}".into(), 0));
    }

    #[test]
    fn codex_terminals_run_without_the_shared_daemon() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(agent_argv(&v(&["codex"])), v(&["codex", "--no-daemon"]));
        assert_eq!(
            agent_argv(&v(&["/opt/bin/codex", "fix the tests", "-m", "o3"])),
            v(&["/opt/bin/codex", "--no-daemon", "fix the tests", "-m", "o3"])
        );
        for same in [
            &["codex", "exec", "do it"][..],
            &["codex", "--no-daemon"],
            &["claude"],
            &["gemini", "-m", "x"],
            &["my-codex"],
        ] {
            assert_eq!(agent_argv(&v(same)), v(same), "{same:?}");
        }
    }

    #[test]
    fn transcript_paths() {
        let claude = br#"{"session_id":"s","transcript_path":"/h/.claude/projects/p/s.jsonl"}"#;
        assert_eq!(
            transcript_path(claude),
            Some("/h/.claude/projects/p/s.jsonl".into())
        );
        assert_eq!(transcript_path(br#"{"transcript_path":null}"#), None);
        assert_eq!(transcript_path(br#"{"transcript_path":""}"#), None);
        assert_eq!(transcript_path(b"not json"), None);
    }

    #[test]
    fn names() {
        use clap::ValueEnum;
        for tool in AgentTool::ALL {
            assert_eq!(tool.to_possible_value().unwrap().get_name(), tool.name());
        }
    }
}
