//! The live terminal: each agent's terminal, streamed by its host (a runner, `maestro run`) to
//! the server and from there to any number of viewers (`docs/runners.md`, "The terminal
//! protocol").
//!
//! Why it is built this way:
//! - **Nothing blocks the agent.** The host's bytes are parsed and kept once, in the
//!   terminal's ring, under a short lock; nothing on that path waits for a socket. Each viewer
//!   reads on from its own position in the ring when its socket takes more, so a flood costs
//!   no memory per viewer. A viewer that falls out of the ring (or has more than
//!   [`VIEWER_MESSAGE_BYTES`] of messages queued) gets `{"type":"snapshot"}` and the screen as
//!   it is once it has written out what it had.
//! - **A late viewer sees the screen, not a replay.** The server keeps the screen parsed
//!   ([`screen`], the `vt100` crate) and sends terminal output that redraws it; the last
//!   `TERMINAL_SCROLLBACK_BYTES` of raw output are kept too, as history.
//! - **Bounded.** At most [`MAX_TERMINALS`] terminals (a viewer or host beyond gets 503
//!   `TOO_MANY_TERMINALS`), [`MAX_VIEWERS`] viewers each, [`VIEWER_MESSAGE_BYTES`] of messages
//!   queued per viewer, [`HOST_QUEUE_BYTES`] of input queued per host, every message at most
//!   `MAX_BODY_BYTES`; a terminal with no host and no viewer is dropped [`LINGER`] later (by
//!   deadline, not by scanning). Memory per terminal is described in [`screen`].
//! - **Several servers, one terminal.** Terminal bytes do not belong in the event journal;
//!   they travel over a [`Relay`] (in-process, or Redis pub/sub), best effort. The server
//!   holding the host *owns* the terminal; a server with viewers and no host *mirrors* it
//!   ([`relay`]): it subscribes to the session's output channel, asks the owner for a
//!   snapshot, and keeps its own copy of the screen for its viewers, asking again whenever a
//!   gap in the byte positions shows a message was lost. Its viewers' input and control go to
//!   the owner over the session's input channel; who is in control is decided by the owner.
//!
//! Layout: this file is the registry ([`Terminals`]), its background task (stop requests,
//! revocations, expiry) and metrics; [`term`] one terminal's state and rules; [`screen`] the
//! parsed screen and the ring; [`relay`] the mirror protocol; [`viewer`] and [`host`] the two
//! WebSocket connections.

mod host;
mod relay;
pub mod screen;
mod term;
mod viewer;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocket;
use maestro_protocol::{CREDENTIAL_REVOKED, StopRequested};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ports::{Relay, Store};
use term::Terminal;

/// Most terminals kept at once (hosted, watched, or lingering).
pub const MAX_TERMINALS: usize = 1024;
/// Most viewers of one terminal on one server.
pub const MAX_VIEWERS: usize = 64;
/// Bytes of messages (state changes, replies; not output, which viewers read from the ring)
/// queued for one viewer before they are dropped and it starts afresh.
pub const VIEWER_MESSAGE_BYTES: usize = 64 * 1024;
/// Most output sent to a viewer in one WebSocket message.
pub const VIEWER_FRAME_BYTES: usize = 16 * 1024;
/// Bytes of input queued for a host that does not read; keystrokes beyond get `host_busy`.
pub const HOST_QUEUE_BYTES: usize = 256 * 1024;
/// How long a terminal is kept once it has no host and no viewer (a host reconnecting within
/// it finds its screen; a viewer finds the last screen).
pub const LINGER: Duration = Duration::from_secs(60);

/// The journaled event that asks the host of a session to stop its agent.
pub const STOP_REQUESTED: &str = "session:stop_requested";

/// Whether `path` is one of the terminal's WebSockets (the legacy WebSocket, which takes
/// upgrades on any other path, leaves them alone).
pub fn is_terminal_path(path: &str) -> bool {
    path.strip_prefix("/api/sessions/").is_some_and(|rest| {
        let rest = rest.strip_suffix("/host").unwrap_or(rest);
        rest.strip_suffix("/terminal")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    })
}

/// Who opened a terminal connection, as far as the terminal cares.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Scope `operate`: may take control, type and resize.
    pub can_type: bool,
    /// The credential's id, so revoking it closes the connection (`None` for local trust).
    pub credential: Option<String>,
}

/// Why a terminal connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`MAX_TERMINALS`] terminals exist.
    TooManyTerminals,
    /// [`MAX_VIEWERS`] viewers watch this terminal here.
    TooManyViewers,
}

impl Refused {
    pub fn code(self) -> &'static str {
        match self {
            Self::TooManyTerminals => "too_many_terminals",
            Self::TooManyViewers => "too_many_viewers",
        }
    }

    pub fn message(self) -> String {
        match self {
            Self::TooManyTerminals => {
                format!("this server already keeps {MAX_TERMINALS} terminals")
            }
            Self::TooManyViewers => format!("this terminal already has {MAX_VIEWERS} viewers here"),
        }
    }

    /// Tells the client why, then closes its socket (bounded by [`CLOSE_WAIT`]).
    pub(crate) async fn send_and_close(
        self,
        sink: &mut futures_util::stream::SplitSink<
            axum::extract::ws::WebSocket,
            axum::extract::ws::Message,
        >,
    ) {
        use axum::extract::ws::Message;
        use futures_util::SinkExt;
        let refusal =
            serde_json::json!({ "type": "error", "code": self.code(), "message": self.message() });
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = sink.send(Message::Text(refusal.to_string().into())).await;
            let _ = sink.send(Message::Close(None)).await;
        })
        .await;
    }
}

/// How long a closing connection may take to say goodbye.
pub(crate) const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters and gauges for `/metrics`.
#[derive(Default)]
pub struct TerminalMetrics {
    pub viewers: AtomicI64,
    pub hosts: AtomicI64,
    pub bytes_in: AtomicU64,
    pub resyncs: AtomicU64,
    pub refused: AtomicU64,
}

impl TerminalMetrics {
    fn render(&self, open: usize) -> String {
        format!(
            "# HELP maestro_terminals_open Live terminals kept by this server (hosted, watched or lingering).\n\
             # TYPE maestro_terminals_open gauge\n\
             maestro_terminals_open {open}\n\
             # HELP maestro_terminal_hosts Host connections (agents streaming their terminal) to this server.\n\
             # TYPE maestro_terminal_hosts gauge\n\
             maestro_terminal_hosts {}\n\
             # HELP maestro_terminal_viewers Terminal viewers connected to this server.\n\
             # TYPE maestro_terminal_viewers gauge\n\
             maestro_terminal_viewers {}\n\
             # HELP maestro_terminal_bytes_in_total Terminal output bytes received from hosts.\n\
             # TYPE maestro_terminal_bytes_in_total counter\n\
             maestro_terminal_bytes_in_total {}\n\
             # HELP maestro_terminal_resyncs_total Viewers that fell behind and were sent the screen afresh.\n\
             # TYPE maestro_terminal_resyncs_total counter\n\
             maestro_terminal_resyncs_total {}\n\
             # HELP maestro_terminal_refused_total Terminal connections refused at a limit.\n\
             # TYPE maestro_terminal_refused_total counter\n\
             maestro_terminal_refused_total {}\n",
            self.hosts.load(Ordering::Relaxed),
            self.viewers.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed),
            self.resyncs.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// What every terminal shares.
pub(crate) struct Shared {
    relay: Arc<dyn Relay>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    metrics: TerminalMetrics,
    /// This server, in relay messages and viewer ids (random per start).
    server: String,
    scrollback_bytes: usize,
    next_id: AtomicU64,
    expiry: Mutex<Expiry>,
    expiry_changed: Notify,
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `session_id` has no host and no viewer: drop it at `LINGER` from now unless that
    /// changes.
    fn schedule_expiry(&self, session_id: &str) {
        self.expiry
            .lock()
            .expect("expiry lock")
            .schedule(session_id, Instant::now() + LINGER);
        self.expiry_changed.notify_one();
    }

    fn cancel_expiry(&self, session_id: &str) {
        self.expiry.lock().expect("expiry lock").cancel(session_id);
    }
}

/// Deadlines of idle terminals, earliest first; one per terminal.
#[derive(Default)]
struct Expiry {
    by_time: BTreeSet<(Instant, String)>,
    by_id: HashMap<String, Instant>,
}

impl Expiry {
    fn schedule(&mut self, id: &str, at: Instant) {
        self.cancel(id);
        self.by_time.insert((at, id.to_owned()));
        self.by_id.insert(id.to_owned(), at);
    }

    fn cancel(&mut self, id: &str) {
        if let Some(at) = self.by_id.remove(id) {
            self.by_time.remove(&(at, id.to_owned()));
        }
    }

    fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns the ids due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first()
            && *at <= now
        {
            let (_, id) = self.by_time.pop_first().expect("first exists");
            self.by_id.remove(&id);
            due.push(id);
        }
        due
    }
}

/// Every live terminal of this server; cheap to clone.
#[derive(Clone)]
pub struct Terminals {
    shared: Arc<Shared>,
    map: Arc<Mutex<HashMap<String, Arc<Terminal>>>>,
}

impl Terminals {
    /// Terminals that keep `scrollback_bytes` of output each and reach other servers through
    /// `relay`; their tasks run on `tasks` until `shutdown`. Call [`Terminals::run`] too.
    pub fn new(
        scrollback_bytes: usize,
        relay: Arc<dyn Relay>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let server: String = (0..4)
            .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
            .collect();
        Self {
            shared: Arc::new(Shared {
                relay,
                tasks,
                shutdown,
                metrics: TerminalMetrics::default(),
                server,
                scrollback_bytes,
                next_id: AtomicU64::new(0),
                expiry: Mutex::default(),
                expiry_changed: Notify::new(),
            }),
            map: Arc::default(),
        }
    }

    /// Whether the host of `session_id`'s terminal is connected to this server.
    pub fn host_connected(&self, session_id: &str) -> bool {
        self.get(session_id).is_some_and(|t| t.has_local_host())
    }

    /// The last output of `session_id`'s terminal (at most `TERMINAL_SCROLLBACK_BYTES`), if
    /// this server keeps it.
    pub fn scrollback(&self, session_id: &str) -> Option<Vec<u8>> {
        self.get(session_id).map(|t| t.scrollback())
    }

    /// Prometheus text of the terminal metrics.
    pub fn render_metrics(&self) -> String {
        let open = self.map.lock().expect("terminals lock").len();
        self.shared.metrics.render(open)
    }

    pub fn metrics(&self) -> &TerminalMetrics {
        &self.shared.metrics
    }

    fn get(&self, session_id: &str) -> Option<Arc<Terminal>> {
        self.map
            .lock()
            .expect("terminals lock")
            .get(session_id)
            .cloned()
    }

    /// Makes sure a terminal for `session_id` exists (before a WebSocket upgrade, so a refusal
    /// is an HTTP status).
    pub fn reserve(&self, session_id: &str) -> Result<(), Refused> {
        let mut map = self.map.lock().expect("terminals lock");
        self.get_or_create(&mut map, session_id).map(|_| ())
    }

    fn get_or_create(
        &self,
        map: &mut HashMap<String, Arc<Terminal>>,
        session_id: &str,
    ) -> Result<Arc<Terminal>, Refused> {
        if let Some(t) = map.get(session_id) {
            return Ok(t.clone());
        }
        if map.len() >= MAX_TERMINALS {
            self.shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::TooManyTerminals);
        }
        let t = Terminal::new(session_id, self.shared.clone());
        map.insert(session_id.to_owned(), t.clone());
        // Idle until a host or viewer registers.
        self.shared.schedule_expiry(session_id);
        Ok(t)
    }

    /// Serves a viewer's WebSocket until it closes (or the server stops).
    pub async fn serve_viewer(&self, socket: WebSocket, session_id: String, access: Access) {
        viewer::serve(self.clone(), socket, session_id, access).await
    }

    /// Serves a host's WebSocket until it closes, is replaced, or the server stops.
    pub async fn serve_host(&self, socket: WebSocket, session_id: String, access: Access) {
        host::serve(self.clone(), socket, session_id, access).await
    }

    /// Registers a viewer (under the registry lock, so expiry cannot drop the terminal
    /// between lookup and registration).
    fn join(
        &self,
        session_id: &str,
        access: &Access,
    ) -> Result<(Arc<Terminal>, term::ViewerHandle), Refused> {
        let mut map = self.map.lock().expect("terminals lock");
        let t = self.get_or_create(&mut map, session_id)?;
        let handle = t.join(access).inspect_err(|_| {
            self.shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
        })?;
        Ok((t, handle))
    }

    /// Registers a host, replacing any other of the session on this server.
    fn attach_host(
        &self,
        session_id: &str,
        access: &Access,
    ) -> Result<(Arc<Terminal>, term::HostHandle), Refused> {
        let mut map = self.map.lock().expect("terminals lock");
        let t = self.get_or_create(&mut map, session_id)?;
        let handle = t.attach_host(access);
        Ok((t, handle))
    }

    /// The background work: stop requests to hosts, closing the connections of revoked
    /// credentials, dropping terminals whose linger ran out. Subscribes to `store`'s events
    /// when called (so nothing emitted after this call is missed); spawn the future on the
    /// server's task tracker. It ends at `shutdown`.
    pub fn run(
        self,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let events = store.subscribe();
        self.serve_events(events, shutdown)
    }

    async fn serve_events(
        self,
        mut events: tokio::sync::broadcast::Receiver<Arc<maestro_protocol::EventRecord>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = self.shared.expiry.lock().expect("expiry lock").next();
            let until_due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.shared.expiry_changed.notified() => {}
                _ = until_due => self.expire(),
                event = events.recv() => match event {
                    Ok(event) if event.event == STOP_REQUESTED => {
                        match serde_json::from_value::<StopRequested>(event.data.clone()) {
                            Ok(stop) => self.stop(&stop),
                            Err(e) => tracing::warn!(error = %e, "malformed session:stop_requested"),
                        }
                    }
                    Ok(event) if event.event == "session:input" => {
                        let sid = event.data.get("sessionId").and_then(|v| v.as_str());
                        let message = event.data.get("message").and_then(|v| v.as_str());
                        if let (Some(sid), Some(message)) = (sid, message)
                            && let Some(t) = self.get(sid)
                        {
                            t.type_reply(message);
                        }
                    }
                    Ok(event) if event.event == CREDENTIAL_REVOKED => {
                        if let Some(id) = event.data.get("id").and_then(|v| v.as_str()) {
                            self.revoke(id);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "terminal hub lagged behind the event stream; stop requests may be lost");
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// Sends `stop` to the session's host, when it is connected here.
    fn stop(&self, stop: &StopRequested) {
        if let Some(t) = self.get(&stop.session_id)
            && t.stop(stop.grace_ms)
        {
            tracing::info!(session.id = %stop.session_id, grace_ms = stop.grace_ms, "stop sent to the terminal's host");
        }
    }

    fn revoke(&self, credential: &str) {
        let all: Vec<Arc<Terminal>> = self
            .map
            .lock()
            .expect("terminals lock")
            .values()
            .cloned()
            .collect();
        for t in all {
            t.revoke(credential);
        }
    }

    fn expire(&self) {
        let due = self
            .shared
            .expiry
            .lock()
            .expect("expiry lock")
            .take_due(Instant::now());
        let mut map = self.map.lock().expect("terminals lock");
        for id in due {
            if map.get(&id).is_some_and(|t| t.is_idle()) {
                if let Some(t) = map.remove(&id) {
                    t.drop_links();
                }
                tracing::debug!(session.id = %id, "idle terminal dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_paths() {
        assert!(is_terminal_path("/api/sessions/s1/terminal"));
        assert!(is_terminal_path("/api/sessions/s1/terminal/host"));
        for other in [
            "/",
            "/api/sessions//terminal",
            "/api/sessions/s1/terminal/other",
            "/api/sessions/a/b/terminal",
            "/api/sessions/s1",
        ] {
            assert!(!is_terminal_path(other), "{other}");
        }
    }

    #[test]
    fn expiry_keeps_one_deadline_per_terminal_and_yields_what_is_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut e = Expiry::default();
        e.schedule("a", t0 + s);
        e.schedule("b", t0 + 2 * s);
        e.schedule("a", t0 + 3 * s);
        assert_eq!(e.by_time.len(), 2, "rescheduling replaces");
        assert_eq!(e.next(), Some(t0 + 2 * s));
        assert!(e.take_due(t0 + s).is_empty());
        assert_eq!(e.take_due(t0 + 2 * s), ["b"]);
        e.cancel("a");
        assert_eq!(e.next(), None);
        assert!(e.by_id.is_empty());
    }

    use bytes::Bytes;

    use crate::backends::local::LocalStore;
    use crate::backends::relay::LocalRelay;
    use crate::ports::{TxnExt, transact};
    use crate::queue::{ByteQueue, Popped};
    use axum::extract::ws::Message;

    const WAIT: Duration = Duration::from_secs(10);

    async fn next(queue: &ByteQueue<Message>) -> Message {
        match tokio::time::timeout(WAIT, queue.pop()).await {
            Ok(Some(Popped::Item(m))) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn next_for(term: &Terminal, viewer: &term::ViewerHandle) -> Message {
        match tokio::time::timeout(WAIT, term.next_for(viewer)).await {
            Ok(Some(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn json_of(m: &Message) -> Option<serde_json::Value> {
        match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_stop_request_from_the_store_reaches_the_host_connected_here() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path(), 100).unwrap());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let terminals = Terminals::new(
            1024,
            Arc::new(LocalRelay::default()),
            tasks.clone(),
            stop.clone(),
        );
        tasks.spawn(terminals.clone().run(store.clone(), stop.clone()));
        let (_, host) = terminals.attach_host("s1", &Access::default()).unwrap();
        assert!(terminals.host_connected("s1"));
        assert!(!terminals.host_connected("s2"));
        transact(&*store, |tx| {
            for session in ["s2", "s1"] {
                let data = StopRequested {
                    session_id: session.into(),
                    grace_ms: 1500,
                };
                tx.emit("p1", STOP_REQUESTED, &data, Some(session));
            }
            Ok(())
        })
        .await
        .unwrap();
        let got = json_of(&next(&host.queue).await).unwrap();
        assert_eq!(got, serde_json::json!({ "type": "stop", "graceMs": 1500 }));
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        store.close().await;
    }

    /// Pulls what `viewer` has now: its messages as JSON, output as one string.
    fn drain(term: &Terminal, viewer: &term::ViewerHandle) -> Vec<serde_json::Value> {
        let mut got: Vec<serde_json::Value> = Vec::new();
        loop {
            match term.pull(&viewer.id) {
                term::Pulled::Message(Message::Binary(b)) => {
                    let s = String::from_utf8_lossy(&b).into_owned();
                    match got.last_mut() {
                        Some(serde_json::Value::String(last)) => last.push_str(&s),
                        _ => got.push(s.into()),
                    }
                }
                term::Pulled::Message(m) => got.push(json_of(&m).unwrap()),
                term::Pulled::Nothing => return got,
                term::Pulled::Gone => panic!("the viewer left"),
            }
        }
    }

    #[tokio::test]
    async fn viewers_read_output_from_the_ring_and_one_that_falls_out_starts_afresh() {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        // No scrollback asked for: the ring still keeps `MIN_RING_BYTES` for viewers.
        let terminals = Terminals::new(0, Arc::new(LocalRelay::default()), tasks, stop.clone());
        let (term, host) = terminals.attach_host("s", &Access::default()).unwrap();
        term.host_hello(host.id, 80, 24, false);
        term.host_output(host.id, Bytes::from_static(b"before"));
        let (_, reader) = terminals.join("s", &Access::default()).unwrap();
        let (_, stalled) = terminals.join("s", &Access::default()).unwrap();

        // The hello, the screen so far; then output and state changes in the order they
        // happened, each message between the same bytes as on the host.
        let got = drain(&term, &reader);
        assert_eq!(got[0]["type"], "hello");
        assert!(got[1].as_str().unwrap().contains("before"));
        assert_eq!(got.len(), 2);
        term.host_output(host.id, Bytes::from_static(b"one "));
        term.host_resize(host.id, 100, 30);
        term.host_output(host.id, Bytes::from_static(b"two "));
        term.host_output(host.id, Bytes::from_static(b"three"));
        assert_eq!(
            drain(&term, &reader),
            [
                "one ".into(),
                serde_json::json!({ "type": "resize", "cols": 100, "rows": 30 }),
                "two three".into(),
            ]
        );

        // A flood of twice the ring: the viewer that keeps reading gets every byte, in
        // messages of at most `VIEWER_FRAME_BYTES`.
        let mut sent = String::new();
        let mut read = String::new();
        for i in 0..(2 * screen::MIN_RING_BYTES / 1000) {
            let line = format!("{i:0999}\n");
            term.host_output(host.id, Bytes::from(line.clone()));
            sent.push_str(&line);
            if i % 40 == 0 {
                while let term::Pulled::Message(m) = term.pull(&reader.id) {
                    let Message::Binary(b) = m else {
                        panic!("only output: {m:?}")
                    };
                    assert!(b.len() <= VIEWER_FRAME_BYTES);
                    read.push_str(std::str::from_utf8(&b).unwrap());
                }
            }
        }
        read.extend(
            drain(&term, &reader)
                .iter()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
        assert!(
            read == sent,
            "the reader got {} of {} bytes",
            read.len(),
            sent.len()
        );
        assert_eq!(terminals.shared.metrics.resyncs.load(Ordering::Relaxed), 0);

        // The viewer that read nothing fell out of the ring: its hello, then it starts
        // afresh from the screen as it is now, and reads live output from there.
        let got = drain(&term, &stalled);
        let kinds: Vec<_> = got.iter().map(|v| v["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                Some("hello"),
                Some("resize"),
                Some("host"),
                Some("control"),
                Some("snapshot"),
                None
            ]
        );
        assert_eq!(
            got[1],
            serde_json::json!({ "type": "resize", "cols": 100, "rows": 30 })
        );
        assert_eq!(terminals.shared.metrics.resyncs.load(Ordering::Relaxed), 1);
        term.host_output(host.id, Bytes::from_static(b"live"));
        assert_eq!(drain(&term, &stalled), ["live"]);
        assert_eq!(drain(&term, &reader), ["live"]);

        // One that leaves gets nothing more.
        term.leave(&stalled.id);
        assert_eq!(term.pull(&stalled.id), term::Pulled::Gone);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn output_goes_to_other_servers_only_while_a_mirror_watches() {
        let relay: Arc<dyn Relay> = Arc::new(LocalRelay::default());
        let stop = CancellationToken::new();
        let terminals = Terminals::new(1024, relay.clone(), TaskTracker::new(), stop.clone());
        let (owner, host) = terminals.attach_host("s", &Access::default()).unwrap();
        let mut out = relay.subscribe(&relay::out_channel("s")).await;
        let mut next = async || match tokio::time::timeout(WAIT, out.next()).await {
            Ok(Some(Popped::Item(b))) => relay::decode_out(b).unwrap(),
            other => panic!("expected a message, got {other:?}"),
        };
        let is_resize = |m: relay::OutMsg| match m {
            relay::OutMsg::Event(e) => {
                serde_json::from_str::<serde_json::Value>(&e).unwrap()
                    == serde_json::json!({ "type": "resize", "cols": 100, "rows": 30 })
            }
            _ => false,
        };
        // Nobody mirrors: state changes go out, output does not.
        owner.host_output(host.id, Bytes::from_static(b"one"));
        owner.host_resize(host.id, 100, 30);
        assert!(is_resize(next().await));
        // A mirror says it watches: output goes out, at its position.
        owner.on_in(relay::InMsg::Watching);
        owner.host_output(host.id, Bytes::from_static(b"two"));
        assert_eq!(
            next().await,
            relay::OutMsg::Output(3, Bytes::from_static(b"two"))
        );
        // Not heard from since: it stops.
        tokio::time::advance(relay::MIRRORED_FOR).await;
        owner.host_output(host.id, Bytes::from_static(b"three"));
        owner.host_resize(host.id, 100, 30);
        assert!(is_resize(next().await));
        // Any message from a mirror counts, a snapshot request too.
        owner.on_in(relay::InMsg::Sync);
        assert!(matches!(next().await, relay::OutMsg::Snapshot(h, _) if h.pos == 11));
        owner.host_output(host.id, Bytes::from_static(b"four"));
        assert_eq!(
            next().await,
            relay::OutMsg::Output(11, Bytes::from_static(b"four"))
        );
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mirror_shows_the_owners_screen_and_sends_it_keystrokes() {
        let relay: Arc<dyn Relay> = Arc::new(LocalRelay::default());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let a = Terminals::new(1024, relay.clone(), tasks.clone(), stop.clone());
        let b = Terminals::new(1024, relay, tasks.clone(), stop.clone());
        let (owner, host) = a.attach_host("s", &Access::default()).unwrap();
        owner.host_hello(host.id, 40, 10, false);
        owner.host_output(host.id, Bytes::from_static(b"hello from a"));
        let typist = Access {
            can_type: true,
            credential: None,
        };
        let (mirror, viewer) = b.join("s", &typist).unwrap();
        // Whatever the mirror knew at first, a snapshot of the owner's screen follows.
        let mut screen = vt100::Parser::new(10.try_into().unwrap(), 40.try_into().unwrap(), 0);
        loop {
            match next_for(&mirror, &viewer).await {
                Message::Binary(b) => screen.process(&b),
                m if json_of(&m).is_some_and(|v| v["type"] == "snapshot") => {
                    screen = vt100::Parser::new(10.try_into().unwrap(), 40.try_into().unwrap(), 0);
                }
                _ => {}
            }
            if screen.screen().contents().contains("hello from a") {
                break;
            }
        }
        // Live output follows the snapshot.
        owner.host_output(host.id, Bytes::from_static(b" and more"));
        assert_eq!(
            next_for(&mirror, &viewer).await,
            Message::Binary(Bytes::from_static(b" and more"))
        );
        // Control is the owner's to give; keystrokes then reach the owner's host.
        mirror.viewer_input(&viewer.id, Bytes::from_static(b"early"));
        let refused = json_of(&next_for(&mirror, &viewer).await).unwrap();
        assert_eq!(refused["code"], "not_in_control");
        mirror.viewer_text(&viewer.id, r#"{"type":"take-control"}"#);
        let control = json_of(&next_for(&mirror, &viewer).await).unwrap();
        assert_eq!(
            control,
            serde_json::json!({ "type": "control", "controller": viewer.id })
        );
        mirror.viewer_input(&viewer.id, Bytes::from_static(b"ls\r"));
        assert_eq!(
            next(&host.queue).await,
            Message::Binary(Bytes::from_static(b"ls\r"))
        );
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
