//! Hosting one agent: its pseudo-terminal, its parsed screen, the uplink that streams the
//! terminal to the server, and the signal ladder that stops it. `maestro run` (an agent at a
//! desk) and the runner (agents started from a spawn) share this code.
//!
//! Output flows one way and never waits on the network: a thread drains the PTY, copies to
//! the local terminal when there is one, feeds the screen model and appends to a bounded
//! queue. The uplink task sends that queue over the WebSocket; when the queue overflows (a
//! slow or absent network) it is dropped, and the uplink sends a fresh `hello` and the whole
//! screen instead of the bytes in between. The screen and the queue change under one lock, so
//! a snapshot plus the bytes queued after it are exactly the output.
//!
//! Stop (the server's `{"type":"stop"}`, or [`Agent::stop`]) is a ladder on the agent's
//! process group: SIGINT to the terminal's foreground group, then SIGTERM, then SIGKILL, each
//! after the grace period, until the agent has exited.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use portable_pty::{CommandBuilder, MasterPty, PtySize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Bytes of output the uplink may fall behind before it resynchronises with a snapshot.
pub const UPLINK_QUEUE_BYTES: usize = 1024 * 1024;

/// Chunks of input waiting for an agent that does not read its terminal; remote input beyond
/// them is dropped rather than held (see [`Agent::write`]).
pub const INPUT_QUEUE_CHUNKS: usize = 256;

/// Lines of scrollback the host's screen model keeps (the server keeps its own).
const SCREEN_SCROLLBACK_LINES: usize = 0;

/// How the agent ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentExit {
    /// The code to exit with (128+N when signal N killed the agent).
    pub code: i32,
    /// The signal that killed the agent, if one did.
    pub signal: Option<i32>,
}

impl AgentExit {
    pub fn from_std(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self { code, signal: None },
            (None, Some(sig)) => Self {
                code: 128 + sig,
                signal: Some(sig),
            },
            (None, None) => Self {
                code: 1,
                signal: None,
            },
        }
    }

    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none()
    }

    pub fn describe(&self) -> String {
        match self.signal {
            Some(sig) => format!("Agent was killed by signal {sig}"),
            None => format!("Agent exited with status {}", self.code),
        }
    }
}

/// What to start.
pub struct Spec {
    pub argv: Vec<String>,
    pub cwd: Option<std::path::PathBuf>,
    pub env: Vec<(String, String)>,
    pub size: PtySize,
    /// Copy the agent's output to this process's stdout (an agent at a desk).
    pub echo: bool,
}

/// Output waiting for the uplink, and the screen it leads to.
struct Shared {
    screen: vt100::Parser,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    /// The queue overflowed and was dropped: the uplink must send a fresh screen.
    overflowed: bool,
}

/// A running agent.
pub struct Agent {
    pub pid: Option<u32>,
    master: Mutex<Box<dyn MasterPty + Send>>,
    input: mpsc::SyncSender<Vec<u8>>,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    exited: watch::Receiver<Option<AgentExit>>,
    output_done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// Stop was asked for (the session then ends `stopped`).
    stop_requested: AtomicBool,
    /// Remote input arrived since the desk last typed (the desk's next key takes control back).
    remote_typed: AtomicBool,
    /// The desk typed after remote input: the uplink tells the server the desk has control.
    desk_takes_control: AtomicBool,
    /// The local terminal decides the size (remote resizes are ignored).
    pub local_size: bool,
}

impl Agent {
    /// Starts the agent in a new pseudo-terminal.
    pub fn start(spec: Spec) -> anyhow::Result<Arc<Agent>> {
        let pty = portable_pty::native_pty_system();
        let pair = pty.openpty(spec.size)?;
        let mut cmd = CommandBuilder::new(&spec.argv[0]);
        cmd.args(&spec.argv[1..]);
        if let Some(dir) = &spec.cwd {
            cmd.cwd(dir);
        } else if let Ok(dir) = std::env::current_dir() {
            cmd.cwd(dir);
        }
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = pair.slave.spawn_command(cmd)?;
        // The agent holds the slave side now; once it (and its children) exit, reads on the
        // master side end.
        drop(pair.slave);
        let master = pair.master;
        let pid = child.process_id();
        let (exit_tx, exit_rx) = watch::channel(None);
        std::thread::spawn(move || {
            let _ = exit_tx.send(Some(wait_agent(child)));
        });
        let shared = Arc::new(Mutex::new(Shared {
            screen: vt100::Parser::new(
                nonzero(spec.size.rows),
                nonzero(spec.size.cols),
                SCREEN_SCROLLBACK_LINES,
            ),
            queue: VecDeque::new(),
            queued: 0,
            overflowed: false,
        }));
        let wake = Arc::new(Notify::new());
        let reader = master.try_clone_reader()?;
        let output_done = pump_output(reader, shared.clone(), wake.clone(), spec.echo);
        let input = spawn_input_writer(master.take_writer()?);
        Ok(Arc::new(Agent {
            pid,
            master: Mutex::new(master),
            input,
            shared,
            wake,
            exited: exit_rx,
            output_done: Mutex::new(Some(output_done)),
            stop_requested: AtomicBool::new(false),
            remote_typed: AtomicBool::new(false),
            desk_takes_control: AtomicBool::new(false),
            local_size: spec.echo,
        }))
    }

    /// Types remote bytes (a viewer's keys, a reply) into the agent's terminal without ever
    /// waiting: when the agent has not read [`INPUT_QUEUE_CHUNKS`] chunks, these are dropped.
    /// False once the agent's terminal is gone.
    pub fn write(&self, bytes: Vec<u8>) -> bool {
        match self.input.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(_)) => {
                tracing::debug!(pid = ?self.pid, "the agent reads no input; keys dropped");
                true
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Types the desk's keys, waiting while the agent does not read (as a terminal does).
    pub fn write_blocking(&self, bytes: Vec<u8>) -> bool {
        self.input.send(bytes).is_ok()
    }

    pub fn resize(&self, size: PtySize) {
        let _ = self.master.lock().expect("pty lock").resize(size);
        self.shared
            .lock()
            .expect("screen lock")
            .screen
            .screen_mut()
            .set_size(nonzero(size.rows), nonzero(size.cols));
    }

    /// The terminal's foreground process group (what Ctrl-C reaches), or the agent.
    fn foreground(&self) -> Option<i32> {
        self.master
            .lock()
            .expect("pty lock")
            .process_group_leader()
            .or_else(|| self.pid.and_then(|p| i32::try_from(p).ok()))
    }

    pub fn signal_foreground(&self, sig: rustix::process::Signal) {
        signal_group(self.foreground(), sig);
    }

    pub fn signal_agent(&self, sig: rustix::process::Signal) {
        signal_group(self.pid.and_then(|p| i32::try_from(p).ok()), sig);
    }

    /// Waits until the agent exits.
    pub async fn wait(&self) -> AgentExit {
        let mut rx = self.exited.clone();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return AgentExit {
                    code: 1,
                    signal: None,
                };
            }
        }
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Relaxed)
    }

    /// The signal ladder: interrupt, terminate, kill, `grace` apart, until the agent exits.
    pub async fn stop(&self, grace: Duration) {
        use rustix::process::Signal;
        self.stop_requested.store(true, Ordering::Relaxed);
        for step in 0..3 {
            if self.has_exited() {
                return;
            }
            tracing::debug!(pid = ?self.pid, step, "stopping the agent");
            match step {
                0 => self.signal_foreground(Signal::INT),
                1 => self.signal_agent(Signal::TERM),
                _ => self.signal_agent(Signal::KILL),
            }
            if tokio::time::timeout(grace, self.wait()).await.is_ok() {
                return;
            }
        }
    }

    /// Waits (bounded) for the last output to be read after the agent exited.
    pub async fn drain_output(&self, bound: Duration) {
        let done = self.output_done.lock().expect("lock").take();
        if let Some(done) = done {
            let _ = tokio::time::timeout(bound, done).await;
        }
    }

    /// The screen as output that redraws it, with its size, and the queue emptied: what a new
    /// uplink connection starts with.
    fn snapshot(&self) -> (u16, u16, Vec<u8>) {
        let mut s = self.shared.lock().expect("screen lock");
        s.queue.clear();
        s.queued = 0;
        s.overflowed = false;
        let (rows, cols) = s.screen.screen().size();
        let mut bytes = b"\x1b[H\x1b[2J".to_vec();
        bytes.extend(s.screen.screen().state_formatted().into_bytes());
        (cols.get(), rows.get(), bytes)
    }

    /// Output queued since the last call, or `None` when the queue overflowed (resync).
    fn take_output(&self) -> Option<Vec<Vec<u8>>> {
        let mut s = self.shared.lock().expect("screen lock");
        if s.overflowed {
            return None;
        }
        s.queued = 0;
        Some(s.queue.drain(..).collect())
    }

    /// The desk typed: control goes back to the desk if a remote viewer had typed.
    pub fn note_desk_input(&self) {
        if self.remote_typed.swap(false, Ordering::Relaxed) {
            self.desk_takes_control.store(true, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Whether the uplink should announce that the desk took control.
    fn take_desk_control(&self) -> bool {
        self.desk_takes_control.swap(false, Ordering::Relaxed)
    }
}

/// Where the uplink connects, and with what.
#[derive(Clone)]
pub struct Uplink {
    /// `ws://host:port` (no path).
    pub ws_base: String,
    pub token: Option<String>,
    pub session_id: String,
    /// Ask the server to type `session:input` replies into this terminal (runners; `maestro
    /// run` at a desk has its own reply relay).
    pub replies: bool,
}

/// Streams the agent's terminal to the server until `stop` is cancelled, reconnecting with
/// back-off. Commands from the server (input, resize, stop) are applied to the agent.
pub async fn run_uplink(
    agent: Arc<Agent>,
    up: Uplink,
    stop: tokio_util::sync::CancellationToken,
    desk_note: impl Fn(&str) + Send + Sync,
) {
    let url = format!(
        "{}/api/sessions/{}/terminal/host",
        up.ws_base.trim_end_matches('/'),
        up.session_id
    );
    let mut backoff = Duration::from_millis(200);
    let mut warned = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let request = match ws_request(&url, up.token.as_deref()) {
            Ok(req) => req,
            Err(e) => {
                desk_note(&format!("cannot stream the terminal to {url}: {e}"));
                return;
            }
        };
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            // TCP_NODELAY: a hello, a screen and output go out back to back; with Nagle's
            // algorithm the later writes wait ~40 ms for the server's delayed ACK.
            c = tokio_tungstenite::connect_async_with_config(request, None, true) => c,
        };
        match connected {
            Ok((ws, _)) => {
                backoff = Duration::from_millis(200);
                if warned {
                    desk_note("the terminal streams to the server again");
                    warned = false;
                }
                if serve_uplink(&agent, &up, ws, &stop).await {
                    return;
                }
            }
            Err(e) => {
                if !warned {
                    desk_note(&format!(
                        "cannot stream the terminal to the server ({e}); still trying"
                    ));
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One uplink connection; true when the uplink should end (stopped), false to reconnect.
async fn serve_uplink(
    agent: &Arc<Agent>,
    up: &Uplink,
    ws: Ws,
    stop: &tokio_util::sync::CancellationToken,
) -> bool {
    let (mut tx, mut rx) = ws.split();
    let mut resync = true;
    let mut exit_seen = agent.exited.clone();
    loop {
        if resync {
            let (cols, rows, screen) = agent.snapshot();
            let hello = json!({
                "type": "hello", "cols": cols, "rows": rows,
                "pid": agent.pid, "replies": up.replies,
            });
            if tx.send(Message::text(hello.to_string())).await.is_err()
                || tx.send(Message::binary(screen)).await.is_err()
            {
                return false;
            }
            resync = false;
            let exited = agent.exited.borrow().clone();
            if let Some(exit) = exited {
                let msg = json!({ "type": "exit", "code": exit.code, "signal": exit.signal });
                if tx.send(Message::text(msg.to_string())).await.is_err() {
                    return false;
                }
            }
        }
        match agent.take_output() {
            None => {
                resync = true;
                continue;
            }
            Some(chunks) => {
                for chunk in chunks {
                    if tx.send(Message::binary(chunk)).await.is_err() {
                        return false;
                    }
                }
            }
        }
        if agent.take_desk_control() {
            let msg = json!({ "type": "control", "controller": "desk" });
            if tx.send(Message::text(msg.to_string())).await.is_err() {
                return false;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = tx.send(Message::Close(None)).await;
                return true;
            }
            _ = agent.wake.notified() => {}
            changed = exit_seen.changed(), if !agent.has_exited() => {
                let exited = exit_seen.borrow().clone();
                if changed.is_ok() && let Some(exit) = exited {
                    // Let the last output go first.
                    agent.drain_output(Duration::from_millis(500)).await;
                    if let Some(chunks) = agent.take_output() {
                        for chunk in chunks {
                            let _ = tx.send(Message::binary(chunk)).await;
                        }
                    }
                    let msg = json!({ "type": "exit", "code": exit.code, "signal": exit.signal });
                    let _ = tx.send(Message::text(msg.to_string())).await;
                }
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    agent.remote_typed.store(true, Ordering::Relaxed);
                    agent.write(bytes.to_vec());
                }
                Some(Ok(Message::Text(text))) => on_command(agent, &text),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// A text command from the server.
fn on_command(agent: &Arc<Agent>, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    match v.get("type").and_then(Value::as_str) {
        Some("resize") if !agent.local_size => {
            let cols = v.get("cols").and_then(Value::as_u64).unwrap_or(0);
            let rows = v.get("rows").and_then(Value::as_u64).unwrap_or(0);
            if (2..=1000).contains(&cols) && (2..=1000).contains(&rows) {
                agent.resize(PtySize {
                    rows: rows as u16,
                    cols: cols as u16,
                    pixel_width: 0,
                    pixel_height: 0,
                });
            }
        }
        Some("stop") => {
            let grace = v
                .get("graceMs")
                .and_then(Value::as_u64)
                .unwrap_or(3000)
                .clamp(10, 60_000);
            let agent = agent.clone();
            tokio::spawn(async move { agent.stop(Duration::from_millis(grace)).await });
        }
        _ => {}
    }
}

/// Waits for the agent on the calling thread.
fn wait_agent(child: Box<dyn portable_pty::Child + Send + Sync>) -> AgentExit {
    let child: Box<dyn portable_pty::Child> = child;
    match child.downcast::<std::process::Child>() {
        Ok(mut c) => c.wait().map(AgentExit::from_std).unwrap_or(AgentExit {
            code: 1,
            signal: None,
        }),
        // Not reached on Unix; portable-pty's own status has no signal number.
        Err(mut c) => AgentExit {
            code: c
                .wait()
                .map(|s| i32::try_from(s.exit_code()).unwrap_or(1))
                .unwrap_or(1),
            signal: None,
        },
    }
}

/// Drains the PTY on a thread: local copy, screen, uplink queue. The receiver completes at the
/// end of output.
fn pump_output(
    mut reader: Box<dyn Read + Send>,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    echo: bool,
) -> tokio::sync::oneshot::Receiver<()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut out = std::io::stdout();
        let mut echo = echo;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if echo && out.write_all(chunk).and_then(|()| out.flush()).is_err() {
                // The desk's terminal is gone; the agent goes on for the remote viewers.
                echo = false;
            }
            {
                let mut s = shared.lock().expect("screen lock");
                s.screen.process(chunk);
                if !s.overflowed {
                    if s.queued + n > UPLINK_QUEUE_BYTES {
                        s.queue.clear();
                        s.queued = 0;
                        s.overflowed = true;
                    } else {
                        s.queue.push_back(chunk.to_vec());
                        s.queued += n;
                    }
                }
            }
            wake.notify_one();
        }
        let _ = done_tx.send(());
    });
    done_rx
}

/// One thread owns the terminal's input side; everything that types sends it bytes.
fn spawn_input_writer(mut writer: Box<dyn Write + Send>) -> mpsc::SyncSender<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(INPUT_QUEUE_CHUNKS);
    std::thread::spawn(move || {
        for chunk in rx {
            if writer
                .write_all(&chunk)
                .and_then(|()| writer.flush())
                .is_err()
            {
                break;
            }
        }
        // Dropping the writer would send EOF to the agent; nobody is left to write anyway.
        std::mem::forget(writer);
    });
    tx
}

fn nonzero(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n.max(1)).expect("at least 1")
}

pub fn signal_group(pgid: Option<i32>, sig: rustix::process::Signal) {
    if let Some(pid) = pgid.and_then(rustix::process::Pid::from_raw)
        && rustix::process::kill_process_group(pid, sig).is_err()
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// `http(s)://host:port` → `ws(s)://host:port`.
pub fn ws_base(server: &str) -> String {
    maestro_client::websocket_base(server)
}

/// A WebSocket request for `url` that carries `token` as `Authorization: Bearer`; the error
/// says why the URL is unusable.
pub fn ws_request(
    url: &str,
    token: Option<&str>,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        req.headers_mut().insert("authorization", value);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::os::unix::process::ExitStatusExt;
        let exited = AgentExit::from_std(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(
            exited,
            AgentExit {
                code: 3,
                signal: None
            }
        );
        assert!(!exited.success());
        let killed = AgentExit::from_std(std::process::ExitStatus::from_raw(9));
        assert_eq!(
            killed,
            AgentExit {
                code: 137,
                signal: Some(9)
            }
        );
        assert!(AgentExit::from_std(std::process::ExitStatus::from_raw(0)).success());
    }

    #[test]
    fn ws_base_keeps_host_and_scheme() {
        assert_eq!(ws_base("http://127.0.0.1:3000/"), "ws://127.0.0.1:3000");
        assert_eq!(ws_base("https://m.example"), "wss://m.example");
    }

    #[tokio::test]
    async fn a_snapshot_and_the_bytes_after_it_are_the_output() {
        let agent = Agent::start(Spec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "printf 'one\\r\\ntwo'; sleep 0.2; printf '\\r\\nthree'".into(),
            ],
            cwd: None,
            env: Vec::new(),
            size: PtySize::default(),
            echo: false,
        })
        .unwrap();
        // Wait for the first output, take a snapshot, then collect the rest.
        agent.wake.notified().await;
        let (_, _, snap) = agent.snapshot();
        let exit = agent.wait().await;
        assert!(exit.success());
        agent.drain_output(Duration::from_secs(2)).await;
        let rest: Vec<u8> = agent.take_output().unwrap().concat();
        let mut replay = vt100::Parser::new(nonzero(24), nonzero(80), 0);
        replay.process(&snap);
        replay.process(&rest);
        let live = agent.shared.lock().unwrap().screen.screen().contents();
        assert_eq!(replay.screen().contents(), live);
        assert!(live.contains("three"), "{live:?}");
    }

    #[tokio::test]
    async fn stop_climbs_the_ladder_past_an_agent_that_ignores_sigint() {
        let agent = Agent::start(Spec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "trap '' INT; echo ready; sleep 30".into(),
            ],
            cwd: None,
            env: Vec::new(),
            size: PtySize::default(),
            echo: false,
        })
        .unwrap();
        agent.wake.notified().await;
        agent.stop(Duration::from_millis(200)).await;
        let exit = tokio::time::timeout(Duration::from_secs(10), agent.wait())
            .await
            .expect("the agent ends");
        assert!(!exit.success());
        assert!(agent.stop_requested());
    }
}
