//! `maestro run -- <agent command…>`: runs an agent in a pseudo-terminal and keeps its
//! session truthful for the agent's whole life.
//!
//! 1. Registers the session (`working`), creating it when the server does not know it.
//! 2. Starts the agent in a pty with `MAESTRO_SESSION_ID`, `MAESTRO_PROJECT_ID`,
//!    `MAESTRO_TASK_IDS` and `MAESTRO_SERVER_URL` set, so its hooks report on this session.
//!    Codex's terminal gets `--no-daemon`, so its hooks run with this environment rather than
//!    that of a shared background server ([`super::agent_tools::agent_argv`]).
//!    When stdin is a terminal it is put in raw mode and passed through (resized on
//!    SIGWINCH); otherwise stdin and stdout are plain pipes through the pty. End of input on
//!    a pipe is not forwarded: replies may still arrive from the server.
//! 3. Heartbeats the session every TTL/3 (`POST /api/sessions/:id/heartbeat`); a server
//!    without that route gets one notice and no more beats.
//! 4. Types replies into the agent's terminal: `session:input` events for this session on the
//!    legacy WebSocket (`message` + Enter). The socket reconnects with back-off.
//! 5. Forwards SIGINT (to the terminal's foreground process group, as a terminal would),
//!    SIGTERM and SIGHUP (to the agent's process group).
//! 6. Streams the terminal to the server (`/api/sessions/:id/terminal/host`), so the phone
//!    watches it and, with `operate`, types into it; Stop from the phone or the desktop app
//!    comes back on the same socket and climbs the signal ladder (see [`super::host`]).
//! 7. The moment the agent exits, reports `completed` (status 0), `stopped` (Stop ended it) or
//!    `failed` with the exit status in a timeline entry, then exits with the agent's code
//!    (128+N for signal N).
//!
//! If `maestro run` itself is killed, nothing is reported: the heartbeats stop and the
//! server's liveness sweep fails the session.
//!
//! The PTY, its screen model and the uplink live in [`super::host`], shared with the runner;
//! this module adds the desk: the user's terminal in raw mode, stdin, signals, the reply
//! relay and the session's heartbeats.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use super::host::{self, Agent, AgentExit, Spec, Uplink};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use maestro_client::Client;
use maestro_protocol::{CreateSession, Session, TimelineEvent, UpdateSession};
use portable_pty::PtySize;
use serde_json::{Value, json};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_tungstenite::tungstenite::Message;

use super::context::Context;
use super::output::{CmdResult, now_ms};

/// Heartbeat TTL when neither the server nor `MAESTRO_HEARTBEAT_TTL_MS` says otherwise.
const DEFAULT_TTL_MS: u64 = 15_000;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  maestro run --project proj_1 --task task_1 -- claude
  MAESTRO_SESSION_ID=sess_1 maestro run -- codex --full-auto

Exit code: the agent's (128+N when signal N killed it); 127 when it could not start.
Environment: MAESTRO_HEARTBEAT_TTL_MS (15000), MAESTRO_WS_URL (default: the server URL with ws://).")]
pub struct RunArgs {
    /// A task the session works on (repeatable) [default: MAESTRO_TASK_IDS].
    #[arg(long = "task", value_name = "ID")]
    pub tasks: Vec<String>,
    /// Name of the session when a new one is created.
    #[arg(long)]
    pub name: Option<String>,
    /// The agent's command line (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Notes from `maestro run` itself, on stderr; `\r\n` while the terminal is raw.
#[derive(Debug, Clone, Copy)]
struct Log {
    raw: bool,
}

impl Log {
    fn note(&self, msg: &str) {
        let end = if self.raw { "\r\n" } else { "\n" };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "[maestro] {msg}{end}");
        let _ = err.flush();
    }
}

pub async fn run(ctx: &Context, args: RunArgs) -> CmdResult<i32> {
    // Installed first, so a signal at any point is forwarded rather than killing us.
    let mut sigint = listen(SignalKind::interrupt());
    let mut sigterm = listen(SignalKind::terminate());
    let mut sighup = listen(SignalKind::hangup());
    let mut winch = listen(SignalKind::window_change());
    let client = ctx.client()?;
    let mut ctx = ctx.clone();
    if !args.tasks.is_empty() {
        ctx.task_ids = args.tasks.clone();
    }
    let session = match ctx.session_id.clone() {
        Some(id) => super::session::register(&ctx, &client, &id, args.name.as_deref()).await?,
        None => create_session(&ctx, &client, &args).await?,
    };
    let sid = session.id.clone();

    let tty = std::io::stdin().is_terminal();
    let sink = super::transcript::Sink::create();
    if let Err(e) = &sink {
        Log { raw: false }.note(&format!("the transcript will not be followed: {e}"));
    }
    let spec = Spec {
        argv: super::agent_tools::agent_argv(&args.command),
        cwd: None,
        env: vec![
            ("MAESTRO_SESSION_ID".into(), sid.clone()),
            ("MAESTRO_PROJECT_ID".into(), session.project_id.clone()),
            ("MAESTRO_TASK_IDS".into(), session.task_ids.join(",")),
            ("MAESTRO_SERVER_URL".into(), ctx.server.clone()),
        ]
        .into_iter()
        .chain(sink.as_ref().ok().map(super::transcript::Sink::env))
        .collect(),
        size: if tty {
            terminal_size()
        } else {
            PtySize::default()
        },
        echo: true,
    };
    let agent = match Agent::start(spec) {
        Ok(agent) => agent,
        Err(e) => {
            let log = Log { raw: false };
            log.note(&format!("cannot start {:?}: {e}", args.command[0]));
            let exit = AgentExit {
                code: 127,
                signal: None,
            };
            let why = format!("Agent could not start: {e}");
            if let Err(e) = report_exit(&client, &sid, &exit, false, Some(&why)).await {
                log.note(&format!("could not report the failure: {e}"));
            }
            return Ok(exit.code);
        }
    };

    let raw = if tty {
        RawMode::enable()
    } else {
        RawMode(None)
    };
    let log = Log {
        raw: raw.0.is_some(),
    };
    forward_stdin(agent.clone());

    let stop = tokio_util::sync::CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat(client.clone(), sid.clone(), log));
    // Sockets cannot retry after a 401: they carry the credential from the start.
    let credential = client.socket_credential().await;
    let replies = tokio::spawn(relay_replies(
        ctx.ws_url(),
        credential.clone(),
        sid.clone(),
        agent.clone(),
        log,
    ));
    let uplink = tokio::spawn(host::run_uplink(
        agent.clone(),
        Uplink {
            ws_base: host::ws_base(&ctx.server),
            token: credential,
            session_id: sid.clone(),
            replies: false,
        },
        stop.clone(),
        move |msg| log.note(msg),
    ));
    // The work tree is this directory, on this machine: report its changes for review.
    let stop_changes = tokio_util::sync::CancellationToken::new();
    let changes = std::env::current_dir().ok().map(|dir| {
        tokio::spawn(super::changes::report_changes(
            client.clone(),
            super::changes::Watch {
                dir,
                base: None,
                session_id: sid.clone(),
                machine_id: std::env::var("MAESTRO_MACHINE_ID")
                    .ok()
                    .filter(|m| maestro_protocol::ids::is_valid_id(m))
                    .unwrap_or_else(maestro_server::util::machine_id),
            },
            stop_changes.clone(),
        ))
    });

    let stop_transcript = tokio_util::sync::CancellationToken::new();
    let transcript = sink.ok().map(|sink| {
        tokio::spawn(super::transcript::follow(
            client.clone(),
            sid.clone(),
            sink,
            stop_transcript.clone(),
        ))
    });

    let status = loop {
        tokio::select! {
            status = agent.wait() => break status,
            _ = recv(&mut sigint) => agent.signal_foreground(rustix::process::Signal::INT),
            _ = recv(&mut sigterm) => agent.signal_agent(rustix::process::Signal::TERM),
            _ = recv(&mut sighup) => agent.signal_agent(rustix::process::Signal::HUP),
            _ = recv(&mut winch) => {
                if tty {
                    agent.resize(terminal_size());
                }
            }
        }
    };
    heartbeats.abort();
    replies.abort();
    if let Some(task) = changes {
        super::changes::finish(task, &stop_changes).await;
    }
    // Let the last output reach the terminal (and the server) before reporting.
    agent.drain_output(Duration::from_secs(2)).await;
    if let Err(e) = report_exit(&client, &sid, &status, agent.stop_requested(), None).await {
        log.note(&format!(
            "could not report the agent's exit to the server: {e}"
        ));
    }
    // The uplink sends the last output and the exit as soon as it sees the agent end; give it
    // a moment, then close it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    stop_transcript.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), uplink).await;
    if let Some(transcript) = transcript {
        let _ = tokio::time::timeout(Duration::from_secs(5), transcript).await;
    }
    drop(raw);
    Ok(status.code)
}

/// Creates a new session (no id given): the server picks the id.
async fn create_session(ctx: &Context, c: &Client, args: &RunArgs) -> CmdResult<Session> {
    let project = ctx.project().map_err(|e| {
        e.with_hint("`maestro run` needs a session (--session) or a project to create one in.")
    })?;
    let program = std::path::Path::new(&args.command[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.command[0].clone());
    let req = CreateSession {
        project_id: Some(project.to_owned()),
        task_ids: Some(ctx.task_ids.clone()),
        name: Some(
            args.name
                .clone()
                .unwrap_or_else(|| format!("run: {program}")),
        ),
        status: Some("working".into()),
        metadata: Some(
            json!({ "mode": ctx.mode, "launcher": "maestro run", "command": args.command }),
        ),
        ..Default::default()
    };
    c.create_session(&req).await.map_err(|e| ctx.err(e))
}

/// Reports the agent's end: `completed` for status 0, else `failed`, with a timeline entry
/// carrying the exit status.
async fn report_exit(
    c: &Client,
    sid: &str,
    exit: &AgentExit,
    stopped: bool,
    message: Option<&str>,
) -> maestro_client::Result<Session> {
    let now = now_ms();
    let (status, kind) = if stopped {
        ("stopped", "session_stopped")
    } else if exit.success() {
        ("completed", "session_stopped")
    } else {
        ("failed", "error")
    };
    let message = match (message, stopped) {
        (Some(m), _) => m.to_owned(),
        (None, true) => "Stopped".to_owned(),
        (None, false) => exit.describe(),
    };
    let entry: TimelineEvent = serde_json::from_value(json!({
        "id": format!("evt-{now}"),
        "type": kind,
        "timestamp": now,
        "message": message,
        "metadata": { "exitCode": exit.code, "signal": exit.signal, "source": "maestro run" },
    }))
    .expect("a valid timeline entry");
    let mut req = UpdateSession {
        status: Some(status.into()),
        timeline: Some(vec![entry]),
        ..Default::default()
    };
    req.other.insert("completedAt".into(), json!(now));
    c.update_session(sid, &req).await
}

/// Copies stdin to the agent's terminal until stdin ends. A key typed at the desk takes
/// control back from a remote viewer.
fn forward_stdin(agent: std::sync::Arc<Agent>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    agent.note_desk_input();
                    if !agent.write_blocking(buf[..n].to_vec()) {
                        break;
                    }
                }
            }
        }
    });
}

/// Beats every TTL/3 for as long as it runs (it is aborted when the agent exits).
async fn heartbeat(client: Client, sid: String, log: Log) {
    let mut ttl = std::env::var("MAESTRO_HEARTBEAT_TTL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(DEFAULT_TTL_MS);
    let mut failing = false;
    loop {
        match client.heartbeat(&sid).await {
            Ok(reply) => {
                if let Some(t) = reply
                    .get("ttlMs")
                    .and_then(Value::as_u64)
                    .filter(|&t| t > 0)
                {
                    ttl = t;
                }
                if failing {
                    log.note("heartbeats are getting through again");
                    failing = false;
                }
            }
            Err(e) if e.is_route_missing() => {
                log.note(
                    "this server does not support heartbeats (POST /api/sessions/:id/heartbeat); \
                     the agent keeps running, but its liveness is not tracked",
                );
                return;
            }
            Err(e) => {
                if !failing {
                    log.note(&format!("heartbeat failed ({e}); still trying"));
                    failing = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis((ttl / 3).max(100))).await;
    }
}

/// Types `session:input` replies for `sid` into the agent's terminal, reconnecting the
/// WebSocket with back-off when it drops.
async fn relay_replies(
    url: String,
    token: Option<String>,
    sid: String,
    agent: std::sync::Arc<Agent>,
    log: Log,
) {
    let mut backoff = Duration::from_secs(1);
    let mut warned = false;
    loop {
        let connected = match super::host::ws_request(&url, token.as_deref()) {
            Ok(request) => tokio_tungstenite::connect_async(request)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match connected {
            Ok((mut ws, _)) => {
                backoff = Duration::from_secs(1);
                let sub = json!({ "type": "subscribe", "sessionIds": [sid] });
                if ws.send(Message::text(sub.to_string())).await.is_ok() {
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(text) = msg else { continue };
                        if let Some(reply) = session_input(&text, &sid) {
                            let mut bytes = reply.into_bytes();
                            bytes.push(b'\r');
                            if !agent.write(bytes) {
                                return;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                if !warned {
                    log.note(&format!(
                        "cannot open the WebSocket at {url} ({e}); replies will reach the agent once it can"
                    ));
                    warned = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The reply text of a `session:input` frame addressed to `sid`.
fn session_input(frame: &str, sid: &str) -> Option<String> {
    let v: Value = serde_json::from_str(frame).ok()?;
    let event = v.get("event").or_else(|| v.get("type"))?.as_str()?;
    if event != "session:input" {
        return None;
    }
    let data = v.get("data")?;
    if data.get("sessionId")?.as_str()? != sid {
        return None;
    }
    data.get("message")?.as_str().map(str::to_owned)
}

fn listen(kind: SignalKind) -> Option<Signal> {
    signal(kind).ok()
}

/// Waits for the next signal; forever when the handler could not be installed.
async fn recv(sig: &mut Option<Signal>) {
    match sig {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The size of the user's terminal, or 24×80.
fn terminal_size() -> PtySize {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()));
    match ws {
        Ok(ws) if ws.ws_row > 0 && ws.ws_col > 0 => PtySize {
            rows: ws.ws_row,
            cols: ws.ws_col,
            pixel_width: ws.ws_xpixel,
            pixel_height: ws.ws_ypixel,
        },
        _ => PtySize::default(),
    }
}

/// The user's terminal in raw mode while the agent runs; restored on drop.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enable() -> Self {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(original) = tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = original.clone();
        raw.make_raw();
        match tcsetattr(&stdin, OptionalActions::Now, &raw) {
            Ok(()) => Self(Some(original)),
            Err(_) => Self(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(original) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                original,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_session_input_for_this_session_only() {
        let frame = |sid: &str| {
            json!({
                "type": "session:input", "event": "session:input",
                "data": { "sessionId": sid, "message": "yes, go on", "mailId": "mail_1", "timestamp": 1 },
                "timestamp": 1,
            })
            .to_string()
        };
        assert_eq!(
            session_input(&frame("s1"), "s1").as_deref(),
            Some("yes, go on")
        );
        assert_eq!(session_input(&frame("s2"), "s1"), None);
        assert_eq!(
            session_input(r#"{"type":"subscribed","sessionIds":["s1"]}"#, "s1"),
            None
        );
        assert_eq!(session_input("not json", "s1"), None);
    }
}
