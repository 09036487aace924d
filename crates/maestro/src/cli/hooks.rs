//! `maestro hooks install|uninstall|status`: wires an agent tool's lifecycle hooks and
//! permission prompts to `maestro session …` and `maestro approve`.
//!
//! Each tool keeps hooks in its own settings file (JSON for Claude Code and Gemini CLI, TOML
//! for Codex). Install merges Maestro's entries into that file without touching anything
//! else; uninstall removes exactly those entries and, when nothing else changed, puts the
//! file's original bytes back (kept under `$HOME/.maestro/hooks/`, 0700, each backup 0600). Maestro's entries are
//! recognised by their command: a `maestro` executable running one of the hook subcommands.
//! See `docs/hooks.md`.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use maestro_server::util::files;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Value, json};

use super::agent_tools::AgentTool;
use super::context::Context;
use super::output::{CliError, CmdResult, emit, table};

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

/// What `maestro approve` answers when no human decision arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Fallback {
    /// Let the tool prompt at its own terminal.
    Ask,
    /// Allow the tool call.
    Allow,
    /// Deny the tool call.
    Deny,
}

impl Fallback {
    fn name(self) -> &'static str {
        match self {
            Fallback::Ask => "ask",
            Fallback::Allow => "allow",
            Fallback::Deny => "deny",
        }
    }
}

/// Seconds Claude Code and Codex give the permission hook: more than `maestro approve`'s
/// default 600 s wait, so approve's own timeout and fallback decide, not the tool's kill.
const APPROVE_HOOK_TIMEOUT_S: u64 = 660;
/// Seconds for the lifecycle hooks (one short REST call each).
const LIFECYCLE_TIMEOUT_S: u64 = 30;

/// Runs a `maestro hooks` command.
pub fn run(ctx: &Context, cmd: HooksCommand) -> CmdResult {
    match cmd {
        HooksCommand::Install(a) => install(ctx, a),
        HooksCommand::Uninstall(a) => uninstall(ctx, a),
        HooksCommand::Status(a) => status(ctx, a),
    }
}

// ---------------------------------------------------------------------------------------
// What each tool gets.

/// One hook Maestro installs.
#[derive(Debug, Clone)]
struct HookSpec {
    event: &'static str,
    matcher: Option<&'static str>,
    command: String,
    /// In the tool's unit (seconds; milliseconds for Gemini).
    timeout: u64,
    /// Gemini's optional `name`.
    name: Option<&'static str>,
}

/// (event, matcher, maestro arguments, timeout in seconds, gemini name).
type Wiring = (
    &'static str,
    Option<&'static str>,
    String,
    u64,
    &'static str,
);

fn wiring(tool: AgentTool, fallback: Fallback) -> Vec<Wiring> {
    let l = LIFECYCLE_TIMEOUT_S;
    let approve = format!(
        "approve --tool {} --fallback {}",
        tool.name(),
        fallback.name()
    );
    let s = |a: &str| format!("session {a}");
    match tool {
        AgentTool::ClaudeCode => vec![
            ("SessionStart", None, s("register"), l, ""),
            ("UserPromptSubmit", None, s("resume-working"), l, ""),
            ("Stop", None, s("needs-input"), l, ""),
            ("Notification", None, s("needs-input"), l, ""),
            ("SessionEnd", None, s("complete"), l, ""),
            (
                "PermissionRequest",
                Some("*"),
                approve,
                APPROVE_HOOK_TIMEOUT_S,
                "",
            ),
        ],
        AgentTool::Codex => vec![
            ("SessionStart", None, s("register"), l, ""),
            ("UserPromptSubmit", None, s("resume-working"), l, ""),
            ("Stop", None, s("needs-input"), l, ""),
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
        ],
    }
}

fn specs(tool: AgentTool, fallback: Fallback, exe: &str) -> Vec<HookSpec> {
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
fn approvals(tool: AgentTool) -> (bool, &'static str) {
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
            false,
            "not supported: Gemini CLI has no permission-request hook (BeforeTool fires for every \
             tool call and cannot answer the confirmation prompt); prompts stay in its terminal",
        ),
    }
}

/// The settings file for `tool` in a project directory or the user's home.
fn config_path(tool: AgentTool, scope: &Scope) -> PathBuf {
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

enum Scope {
    Project(PathBuf),
    User(PathBuf),
}

impl Scope {
    fn name(&self) -> &'static str {
        match self {
            Scope::Project(_) => "project",
            Scope::User(_) => "user",
        }
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
// Recognising Maestro's entries.

/// Splits a command line the way a POSIX shell would for simple words and quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether a hook command is one Maestro installs: a `maestro` executable running a hook
/// subcommand.
fn is_ours(command: &str) -> bool {
    let words = shell_words(command);
    let Some((prog, rest)) = words.split_first() else {
        return false;
    };
    let name = Path::new(prog)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if name != "maestro" && name != "maestro.exe" {
        return false;
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match rest.as_slice() {
        [
            "session",
            "register" | "resume-working" | "needs-input" | "complete",
        ] => true,
        ["approve", args @ ..] => args.contains(&"--tool"),
        _ => false,
    }
}

/// One installed Maestro hook, as found in a file (compared to decide idempotence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    event: String,
    matcher: Option<String>,
    command: String,
    timeout: Option<i64>,
}

fn wanted(specs: &[HookSpec]) -> Vec<Found> {
    let mut v: Vec<Found> = specs
        .iter()
        .map(|s| Found {
            event: s.event.to_owned(),
            matcher: s.matcher.map(str::to_owned),
            command: s.command.clone(),
            timeout: Some(s.timeout as i64),
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// A settings document, JSON or TOML.

#[derive(Clone)]
enum Doc {
    Json(J),
    Toml(toml_edit::DocumentMut),
}

fn is_toml(tool: AgentTool) -> bool {
    tool == AgentTool::Codex
}

impl Doc {
    fn parse(tool: AgentTool, text: &str) -> Result<Doc, String> {
        if is_toml(tool) {
            return text
                .parse::<toml_edit::DocumentMut>()
                .map(Doc::Toml)
                .map_err(|e| e.to_string().trim_end().to_owned());
        }
        if text.trim().is_empty() {
            return Ok(Doc::Json(J::Obj(Vec::new())));
        }
        let j: J = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !matches!(j, J::Obj(_)) {
            return Err("the top level is not a JSON object".into());
        }
        Ok(Doc::Json(j))
    }

    fn render(&self) -> String {
        match self {
            Doc::Json(j) => {
                let mut s = serde_json::to_string_pretty(j).expect("JSON serialises");
                s.push('\n');
                s
            }
            Doc::Toml(d) => d.to_string(),
        }
    }

    /// Structural content, key order ignored, empty hook containers dropped.
    fn canonical(&self) -> Value {
        let mut v = match self {
            Doc::Json(j) => j.to_value(),
            Doc::Toml(d) => toml_table_value(d.as_table()),
        };
        if let Some(root) = v.as_object_mut()
            && let Some(Value::Object(h)) = root.get_mut("hooks")
        {
            h.retain(|_, e| !matches!(e, Value::Array(a) if a.is_empty()));
            if h.is_empty() {
                root.remove("hooks");
            }
        }
        v
    }

    fn found(&self) -> Vec<Found> {
        let mut out = match self {
            Doc::Json(j) => json_found(j),
            Doc::Toml(d) => toml_found(d),
        };
        out.sort();
        out
    }

    /// Removes Maestro's hooks, and the groups, events and `hooks` table they leave empty.
    fn strip(&mut self) {
        match self {
            Doc::Json(j) => json_strip(j),
            Doc::Toml(d) => toml_strip(d),
        }
    }

    fn add(&mut self, specs: &[HookSpec]) -> Result<(), String> {
        match self {
            Doc::Json(j) => json_add(j, specs),
            Doc::Toml(d) => toml_add(d, specs),
        }
    }
}

// JSON with key order kept (serde_json's own map sorts keys unless a feature is on).

/// A JSON value whose objects keep their keys in file order.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn to_value(&self) -> Value {
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Num(n) => Value::Number(n.clone()),
            J::Str(s) => Value::String(s.clone()),
            J::Arr(a) => Value::Array(a.iter().map(J::to_value).collect()),
            J::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }

    fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(o) => o.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Num(n) => n.serialize(s),
            J::Str(v) => s.serialize_str(v),
            J::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            J::Obj(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_none<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<J, E> {
                serde_json::Number::from_f64(n)
                    .map(J::Num)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = a.next_element()? {
                    v.push(e);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some((k, e)) = a.next_entry::<String, J>()? {
                    v.push((k, e));
                }
                Ok(J::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn json_found(root: &J) -> Vec<Found> {
    let mut out = Vec::new();
    let Some(J::Obj(events)) = root.get("hooks") else {
        return out;
    };
    for (event, groups) in events {
        let J::Arr(groups) = groups else { continue };
        for g in groups {
            let matcher = g.get("matcher").and_then(J::as_str).map(str::to_owned);
            let Some(J::Arr(handlers)) = g.get("hooks") else {
                continue;
            };
            for h in handlers {
                let Some(cmd) = h.get("command").and_then(J::as_str) else {
                    continue;
                };
                if is_ours(cmd) {
                    out.push(Found {
                        event: event.clone(),
                        matcher: matcher.clone(),
                        command: cmd.to_owned(),
                        timeout: match h.get("timeout") {
                            Some(J::Num(n)) => n.as_i64(),
                            _ => None,
                        },
                    });
                }
            }
        }
    }
    out
}

fn json_handler_is_ours(h: &J) -> bool {
    h.get("command").and_then(J::as_str).is_some_and(is_ours)
}

fn json_strip(root: &mut J) {
    let J::Obj(top) = root else { return };
    let Some(pos) = top.iter().position(|(k, _)| k == "hooks") else {
        return;
    };
    let J::Obj(events) = &mut top[pos].1 else {
        return;
    };
    let mut touched_any = false;
    events.retain_mut(|(_, groups)| {
        let J::Arr(groups) = groups else { return true };
        let mut touched = false;
        groups.retain_mut(|g| {
            let J::Obj(fields) = g else { return true };
            let Some((_, J::Arr(handlers))) = fields.iter_mut().find(|(k, _)| k == "hooks") else {
                return true;
            };
            let before = handlers.len();
            handlers.retain(|h| !json_handler_is_ours(h));
            if handlers.len() == before {
                return true;
            }
            touched = true;
            !handlers.is_empty()
        });
        touched_any |= touched;
        !(touched && groups.is_empty())
    });
    if touched_any && events.is_empty() {
        top.remove(pos);
    }
}

fn json_add(root: &mut J, specs: &[HookSpec]) -> Result<(), String> {
    let J::Obj(top) = root else {
        return Err("the top level is not a JSON object".into());
    };
    if !top.iter().any(|(k, _)| k == "hooks") {
        top.push(("hooks".into(), J::Obj(Vec::new())));
    }
    let Some((_, J::Obj(events))) = top.iter_mut().find(|(k, _)| k == "hooks") else {
        return Err("\"hooks\" is not an object".into());
    };
    for s in specs {
        if !events.iter().any(|(k, _)| k == s.event) {
            events.push((s.event.to_owned(), J::Arr(Vec::new())));
        }
        let Some((_, J::Arr(groups))) = events.iter_mut().find(|(k, _)| k == s.event) else {
            return Err(format!("\"hooks.{}\" is not an array", s.event));
        };
        let mut handler = vec![
            ("type".to_owned(), J::Str("command".into())),
            ("command".to_owned(), J::Str(s.command.clone())),
            ("timeout".to_owned(), J::Num(s.timeout.into())),
        ];
        if let Some(n) = s.name {
            handler.insert(0, ("name".to_owned(), J::Str(n.into())));
        }
        let mut group = Vec::new();
        if let Some(m) = s.matcher {
            group.push(("matcher".to_owned(), J::Str(m.into())));
        }
        group.push(("hooks".to_owned(), J::Arr(vec![J::Obj(handler)])));
        groups.push(J::Obj(group));
    }
    Ok(())
}

// TOML (Codex): `[[hooks.<Event>]]` groups with `[[hooks.<Event>.hooks]]` handlers, or the
// same written as inline arrays.

fn toml_value(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as T;
    match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => json!(*i.value()),
        T::Float(f) => json!(*f.value()),
        T::Boolean(b) => json!(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(a.iter().map(toml_value).collect()),
        T::InlineTable(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_owned(), toml_value(v)))
                .collect(),
        ),
    }
}

fn toml_item(i: &toml_edit::Item) -> Value {
    match i {
        toml_edit::Item::None => Value::Null,
        toml_edit::Item::Value(v) => toml_value(v),
        toml_edit::Item::Table(t) => toml_table_value(t),
        toml_edit::Item::ArrayOfTables(a) => Value::Array(a.iter().map(toml_table_value).collect()),
    }
}

fn toml_table_value(t: &toml_edit::Table) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, v)| (k.to_owned(), toml_item(v)))
            .collect(),
    )
}

fn toml_found(d: &toml_edit::DocumentMut) -> Vec<Found> {
    // The canonical JSON view has the same shape as Claude's; reuse the JSON walk.
    let v = toml_table_value(d.as_table());
    let j: J = serde_json::from_value(v).unwrap_or(J::Null);
    json_found(&j)
}

fn toml_handler_is_ours(t: &dyn toml_edit::TableLike) -> bool {
    t.get("command")
        .and_then(|c| c.as_str())
        .is_some_and(is_ours)
}

/// Removes our handlers from one group; returns (touched, now empty).
fn toml_strip_group(g: &mut dyn toml_edit::TableLike) -> (bool, bool) {
    match g.get_mut("hooks") {
        Some(toml_edit::Item::ArrayOfTables(a)) => {
            let before = a.len();
            a.retain(|t| !toml_handler_is_ours(t));
            (a.len() != before, a.is_empty())
        }
        Some(toml_edit::Item::Value(toml_edit::Value::Array(a))) => {
            let before = a.len();
            a.retain(|v| !v.as_inline_table().is_some_and(|t| toml_handler_is_ours(t)));
            (a.len() != before, a.is_empty())
        }
        _ => (false, false),
    }
}

fn toml_strip(d: &mut toml_edit::DocumentMut) {
    let Some(hooks) = d.get_mut("hooks").and_then(|h| h.as_table_like_mut()) else {
        return;
    };
    let events: Vec<String> = hooks.iter().map(|(k, _)| k.to_owned()).collect();
    let mut touched_any = false;
    for event in events {
        let Some(item) = hooks.get_mut(&event) else {
            continue;
        };
        let (touched, empty) = match item {
            toml_edit::Item::ArrayOfTables(groups) => {
                let mut drop = Vec::new();
                let mut touched = false;
                for g in groups.iter_mut() {
                    let (tc, e) = toml_strip_group(g);
                    touched |= tc;
                    drop.push(tc && e);
                }
                let mut i = 0;
                groups.retain(|_| {
                    let keep = !drop[i];
                    i += 1;
                    keep
                });
                (touched, groups.is_empty())
            }
            toml_edit::Item::Value(toml_edit::Value::Array(groups)) => {
                let mut drop = Vec::new();
                let mut touched = false;
                for g in groups.iter_mut() {
                    match g.as_inline_table_mut() {
                        Some(t) => {
                            let (tc, e) = toml_strip_group(t);
                            touched |= tc;
                            drop.push(tc && e);
                        }
                        None => drop.push(false),
                    }
                }
                let mut i = 0;
                groups.retain(|_| {
                    let keep = !drop[i];
                    i += 1;
                    keep
                });
                (touched, groups.is_empty())
            }
            _ => (false, false),
        };
        if touched {
            touched_any = true;
            if empty {
                hooks.remove(&event);
            }
        }
    }
    if touched_any && hooks.is_empty() {
        d.remove("hooks");
    }
}

fn toml_add(d: &mut toml_edit::DocumentMut, specs: &[HookSpec]) -> Result<(), String> {
    use toml_edit::{ArrayOfTables, InlineTable, Item, Table, value};
    if d.get("hooks").is_none() {
        let mut t = Table::new();
        t.set_implicit(true);
        d.insert("hooks", Item::Table(t));
    }
    let Some(hooks) = d.get_mut("hooks").and_then(Item::as_table_mut) else {
        return Err("`hooks` is not a table".into());
    };
    for s in specs {
        match hooks.get_mut(s.event) {
            None => {
                hooks.insert(s.event, Item::ArrayOfTables(ArrayOfTables::new()));
            }
            Some(Item::ArrayOfTables(_)) | Some(Item::Value(toml_edit::Value::Array(_))) => {}
            Some(_) => return Err(format!("`hooks.{}` is not an array of tables", s.event)),
        }
        match hooks.get_mut(s.event) {
            Some(Item::ArrayOfTables(groups)) => {
                let mut handler = Table::new();
                handler.insert("type", value("command"));
                handler.insert("command", value(s.command.as_str()));
                handler.insert("timeout", value(s.timeout as i64));
                let mut handlers = ArrayOfTables::new();
                handlers.push(handler);
                let mut group = Table::new();
                if let Some(m) = s.matcher {
                    group.insert("matcher", value(m));
                }
                group.insert("hooks", Item::ArrayOfTables(handlers));
                groups.push(group);
            }
            Some(Item::Value(toml_edit::Value::Array(groups))) => {
                let mut handler = InlineTable::new();
                handler.insert("type", "command".into());
                handler.insert("command", s.command.as_str().into());
                handler.insert("timeout", (s.timeout as i64).into());
                let mut handlers = toml_edit::Array::new();
                handlers.push(handler);
                let mut group = InlineTable::new();
                if let Some(m) = s.matcher {
                    group.insert("matcher", m.into());
                }
                group.insert("hooks", handlers.into());
                groups.push(group);
            }
            _ => unreachable!("checked above"),
        }
    }
    Ok(())
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

fn save_state(config: &Path, original: Option<&str>) -> CmdResult {
    let state = json!({
        "path": config.to_string_lossy(),
        "existed": original.is_some(),
        "original": original,
    });
    let path = state_path(config)?;
    let text = serde_json::to_string_pretty(&state).expect("JSON serialises");
    // The original may hold API keys: the backups live in a 0700 directory, each 0600.
    let dir = path.parent().expect("the state path has a parent");
    files::create_private_dir(dir).map_err(|e| io_err(dir, e))?;
    files::write_atomic(&path, text.as_bytes(), files::PRIVATE_FILE).map_err(|e| io_err(&path, e))
}

/// (existed, original bytes) saved by install for `config`.
fn load_state(config: &Path) -> CmdResult<Option<(bool, Option<String>)>> {
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
    Ok(Some((
        v["existed"].as_bool().unwrap_or(true),
        v["original"].as_str().map(str::to_owned),
    )))
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
        if tool == AgentTool::Codex {
            say!(
                "Codex runs new hooks only after you review and trust them: open /hooks in Codex."
            );
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
    let plan = match load_state(&path)? {
        Some((false, _)) if now == json!({}) => Plan::Delete,
        Some((true, Some(orig))) if Doc::parse(tool, &orig).is_ok_and(|o| o.canonical() == now) => {
            Plan::Restore(orig)
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
        Plan::Delete => std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_and_quoting_round_trip() {
        for p in [
            "/usr/bin/maestro",
            "/home/a b/maestro",
            "/tmp/it's/maestro",
            "C:/x/maestro.exe",
        ] {
            let cmd = format!("{} session register", shell_quote(p));
            assert_eq!(shell_words(&cmd), vec![p, "session", "register"], "{cmd}");
            assert!(is_ours(&cmd), "{cmd}");
        }
        assert_eq!(shell_words(r#"a "b c" d\ e"#), vec!["a", "b c", "d e"]);
    }

    #[test]
    fn recognises_only_our_commands() {
        assert!(is_ours("maestro session needs-input"));
        assert!(is_ours("/x/maestro approve --tool codex --fallback ask"));
        assert!(!is_ours("maestro session list"));
        assert!(!is_ours("notify-send maestro session register"));
        assert!(!is_ours("/x/maestro-old session register"));
        assert!(!is_ours("maestro session register && rm -rf /"));
        assert!(!is_ours(""));
    }

    #[test]
    fn json_keeps_key_order() {
        let text = r#"{"z": 1, "a": {"y": [1, 2.5, "s"], "b": null}, "m": true}"#;
        let j: J = serde_json::from_str(text).unwrap();
        let out = serde_json::to_string(&j).unwrap();
        assert_eq!(out, r#"{"z":1,"a":{"y":[1,2.5,"s"],"b":null},"m":true}"#);
    }

    #[test]
    fn toml_install_then_strip_is_structurally_the_original() {
        let orig = "model = \"o3\"\n\n[[hooks.Stop]]\n[[hooks.Stop.hooks]]\ntype = \"command\"\ncommand = \"say done\"\n";
        let mut d = Doc::parse(AgentTool::Codex, orig).unwrap();
        d.strip();
        d.add(&specs(AgentTool::Codex, Fallback::Ask, "/bin/maestro"))
            .unwrap();
        let text = d.render();
        assert!(text.starts_with(orig), "{text}");
        let again = Doc::parse(AgentTool::Codex, &text).unwrap();
        assert_eq!(again.found().len(), 4);
        let mut stripped = again.clone();
        stripped.strip();
        assert_eq!(
            stripped.canonical(),
            Doc::parse(AgentTool::Codex, orig).unwrap().canonical()
        );
    }
}
