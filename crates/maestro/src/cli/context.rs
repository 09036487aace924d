//! Who the CLI is talking to and on whose behalf: server discovery, the agent's context
//! (session, project, tasks) and credentials, resolved once per invocation.
//!
//! Precedence is upstream's: `--server`, then `MAESTRO_SERVER_URL`, `MAESTRO_API_URL`,
//! `$DATA_DIR/server-url` (only when `DATA_DIR` is set), then `http://localhost:3000`.
//! `~/.maestro/config` is a `KEY=value` file (upstream loaded it as a dotenv file): its keys
//! stand in for unset environment variables, and `token=` holds the API token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use maestro_client::{Client, RetryPolicy};

use super::output::CliError;

/// The default server when nothing else says where it is.
pub const DEFAULT_SERVER: &str = "http://localhost:3000";

/// Flags every command accepts (before or after the subcommand).
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Print JSON: {"success":true,"data":…} or {"success":false,"error":…,"message":…}.
    #[arg(long, global = true)]
    pub json: bool,
    /// Server URL [default: MAESTRO_SERVER_URL, MAESTRO_API_URL, $DATA_DIR/server-url,
    /// http://localhost:3000].
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Project id [default: MAESTRO_PROJECT_ID].
    #[arg(long, global = true, value_name = "ID")]
    pub project: Option<String>,
    /// Session id [default: MAESTRO_SESSION_ID].
    #[arg(long, global = true, value_name = "ID")]
    pub session: Option<String>,
}

/// Everything a command needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Context {
    pub json: bool,
    /// Base URL of the server, without `/api`.
    pub server: String,
    pub project_id: Option<String>,
    pub session_id: Option<String>,
    /// `MAESTRO_TASK_IDS`.
    pub task_ids: Vec<String>,
    /// `MAESTRO_MODE`, default `execute`.
    pub mode: String,
    token: Option<String>,
    /// This machine's owner token, tried when the server refuses a request without a token.
    owner_token: Option<String>,
    retry: RetryPolicy,
}

/// Reads variables from the environment, then from `~/.maestro/config`.
struct Vars {
    config: HashMap<String, String>,
}

impl Vars {
    fn load() -> Self {
        let config = home()
            .map(|h| h.join(".maestro").join("config"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|text| parse_config(&text))
            .unwrap_or_default();
        Self { config }
    }

    /// A non-empty value of `name`.
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.config.get(name).cloned())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

impl Context {
    /// Resolves the context from flags, environment and config file.
    pub fn resolve(args: GlobalArgs) -> Self {
        let vars = Vars::load();
        let server = resolve_server(args.server.as_deref(), |k| vars.get(k));
        let owner_token = owner_token(&server, |k| vars.get(k));
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let retries = vars
            .get("MAESTRO_RETRIES")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let delay_ms = vars
            .get("MAESTRO_RETRY_DELAY")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        Self {
            json: args.json,
            server,
            project_id: nonempty(args.project).or_else(|| vars.get("MAESTRO_PROJECT_ID")),
            session_id: nonempty(args.session).or_else(|| vars.get("MAESTRO_SESSION_ID")),
            task_ids: split_ids(&vars.get("MAESTRO_TASK_IDS").unwrap_or_default()),
            mode: vars.get("MAESTRO_MODE").unwrap_or_else(|| "execute".into()),
            token: vars
                .get("MAESTRO_TOKEN")
                .or_else(|| vars.config.get("token").cloned())
                .filter(|t| !t.is_empty()),
            owner_token,
            retry: RetryPolicy {
                retries,
                base_delay: Duration::from_millis(delay_ms),
            },
        }
    }

    /// The API token and this machine's owner token, as [`Context::client`] uses them.
    pub fn tokens(&self) -> (Option<String>, Option<String>) {
        (self.token.clone(), self.owner_token.clone())
    }

    /// A client for the server, with the token and the retry policy.
    pub fn client(&self) -> Result<Client, CliError> {
        let client = Client::new(&self.server)
            .map_err(|e| CliError::from_client(e, &self.server))?
            .with_retries(self.retry);
        let client = match &self.owner_token {
            Some(t) => client.with_fallback_token(t.clone()),
            None => client,
        };
        Ok(match &self.token {
            Some(t) => client.with_token(t.clone()),
            None => client,
        })
    }

    /// The current session, or an error saying how to set it.
    pub fn session(&self) -> Result<&str, CliError> {
        self.session_id.as_deref().ok_or_else(CliError::no_session)
    }

    /// The current project, or an error saying how to set it.
    pub fn project(&self) -> Result<&str, CliError> {
        self.project_id.as_deref().ok_or_else(CliError::no_project)
    }

    /// Maps a client error for this server.
    pub fn err(&self, e: maestro_client::Error) -> CliError {
        CliError::from_client(e, &self.server)
    }

    /// The legacy WebSocket URL: `MAESTRO_WS_URL`, or the server URL with `http` → `ws`.
    pub fn ws_url(&self) -> String {
        if let Ok(url) = std::env::var("MAESTRO_WS_URL")
            && !url.trim().is_empty()
        {
            return url.trim().to_owned();
        }
        format!("{}/", maestro_client::websocket_base(&self.server))
    }
}

/// The server's owner token (`$DATA_DIR/owner-token`, written by `maestro serve` for this
/// machine's user), for a server on this machine only: it is an admin credential and never
/// leaves the machine. It matters when the server runs with `AUTH=required`.
///
/// The client sends it only after the server proves it holds it (see
/// `maestro_client::Client::with_fallback_token`).
fn owner_token(server: &str, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let url = url::Url::parse(server).ok()?;
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let local = match url.host()? {
        url::Host::Domain(name) => name == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    if !local {
        return None;
    }
    let dir = expand_home(&var("DATA_DIR").unwrap_or_else(|| "~/.maestro/data".into()));
    let token = std::fs::read_to_string(dir.join("owner-token")).ok()?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Applies upstream's discovery order; `var` reads one (non-empty) variable.
pub fn resolve_server(flag: Option<&str>, var: impl Fn(&str) -> Option<String>) -> String {
    let found = flag
        .map(str::to_owned)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| var("MAESTRO_SERVER_URL"))
        .or_else(|| var("MAESTRO_API_URL"))
        .or_else(|| {
            let dir = expand_home(&var("DATA_DIR")?);
            let url = std::fs::read_to_string(dir.join("server-url")).ok()?;
            Some(url.trim().to_owned()).filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let url = found.trim().trim_end_matches('/');
    // Upstream's MAESTRO_API_URL sometimes carried the `/api` suffix; the CLI adds it itself.
    url.strip_suffix("/api").unwrap_or(url).to_owned()
}

/// `a, b,,c` → `[a, b, c]`.
pub fn split_ids(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `KEY=value` lines; `#` comments, blank lines, `export ` prefixes and quotes are allowed.
fn parse_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), home()) {
        (Some(rest), Some(h)) => h.join(rest),
        _ if path == "~" => home().unwrap_or_else(|| PathBuf::from(path)),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn server_discovery_follows_upstream_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server-url"), "http://127.0.0.1:4567\n").unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let all = [
            ("MAESTRO_SERVER_URL", "http://a:1"),
            ("MAESTRO_API_URL", "http://b:2/api"),
            ("DATA_DIR", data_dir),
        ];
        assert_eq!(
            resolve_server(Some("http://flag:9/"), vars(&all)),
            "http://flag:9"
        );
        assert_eq!(resolve_server(None, vars(&all)), "http://a:1");
        assert_eq!(resolve_server(None, vars(&all[1..])), "http://b:2");
        assert_eq!(
            resolve_server(None, vars(&all[2..])),
            "http://127.0.0.1:4567"
        );
        assert_eq!(resolve_server(None, vars(&[])), DEFAULT_SERVER);
        // A DATA_DIR without the file falls through to the default.
        let empty = tempfile::tempdir().unwrap();
        let only_dir = [("DATA_DIR", empty.path().to_str().unwrap())];
        assert_eq!(resolve_server(None, vars(&only_dir)), DEFAULT_SERVER);
    }

    #[test]
    fn parses_config_files() {
        let c = parse_config(
            "# comment\ntoken=abc\nexport MAESTRO_SERVER_URL=\"http://x:1\"\n\nbad line\n",
        );
        assert_eq!(c.get("token").map(String::as_str), Some("abc"));
        assert_eq!(
            c.get("MAESTRO_SERVER_URL").map(String::as_str),
            Some("http://x:1")
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn splits_task_lists() {
        assert_eq!(split_ids(" a, b,,c ,"), ["a", "b", "c"]);
        assert!(split_ids("").is_empty());
    }

    #[test]
    fn websocket_url_follows_the_server() {
        let mut ctx = Context::resolve(GlobalArgs::default());
        ctx.server = "http://127.0.0.1:3000".into();
        if std::env::var_os("MAESTRO_WS_URL").is_none() {
            assert_eq!(ctx.ws_url(), "ws://127.0.0.1:3000/");
            ctx.server = "https://m.example".into();
            assert_eq!(ctx.ws_url(), "wss://m.example/");
        }
    }
}
