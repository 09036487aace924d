//! How commands print: human text by default, upstream's JSON envelope with `--json`, and
//! one error type that knows its exit code.
//!
//! JSON output (success and failure alike) goes to stdout, as upstream's CLI did, so a
//! caller reads one stream: `{"success":true,"data":…}` or
//! `{"success":false,"error":"<code>","message":"…"}`. Human errors go to stderr.

use std::fmt::Display;
use std::io::Write;

use maestro_client::Error as ClientError;
use serde::Serialize;
use serde_json::Value;

/// Exit codes, as documented in `maestro --help`.
pub mod exit {
    /// The command did what it was asked.
    pub const OK: i32 = 0;
    /// The server answered no: not found, invalid, conflict, unsupported, server error.
    pub const FAILED: i32 = 1;
    /// Bad flags or arguments, or missing context (no session or project).
    pub const USAGE: i32 = 2;
    /// The server could not be reached.
    pub const UNREACHABLE: i32 = 3;
}

/// Help text listing the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the server said no (not found, invalid input, conflict, unsupported, server error)
  2  usage error: bad flags or arguments, or missing context (no session or project)
  3  cannot reach the server
  `maestro run` exits with the agent's own exit code (128+N when a signal N killed it).

Environment: MAESTRO_SERVER_URL, MAESTRO_API_URL, DATA_DIR (server-url file), MAESTRO_SESSION_ID,
MAESTRO_PROJECT_ID, MAESTRO_TASK_IDS, MAESTRO_MODE, MAESTRO_TOKEN (or token= in ~/.maestro/config),
MAESTRO_RETRIES (3), MAESTRO_RETRY_DELAY (200 ms), MAESTRO_DEBUG.";

/// Writes one line to stdout, ignoring a closed pipe (`maestro task list | head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// A failed command: a stable code for `--json`, a message, a hint saying what to do, and
/// the process exit code.
#[derive(Debug, Clone, PartialEq)]
pub struct CliError {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
    pub exit: i32,
    pub details: Option<Value>,
}

impl CliError {
    pub fn new(code: &'static str, exit: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
            exit,
            details: None,
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new("invalid_argument", exit::USAGE, message)
    }

    /// A local failure that is not the server's (exit 1), e.g. an unreadable file.
    pub fn failed(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(code, exit::FAILED, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// No session in the context.
    pub fn no_session() -> Self {
        Self::new(
            "no_context",
            exit::USAGE,
            "No session: set MAESTRO_SESSION_ID or pass --session <id>",
        )
    }

    /// No project in the context.
    pub fn no_project() -> Self {
        Self::new(
            "no_context",
            exit::USAGE,
            "No project: set MAESTRO_PROJECT_ID or pass --project <id>",
        )
    }

    /// The server has no route for `what` (it predates the feature).
    pub fn unsupported(what: &str, route: &str) -> Self {
        Self::new(
            "unsupported",
            exit::FAILED,
            format!("This server does not support {what} ({route} is not served)"),
        )
        .with_hint("Upgrade the Maestro server to use this command.")
    }

    /// Maps a client error, naming `server` when it could not be reached.
    pub fn from_client(err: ClientError, server: &str) -> Self {
        match err {
            ClientError::Transport(e) => {
                let code = if e.is_connect() {
                    "connection_refused"
                } else {
                    "network_error"
                };
                Self::new(
                    code,
                    exit::UNREACHABLE,
                    format!(
                        "Cannot reach the Maestro server at {server}: {}",
                        root_cause(&e)
                    ),
                )
                .with_hint(
                    "Is `maestro serve` running? Point the CLI at it with --server <url> or \
                     MAESTRO_SERVER_URL.",
                )
            }
            ClientError::BadUrl(why) => Self::usage(format!("Invalid server URL {why}")),
            e @ ClientError::NotOurServer(_) => {
                Self::new("not_our_server", exit::FAILED, e.to_string()).with_hint(
                    "Check --server / MAESTRO_SERVER_URL, or set MAESTRO_TOKEN to a token of that \
                     server.",
                )
            }
            ClientError::Api { status, body } => {
                let mut e = Self::for_status(status.as_u16(), body.message);
                e.details = body.details;
                e
            }
            ClientError::UnexpectedBody { status, text } => {
                let text = if text.trim().is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {}", text.trim())
                };
                Self::for_status(status.as_u16(), text)
            }
        }
    }

    fn for_status(status: u16, message: String) -> Self {
        let (code, hint) = match status {
            400 | 422 => (
                "invalid_request",
                Some("Check the command's arguments and try again."),
            ),
            401 => (
                "unauthorized",
                Some(
                    "Set MAESTRO_TOKEN (make one with `maestro token create`) or token=<token> in ~/.maestro/config; on the server's own machine, set DATA_DIR so the CLI finds $DATA_DIR/owner-token.",
                ),
            ),
            403 => ("permission_denied", None),
            404 => (
                "resource_not_found",
                Some("Use the list commands to see what exists."),
            ),
            409 => ("conflict", None),
            500..=599 => (
                "server_error",
                Some("Check the server's log, or try again."),
            ),
            _ => ("http_error", None),
        };
        let e = Self::new(code, exit::FAILED, message);
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }

    /// Prints the error the way the output mode asks for.
    pub fn print(&self, json: bool) {
        if json {
            print_json(&Failure {
                success: false,
                error: self.code,
                message: &self.message,
                details: self.details.as_ref(),
                suggestion: self.hint.as_deref(),
            });
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "Error: {}", self.message);
            if let Some(h) = &self.hint {
                let _ = writeln!(err, "  {h}");
            }
        }
    }
}

impl Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Result of a command.
pub type CmdResult<T = ()> = Result<T, CliError>;

/// Upstream's success envelope (fields in upstream's order).
#[derive(Serialize)]
struct Success<'a, T: ?Sized> {
    success: bool,
    data: &'a T,
}

/// Upstream's failure envelope.
#[derive(Serialize)]
struct Failure<'a> {
    success: bool,
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suggestion: Option<&'a str>,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    let text = serde_json::to_string_pretty(value).expect("wire types serialise");
    say!("{text}");
}

/// Prints `data` in the success envelope with `--json`, or runs `human` otherwise.
pub fn emit<T: Serialize + ?Sized>(json: bool, data: &T, human: impl FnOnce()) {
    if json {
        print_json(&Success {
            success: true,
            data,
        });
    } else {
        human();
    }
}

/// `Key: value`.
pub fn kv(key: &str, value: impl Display) {
    say!("{key}: {value}");
}

/// A left-aligned table with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        say!("{}", out.trim_end());
    };
    line(headers);
    let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rules.iter().map(String::as_str).collect::<Vec<_>>());
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// Shortens `s` to `max` characters, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(1_739_800_000_000), "2025-02-17 13:46:40Z");
        assert_eq!(fmt_time(951_782_400_000), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo wörld", 5), "héll…");
    }

    #[test]
    fn statuses_map_to_codes_and_exits() {
        let e = CliError::for_status(404, "Task with id 'x' not found".into());
        assert_eq!((e.code, e.exit), ("resource_not_found", exit::FAILED));
        assert_eq!(CliError::for_status(409, String::new()).code, "conflict");
        assert_eq!(
            CliError::for_status(503, String::new()).code,
            "server_error"
        );
        assert_eq!(CliError::no_session().exit, exit::USAGE);
    }
}
