//! End to end: `maestro hooks install|uninstall|status` on real files, for each agent tool,
//! with HOME and the project in temporary directories.

use crate::support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{BIN, Cli};

struct Env {
    home: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            project: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> support::Out {
        let mut cli = Cli::new(None, self.home.path());
        cli.command()
            .env_remove("CODEX_HOME")
            .current_dir(self.project.path());
        cli.run(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        out.stdout
    }

    fn path(&self, tool: &str, user: bool) -> PathBuf {
        let base = if user {
            self.home.path()
        } else {
            self.project.path()
        };
        base.join(match (tool, user) {
            ("claude-code", false) => ".claude/settings.local.json",
            ("claude-code", true) => ".claude/settings.json",
            ("codex", _) => ".codex/config.toml",
            ("gemini", _) => ".gemini/settings.json",
            _ => unreachable!(),
        })
    }
}

const TOOLS: [&str; 3] = ["claude-code", "codex", "gemini"];

/// A settings file with the user's own hooks and other settings.
fn existing(tool: &str) -> &'static str {
    match tool {
        "codex" => {
            "# my codex config\nmodel = \"gpt-5-codex\"\napproval_policy = \"on-request\"\n\n[[hooks.Stop]]\n[[hooks.Stop.hooks]]\ntype = \"command\"\ncommand = \"notify-send done\"\n\n[mcp_servers.docs]\ncommand = \"docs-mcp\"\n"
        }
        "gemini" => {
            "{\n    \"theme\": \"GitHub\",\n    \"hooks\": {\n        \"AfterAgent\": [\n            { \"hooks\": [ { \"type\": \"command\", \"command\": \"./log.sh\", \"timeout\": 5000 } ] }\n        ]\n    },\n    \"general\": { \"vimMode\": true }\n}\n"
        }
        _ => {
            "{\n  \"permissions\": { \"allow\": [\"Bash(cargo test:*)\"] },\n  \"hooks\": {\n    \"Stop\": [\n      { \"hooks\": [ { \"type\": \"command\", \"command\": \"say done\" } ] }\n    ]\n  },\n  \"zz_last\": 1,\n  \"aa_after\": 2\n}\n"
        }
    }
}

/// The file as generic JSON (TOML converted by hand-rolled reading of the fields we need).
fn parse(tool: &str, text: &str) -> Value {
    if tool == "codex" {
        let doc: toml_edit::DocumentMut = text.parse().expect("valid TOML");
        toml_to_json(doc.as_item())
    } else {
        serde_json::from_str(text).expect("valid JSON")
    }
}

fn toml_to_json(i: &toml_edit::Item) -> Value {
    use toml_edit::{Item, Value as T};
    fn val(v: &T) -> Value {
        match v {
            T::String(s) => Value::from(s.value().clone()),
            T::Integer(i) => Value::from(*i.value()),
            T::Float(f) => Value::from(*f.value()),
            T::Boolean(b) => Value::from(*b.value()),
            T::Datetime(d) => Value::from(d.value().to_string()),
            T::Array(a) => Value::Array(a.iter().map(val).collect()),
            T::InlineTable(t) => {
                Value::Object(t.iter().map(|(k, v)| (k.to_owned(), val(v))).collect())
            }
        }
    }
    match i {
        Item::None => Value::Null,
        Item::Value(v) => val(v),
        Item::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_owned(), toml_to_json(v)))
                .collect(),
        ),
        Item::ArrayOfTables(a) => Value::Array(
            a.iter()
                .map(|t| toml_to_json(&Item::Table(t.clone())))
                .collect(),
        ),
    }
}

/// Events each tool gets, the maestro arguments they run, and the timeout.
fn expected(tool: &str) -> Vec<(&'static str, String, u64)> {
    let s = |a: &str| format!("session {a}");
    match tool {
        "claude-code" => {
            let answered = || "approve --tool claude-code --answered-at-terminal".to_owned();
            vec![
                ("SessionStart", s("register"), 30),
                ("UserPromptSubmit", s("resume-working"), 30),
                ("UserPromptSubmit", answered(), 30),
                ("Stop", s("needs-input"), 30),
                ("Stop", answered(), 30),
                ("Notification", s("needs-input"), 30),
                ("SessionEnd", s("complete"), 30),
                (
                    "PermissionRequest",
                    "approve --tool claude-code --fallback ask".into(),
                    660,
                ),
                ("PostToolUse", answered(), 30),
                ("PostToolUseFailure", answered(), 30),
            ]
        }
        "codex" => vec![
            ("SessionStart", s("register"), 30),
            ("UserPromptSubmit", s("resume-working"), 30),
            ("Stop", s("needs-input"), 30),
            ("SessionEnd", s("complete"), 3),
            (
                "Interrupt",
                "approve --tool codex --answered-at-terminal".into(),
                3,
            ),
            (
                "PermissionRequest",
                "approve --tool codex --fallback ask".into(),
                660,
            ),
        ],
        _ => vec![
            ("SessionStart", s("register"), 30_000),
            ("BeforeAgent", s("resume-working"), 30_000),
            ("AfterAgent", s("needs-input"), 30_000),
            ("Notification", s("needs-input"), 30_000),
            ("SessionEnd", s("complete"), 30_000),
            (
                "BeforeTool",
                "approve --tool gemini --fallback ask".into(),
                660_000,
            ),
        ],
    }
}

/// Checks the documented shape: hooks.<Event> = [{matcher?, hooks: [{type, command, timeout}]}].
fn check_shape(tool: &str, v: &Value, exe: &str) {
    let hooks = v["hooks"].as_object().expect("hooks object");
    for (event, args, timeout) in expected(tool) {
        let groups = hooks[event].as_array().unwrap_or_else(|| panic!("{event}"));
        let ours: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["hooks"].as_array().unwrap().iter())
            .filter(|h| h["command"].as_str().unwrap() == format!("{exe} {args}"))
            .collect();
        assert_eq!(ours.len(), 1, "{tool} {event}: {v:#}");
        let h = ours[0];
        assert_eq!(h["type"], "command");
        assert_eq!(h["command"], format!("{exe} {args}"));
        assert_eq!(h["timeout"], timeout, "{tool} {event}");
        for g in groups {
            assert!(g["hooks"].is_array());
            if let Some(m) = g.get("matcher") {
                assert!(m.is_string());
            }
        }
    }
    if tool == "claude-code" {
        let g = hooks["PermissionRequest"]
            .as_array()
            .unwrap()
            .last()
            .unwrap();
        assert_eq!(g["matcher"], "*");
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn install_merges_is_idempotent_and_uninstall_restores_the_original_bytes() {
    for tool in TOOLS {
        let env = Env::new();
        let path = env.path(tool, false);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, existing(tool)).unwrap();
        let original = read(&path);
        let user_before = parse(tool, existing(tool));

        // --dry-run writes nothing.
        let out = env.ok(&["hooks", "install", tool, "--dry-run"]);
        assert!(out.contains(&path.display().to_string()), "{out}");
        assert_eq!(read(&path), original);

        env.ok(&["hooks", "install", tool]);
        let first = read(&path);
        let v = parse(tool, std::str::from_utf8(&first).unwrap());
        check_shape(tool, &v, BIN);
        // The user's own settings and hooks are all still there, first in their lists.
        for (k, val) in user_before.as_object().unwrap() {
            if k == "hooks" {
                for (event, groups) in val.as_object().unwrap() {
                    let now = v["hooks"][event].as_array().unwrap();
                    assert_eq!(
                        &now[..groups.as_array().unwrap().len()],
                        groups.as_array().unwrap()
                    );
                }
            } else {
                assert_eq!(&v[k], val, "{tool} {k}");
            }
        }
        if tool == "claude-code" {
            // Key order is kept.
            let text = String::from_utf8(first.clone()).unwrap();
            assert!(text.find("zz_last").unwrap() < text.find("aa_after").unwrap());
        }
        // The user's lines are all kept, in their order.
        let text = String::from_utf8(first.clone()).unwrap();
        let mut rest = text.as_str();
        for line in existing(tool)
            .lines()
            .filter(|l| tool == "codex" && !l.is_empty())
        {
            let at = rest
                .find(line)
                .unwrap_or_else(|| panic!("{tool}: lost {line:?}"));
            rest = &rest[at + line.len()..];
        }

        // A second install changes no byte.
        env.ok(&["hooks", "install", tool]);
        assert_eq!(read(&path), first, "{tool}");

        // --dry-run uninstall writes nothing.
        env.ok(&["hooks", "uninstall", tool, "--dry-run"]);
        assert_eq!(read(&path), first);

        env.ok(&["hooks", "uninstall", tool]);
        assert_eq!(read(&path), original, "{tool}: original bytes restored");

        // Uninstalling again is a no-op.
        env.ok(&["hooks", "uninstall", tool]);
        assert_eq!(read(&path), original);
    }
}

#[test]
fn install_into_no_file_creates_it_and_uninstall_deletes_it() {
    for tool in TOOLS {
        for user in [false, true] {
            let env = Env::new();
            let path = env.path(tool, user);
            let mut args = vec!["hooks", "install", tool];
            if user {
                args.push("--user");
            }
            env.ok(&args);
            let v = parse(tool, &std::fs::read_to_string(&path).unwrap());
            check_shape(tool, &v, BIN);
            args[1] = "uninstall";
            env.ok(&args);
            assert!(!path.exists(), "{tool} user={user}: file removed");
        }
    }
}

/// Settings may hold API keys, so the backup install keeps of the original is readable by its
/// owner only (0600 in a 0700 directory), a settings file keeps the mode it had, a new one is
/// 0600, and no temp file is left next to either.
#[cfg(unix)]
#[test]
fn install_keeps_backups_private_and_settings_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let env = Env::new();
    let path = env.path("claude-code", false);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let secret = r#"{"env": {"ANTHROPIC_API_KEY": "sk-secret"}}"#;
    std::fs::write(&path, secret).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    env.ok(&["hooks", "install", "claude-code"]);

    let backups = env.home.path().join(".maestro/hooks");
    assert_eq!(mode(&backups), 0o700);
    let saved = names(&backups);
    assert_eq!(saved.len(), 1, "{saved:?}");
    let backup = backups.join(&saved[0]);
    assert_eq!(mode(&backup), 0o600);
    assert!(
        std::fs::read_to_string(&backup)
            .unwrap()
            .contains("sk-secret")
    );
    assert_eq!(mode(&path), 0o640, "the settings file keeps its mode");
    let beside = names(path.parent().unwrap());
    assert!(!beside.iter().any(|n| n.ends_with(".tmp")), "{beside:?}");

    // A settings file install creates is the owner's alone.
    let user = env.path("gemini", true);
    env.ok(&["hooks", "install", "gemini", "--user"]);
    assert_eq!(mode(&user), 0o600);
}

#[test]
fn a_custom_command_path_is_quoted_and_recognised() {
    let env = Env::new();
    let exe = env.home.path().join("my tools/maestro");
    let exe = exe.to_str().unwrap();
    env.ok(&["hooks", "install", "claude-code", "--command", exe]);
    let path = env.path("claude-code", false);
    let v = parse("claude-code", &std::fs::read_to_string(&path).unwrap());
    assert_eq!(
        v["hooks"]["SessionStart"][0]["hooks"][0]["command"],
        format!("'{exe}' session register")
    );
    env.ok(&["hooks", "install", "claude-code", "--fallback", "deny"]);
    let v = parse("claude-code", &std::fs::read_to_string(&path).unwrap());
    // Reinstalling replaces ours instead of adding a second set.
    assert_eq!(v["hooks"]["SessionStart"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["hooks"]["PermissionRequest"][0]["hooks"][0]["command"],
        format!("{BIN} approve --tool claude-code --fallback deny")
    );
    env.ok(&["hooks", "uninstall", "claude-code"]);
    assert!(!path.exists());
}

#[test]
fn user_changes_after_install_are_kept_by_uninstall() {
    for tool in TOOLS {
        let env = Env::new();
        let path = env.path(tool, false);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, existing(tool)).unwrap();
        env.ok(&["hooks", "install", tool]);
        let mut text = std::fs::read_to_string(&path).unwrap();
        if tool == "codex" {
            text.push_str("\n[profiles.fast]\nmodel = \"o4-mini\"\n");
        } else {
            let mut v: Value = serde_json::from_str(&text).unwrap();
            v["addedLater"] = Value::from(true);
            text = serde_json::to_string_pretty(&v).unwrap();
        }
        std::fs::write(&path, &text).unwrap();
        env.ok(&["hooks", "uninstall", tool]);
        let after = parse(tool, &std::fs::read_to_string(&path).unwrap());
        let mut want = parse(tool, existing(tool));
        if tool == "codex" {
            want["profiles"] = serde_json::json!({"fast": {"model": "o4-mini"}});
        } else {
            want["addedLater"] = Value::from(true);
        }
        assert_eq!(after, want, "{tool}");
    }
}

#[test]
fn a_malformed_file_is_refused_and_left_alone() {
    for tool in TOOLS {
        let env = Env::new();
        let path = env.path(tool, false);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bad: &[u8] = if tool == "codex" {
            b"model = \n[[hooks"
        } else {
            b"{\"hooks\": {,}"
        };
        std::fs::write(&path, bad).unwrap();
        for cmd in ["install", "uninstall"] {
            let out = env.run(&["hooks", cmd, tool]);
            assert_ne!(out.code, 0, "{tool} {cmd}");
            assert!(
                out.stderr.contains(&path.display().to_string()),
                "{tool}: {}",
                out.stderr
            );
            assert_eq!(read(&path), bad);
        }
        assert!(!env.home.path().join(".maestro/hooks").exists());
    }
}

#[test]
fn status_reports_per_tool_and_scope() {
    let env = Env::new();
    env.ok(&["hooks", "install", "claude-code"]);
    env.ok(&["hooks", "install", "gemini", "--user"]);
    let out = env.ok(&["hooks", "status", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let row = |tool: &str, scope: &str| {
        rows.iter()
            .find(|r| r["tool"] == tool && r["scope"] == scope)
            .unwrap()
            .clone()
    };
    let c = row("claude-code", "project");
    assert_eq!(c["installed"], true);
    assert_eq!(c["approvals"]["supported"], true);
    assert_eq!(c["approvals"]["wired"], true);
    assert_eq!(
        c["path"],
        env.path("claude-code", false).display().to_string()
    );
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .contains(&Value::from("PermissionRequest"))
    );
    assert_eq!(row("claude-code", "user")["installed"], false);
    assert_eq!(row("codex", "project")["installed"], false);
    assert_eq!(row("codex", "project")["approvals"]["supported"], true);
    let g = row("gemini", "user");
    assert_eq!(g["installed"], true);
    assert_eq!(g["approvals"]["supported"], true);
    assert_eq!(g["approvals"]["wired"], true);
    assert_eq!(g["events"].as_array().unwrap().len(), 6);
    // Human output too.
    let text = env.ok(&["hooks", "status"]);
    assert!(text.contains("claude-code"), "{text}");
}

/// Uninstall takes away the directory install created for the file (issue 19), and keeps one
/// that holds something else.
#[test]
fn uninstall_removes_the_directories_install_created() {
    let env = Env::new();
    for tool in ["claude-code", "codex", "gemini"] {
        let file = env.path(tool, false);
        let dir = file.parent().unwrap().to_path_buf();
        assert!(!dir.exists(), "{}", dir.display());
        env.ok(&["hooks", "install", tool]);
        assert!(file.exists());
        env.ok(&["hooks", "uninstall", tool]);
        assert!(!dir.exists(), "{tool}: {} stayed", dir.display());
    }
    // A directory that holds something else stays.
    env.ok(&["hooks", "install", "gemini"]);
    let file = env.path("gemini", false);
    let other = file.parent().unwrap().join("GEMINI.md");
    std::fs::write(&other, "notes").unwrap();
    env.ok(&["hooks", "uninstall", "gemini"]);
    assert!(!file.exists());
    assert!(other.exists());
}
