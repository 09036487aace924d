//! One terminal: its screen, its host (when connected here), its viewers, who is in control,
//! and whether it owns or mirrors the terminal across servers.
//!
//! Every operation takes the terminal's lock briefly and never awaits under it: host output
//! is parsed and pushed into viewers' queues, which never wait. Because output is pushed under
//! the same lock a resynchronising viewer's snapshot is taken under, a viewer never gets a byte
//! twice or misses one between its snapshot and its live output.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Message;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::relay::{self, InMsg, OutMsg, SnapshotHeader};
use super::screen::Screen;
use super::{Access, HOST_QUEUE_BYTES, MAX_VIEWERS, Refused, Shared, VIEWER_QUEUE_BYTES};
use crate::queue::ByteQueue;

/// Who types into the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Controller {
    Nobody,
    /// The person at the host's own terminal.
    Desk,
    Viewer(String),
}

impl Controller {
    pub(super) fn to_json(&self) -> Value {
        match self {
            Self::Nobody => Value::Null,
            Self::Desk => json!("desk"),
            Self::Viewer(id) => json!(id),
        }
    }

    pub(super) fn from_json(v: &Value) -> Self {
        match v.as_str() {
            None => Self::Nobody,
            Some("desk") => Self::Desk,
            Some(id) => Self::Viewer(id.to_owned()),
        }
    }

    fn is(&self, viewer: &str) -> bool {
        matches!(self, Self::Viewer(id) if id == viewer)
    }
}

/// What a viewer connection holds.
pub(super) struct ViewerHandle {
    pub id: String,
    pub queue: Arc<ByteQueue<Message>>,
    /// Cancelled when the viewer must go (its credential was revoked, the terminal dropped).
    pub close: CancellationToken,
}

/// What a host connection holds.
pub(super) struct HostHandle {
    pub id: u64,
    pub queue: Arc<ByteQueue<Message>>,
    /// Cancelled when another host replaced this one (or its credential was revoked).
    pub close: CancellationToken,
}

struct ViewerLink {
    id: String,
    queue: Arc<ByteQueue<Message>>,
    can_type: bool,
    credential: Option<String>,
    close: CancellationToken,
}

struct HostLink {
    id: u64,
    /// The host asked for the session's `session:input` replies to be typed into it.
    replies: bool,
    queue: Arc<ByteQueue<Message>>,
    credential: Option<String>,
    close: CancellationToken,
}

/// This terminal's part in the relay.
enum Link {
    /// No host here, no viewer here.
    None,
    /// The host is here: the task listening to the input channel.
    Owner(CancellationToken),
    /// Viewers and no host here: the task following the output channel. `synced` once a
    /// snapshot arrived and no gap was seen since.
    Mirror {
        task: CancellationToken,
        synced: bool,
    },
}

struct State {
    screen: Screen,
    host: Option<HostLink>,
    viewers: Vec<ViewerLink>,
    controller: Controller,
    /// The host's `exit` message, once the agent ended.
    exit: Option<String>,
    /// A mirror's belief that a host is connected to another server.
    remote_host: bool,
    /// The local host was replaced by one on another server: it leaves without telling
    /// mirrors the host is gone.
    replaced_remotely: bool,
    link: Link,
}

pub(super) struct Terminal {
    session_id: String,
    shared: Arc<Shared>,
    state: Mutex<State>,
}

fn text(v: Value) -> (Message, usize) {
    let s = v.to_string();
    let n = s.len();
    (Message::Text(s.into()), n)
}

fn error(code: &str, message: &str) -> Value {
    json!({ "type": "error", "code": code, "message": message })
}

impl State {
    fn host_connected(&self) -> bool {
        self.host.is_some() || self.remote_host
    }

    fn broadcast(&self, v: &Value) {
        let s = v.to_string();
        for viewer in &self.viewers {
            viewer.queue.push(Message::Text(s.clone().into()), s.len());
        }
    }

    fn broadcast_output(&self, bytes: &Bytes) {
        for viewer in &self.viewers {
            viewer
                .queue
                .push(Message::Binary(bytes.clone()), bytes.len());
        }
    }

    /// The state messages, `snapshot` and the screen, for a viewer starting afresh.
    fn push_fresh_start(&self, queue: &ByteQueue<Message>) {
        let (cols, rows) = self.screen.size();
        for v in [
            json!({ "type": "resize", "cols": cols, "rows": rows }),
            json!({ "type": "host", "connected": self.host_connected() }),
            json!({ "type": "control", "controller": self.controller.to_json() }),
            json!({ "type": "snapshot" }),
        ] {
            let (m, n) = text(v);
            queue.force_push(m, n);
        }
        let screen = self.screen.snapshot();
        let n = screen.len();
        queue.force_push(Message::Binary(screen.into()), n);
        if let Some(exit) = &self.exit {
            queue.force_push(Message::Text(exit.clone().into()), exit.len());
        }
    }

    fn viewer(&self, id: &str) -> Option<&ViewerLink> {
        self.viewers.iter().find(|v| v.id == id)
    }

    fn snapshot_message(&self) -> Bytes {
        let (cols, rows) = self.screen.size();
        relay::encode_out(&OutMsg::Snapshot(
            SnapshotHeader {
                pos: self.screen.pos(),
                cols,
                rows,
                host_connected: self.host_connected(),
                controller: self.controller.to_json(),
                exit: self.exit.clone(),
            },
            Bytes::from(self.screen.snapshot()),
        ))
    }
}

impl Terminal {
    pub(super) fn new(session_id: &str, shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Self {
            session_id: session_id.to_owned(),
            state: Mutex::new(State {
                screen: Screen::new(shared.scrollback_bytes),
                host: None,
                viewers: Vec::new(),
                controller: Controller::Nobody,
                exit: None,
                remote_host: false,
                replaced_remotely: false,
                link: Link::None,
            }),
            shared,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("terminal lock")
    }

    pub(super) fn session_id(&self) -> &str {
        &self.session_id
    }

    pub(super) fn has_local_host(&self) -> bool {
        self.lock().host.is_some()
    }

    pub(super) fn is_idle(&self) -> bool {
        let s = self.lock();
        s.host.is_none() && s.viewers.is_empty()
    }

    pub(super) fn scrollback(&self) -> Vec<u8> {
        self.lock().screen.scrollback()
    }

    fn publish_out(&self, msg: &OutMsg) {
        self.shared.relay.publish(
            &relay::out_channel(&self.session_id),
            relay::encode_out(msg),
        );
    }

    fn publish_in(&self, msg: &InMsg) {
        self.shared
            .relay
            .publish(&relay::in_channel(&self.session_id), relay::encode_in(msg));
    }

    /// Broadcasts a state change to local viewers and, as the owner, to mirrors.
    fn announce(&self, s: &State, v: Value) {
        s.broadcast(&v);
        if s.host.is_some() {
            self.publish_out(&OutMsg::Event(v.to_string()));
        }
    }

    /// Starts following the output channel (viewers here, no host here).
    fn start_mirror(self: &Arc<Self>, s: &mut State) {
        if matches!(s.link, Link::Mirror { .. }) {
            return;
        }
        if let Link::Owner(task) = &s.link {
            task.cancel();
        }
        let task = self.shared.shutdown.child_token();
        s.link = Link::Mirror {
            task: task.clone(),
            synced: false,
        };
        self.shared
            .tasks
            .spawn(relay::mirror(self.clone(), task, self.shared.relay.clone()));
    }

    fn stop_link(s: &mut State) {
        match std::mem::replace(&mut s.link, Link::None) {
            Link::None => {}
            Link::Owner(task) | Link::Mirror { task, .. } => task.cancel(),
        }
    }

    fn check_idle(&self, s: &State) {
        if s.host.is_none() && s.viewers.is_empty() {
            self.shared.schedule_expiry(&self.session_id);
        }
    }

    // ---- viewers ----

    pub(super) fn join(self: &Arc<Self>, access: &Access) -> Result<ViewerHandle, Refused> {
        let mut s = self.lock();
        if s.viewers.len() >= MAX_VIEWERS {
            return Err(Refused::TooManyViewers);
        }
        let id = format!("v{}-{}", self.shared.next_id(), self.shared.server);
        let queue = Arc::new(ByteQueue::new(VIEWER_QUEUE_BYTES));
        let (cols, rows) = s.screen.size();
        let (hello, n) = text(json!({
            "type": "hello",
            "cols": cols,
            "rows": rows,
            "hostConnected": s.host_connected(),
            "canType": access.can_type,
            "controller": s.controller.to_json(),
            "viewerId": id,
        }));
        queue.force_push(hello, n);
        let screen = s.screen.snapshot();
        let n = screen.len();
        queue.force_push(Message::Binary(screen.into()), n);
        if let Some(exit) = &s.exit {
            queue.force_push(Message::Text(exit.clone().into()), exit.len());
        }
        let close = self.shared.shutdown.child_token();
        s.viewers.push(ViewerLink {
            id: id.clone(),
            queue: queue.clone(),
            can_type: access.can_type,
            credential: access.credential.clone(),
            close: close.clone(),
        });
        self.shared.cancel_expiry(&self.session_id);
        if s.host.is_none() {
            self.start_mirror(&mut s);
        }
        self.shared
            .metrics
            .viewers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(ViewerHandle { id, queue, close })
    }

    pub(super) fn leave(&self, viewer: &str) {
        let mut s = self.lock();
        let Some(i) = s.viewers.iter().position(|v| v.id == viewer) else {
            return;
        };
        let link = s.viewers.swap_remove(i);
        link.queue.close();
        self.shared
            .metrics
            .viewers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if s.controller.is(viewer) {
            if s.host.is_some() {
                s.controller = Controller::Nobody;
                self.announce(&s, json!({ "type": "control", "controller": null }));
            } else {
                self.publish_in(&InMsg::Release(viewer.to_owned()));
            }
        }
        if s.viewers.is_empty() && matches!(s.link, Link::Mirror { .. }) {
            Self::stop_link(&mut s);
        }
        self.check_idle(&s);
    }

    /// The viewer caught up after falling behind: it gets the screen as it is now.
    pub(super) fn resync(&self, viewer: &str) {
        let s = self.lock();
        if let Some(v) = s.viewer(viewer) {
            v.queue.reset();
            s.push_fresh_start(&v.queue);
            self.shared
                .metrics
                .resyncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn reply(s: &State, viewer: &str, v: Value) {
        if let Some(link) = s.viewer(viewer) {
            let (m, n) = text(v);
            link.queue.push(m, n);
        }
    }

    /// A text message from a viewer.
    pub(super) fn viewer_text(&self, viewer: &str, message: &str) {
        let mut s = self.lock();
        let Some(link) = s.viewer(viewer) else { return };
        let can_type = link.can_type;
        let msg: Value = serde_json::from_str(message).unwrap_or(Value::Null);
        let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
        let forbidden = |what: &str| error("forbidden", &format!("{what} needs scope 'operate'"));
        match kind {
            "take-control" => {
                if !can_type {
                    return Self::reply(&s, viewer, forbidden("taking control"));
                }
                if s.host.is_some() {
                    s.controller = Controller::Viewer(viewer.to_owned());
                    self.announce(&s, json!({ "type": "control", "controller": viewer }));
                } else if s.remote_host {
                    self.publish_in(&InMsg::Take(viewer.to_owned()));
                } else {
                    Self::reply(&s, viewer, error("no_host", "no host is connected"));
                }
            }
            "release-control" => {
                if !s.controller.is(viewer) {
                    return;
                }
                if s.host.is_some() {
                    s.controller = Controller::Nobody;
                    self.announce(&s, json!({ "type": "control", "controller": null }));
                } else {
                    self.publish_in(&InMsg::Release(viewer.to_owned()));
                }
            }
            "resize" => {
                if !can_type {
                    return Self::reply(&s, viewer, forbidden("resizing"));
                }
                let dim = |k: &str| {
                    msg.get(k)
                        .and_then(Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n > 0)
                };
                let (Some(cols), Some(rows)) = (dim("cols"), dim("rows")) else {
                    return Self::reply(
                        &s,
                        viewer,
                        error("bad_message", "resize needs cols and rows (1-65535)"),
                    );
                };
                if !s.controller.is(viewer) {
                    return Self::reply(&s, viewer, not_in_control());
                }
                match &s.host {
                    Some(host) => {
                        let (m, n) = text(json!({ "type": "resize", "cols": cols, "rows": rows }));
                        if host.queue.try_push(m, n).is_err() {
                            Self::reply(&s, viewer, host_busy());
                        }
                    }
                    None => self.publish_in(&InMsg::Resize(viewer.to_owned(), cols, rows)),
                }
            }
            _ => Self::reply(
                &s,
                viewer,
                error(
                    "bad_message",
                    "expected take-control, release-control, resize or binary keystrokes",
                ),
            ),
        }
    }

    /// Keystrokes from a viewer.
    pub(super) fn viewer_input(&self, viewer: &str, bytes: Bytes) {
        let s = self.lock();
        let Some(link) = s.viewer(viewer) else { return };
        if !link.can_type {
            return Self::reply(
                &s,
                viewer,
                error("forbidden", "typing needs scope 'operate'"),
            );
        }
        if !s.controller.is(viewer) {
            return Self::reply(&s, viewer, not_in_control());
        }
        match &s.host {
            Some(host) => {
                let n = bytes.len();
                if host.queue.try_push(Message::Binary(bytes), n).is_err() {
                    Self::reply(&s, viewer, host_busy());
                }
            }
            None if s.remote_host => {
                self.publish_in(&InMsg::Input(viewer.to_owned(), bytes));
            }
            None => Self::reply(&s, viewer, error("no_host", "no host is connected")),
        }
    }

    // ---- the host ----

    pub(super) fn attach_host(self: &Arc<Self>, access: &Access) -> HostHandle {
        let mut s = self.lock();
        let was_here = s.host.is_some();
        if let Some(old) = s.host.take() {
            tracing::info!(session.id = %self.session_id, "a new host connection replaces the previous one");
            old.close.cancel();
            old.queue.close();
        } else {
            self.shared
                .metrics
                .hosts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let id = self.shared.next_id();
        let queue = Arc::new(ByteQueue::new(HOST_QUEUE_BYTES));
        let close = self.shared.shutdown.child_token();
        s.host = Some(HostLink {
            id,
            replies: false,
            queue: queue.clone(),
            credential: access.credential.clone(),
            close: close.clone(),
        });
        s.remote_host = false;
        s.replaced_remotely = false;
        self.shared.cancel_expiry(&self.session_id);
        // Own the terminal: listen for mirrors' input and control, and tell any other server
        // that holds a host for this session to let it go.
        if !matches!(s.link, Link::Owner(_)) {
            Self::stop_link(&mut s);
            let task = self.shared.shutdown.child_token();
            s.link = Link::Owner(task.clone());
            self.shared
                .tasks
                .spawn(relay::own(self.clone(), task, self.shared.relay.clone()));
        }
        self.publish_in(&InMsg::Claim {
            server: self.shared.server.clone(),
            host: id,
        });
        if !was_here {
            self.announce(&s, json!({ "type": "host", "connected": true }));
        }
        HostHandle { id, queue, close }
    }

    fn current_host<'a>(&'a self, host: u64) -> Option<MutexGuard<'a, State>> {
        let s = self.lock();
        s.host.as_ref().is_some_and(|h| h.id == host).then_some(s)
    }

    /// The host (re)starts its stream: a blank screen of this size; its full screen follows.
    pub(super) fn host_hello(&self, host: u64, cols: u16, rows: u16, replies: bool) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        if let Some(h) = s.host.as_mut() {
            h.replies = replies;
        }
        s.screen.reset(cols, rows);
        s.exit = None;
        s.broadcast(&json!({ "type": "resize", "cols": cols, "rows": rows }));
        s.broadcast(&json!({ "type": "snapshot" }));
        self.shared
            .relay
            .publish(&relay::out_channel(&self.session_id), s.snapshot_message());
    }

    pub(super) fn host_output(&self, host: u64, bytes: Bytes) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        let pos = s.screen.pos();
        s.screen.feed(&bytes);
        s.broadcast_output(&bytes);
        self.shared
            .metrics
            .bytes_in
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.publish_out(&OutMsg::Output(pos, bytes));
    }

    pub(super) fn host_resize(&self, host: u64, cols: u16, rows: u16) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        s.screen.resize(cols, rows);
        self.announce(&s, json!({ "type": "resize", "cols": cols, "rows": rows }));
    }

    /// The person at the host's terminal typed: control goes back to the desk.
    pub(super) fn host_desk(&self, host: u64) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        s.controller = Controller::Desk;
        self.announce(&s, json!({ "type": "control", "controller": "desk" }));
    }

    pub(super) fn host_exit(&self, host: u64, code: Value, signal: Value) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        let v = json!({ "type": "exit", "code": code, "signal": signal });
        s.exit = Some(v.to_string());
        self.announce(&s, v);
    }

    pub(super) fn detach_host(self: &Arc<Self>, host: u64) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        let link = s.host.take().expect("current host");
        link.queue.close();
        self.shared
            .metrics
            .hosts
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Self::stop_link(&mut s);
        if s.replaced_remotely {
            // The host lives on another server now: this one mirrors it from there.
            s.replaced_remotely = false;
        } else {
            let v = json!({ "type": "host", "connected": false });
            s.broadcast(&v);
            self.publish_out(&OutMsg::Event(v.to_string()));
        }
        if !s.viewers.is_empty() {
            self.start_mirror(&mut s);
        }
        self.check_idle(&s);
    }

    /// Types a reply to the session's question into the host's terminal (one line, then
    /// Enter), when the host is connected here and asked for replies.
    pub(super) fn type_reply(&self, message: &str) -> bool {
        let s = self.lock();
        let Some(host) = s.host.as_ref().filter(|h| h.replies) else {
            return false;
        };
        let mut bytes = message.as_bytes().to_vec();
        bytes.push(b'\r');
        let n = bytes.len();
        host.queue.force_push(Message::Binary(bytes.into()), n);
        true
    }

    /// Sends `stop` to the host if it is connected here.
    pub(super) fn stop(&self, grace_ms: u64) -> bool {
        let s = self.lock();
        let Some(host) = &s.host else { return false };
        let (m, n) = text(json!({ "type": "stop", "graceMs": grace_ms }));
        host.queue.force_push(m, n);
        true
    }

    /// Closes the connections made with `credential`.
    pub(super) fn revoke(&self, credential: &str) {
        let s = self.lock();
        for v in s
            .viewers
            .iter()
            .filter(|v| v.credential.as_deref() == Some(credential))
        {
            v.close.cancel();
        }
        if let Some(h) = s
            .host
            .as_ref()
            .filter(|h| h.credential.as_deref() == Some(credential))
        {
            h.close.cancel();
        }
    }

    /// The terminal is dropped from the registry: stop its relay task.
    pub(super) fn drop_links(&self) {
        Self::stop_link(&mut self.lock());
    }

    // ---- the relay ----

    /// A message on the input channel (this server owns the terminal).
    pub(super) fn on_in(&self, msg: InMsg) {
        let mut s = self.lock();
        if s.host.is_none() {
            return;
        }
        match msg {
            InMsg::Claim { server, .. } if server != self.shared.server => {
                if let Some(h) = &s.host {
                    tracing::info!(session.id = %self.session_id, "a host connected to another server replaces this one");
                    h.close.cancel();
                }
                s.replaced_remotely = true;
            }
            InMsg::Claim { .. } => {}
            InMsg::Sync => {
                let msg = s.snapshot_message();
                self.shared
                    .relay
                    .publish(&relay::out_channel(&self.session_id), msg);
            }
            InMsg::Take(viewer) => {
                s.controller = Controller::Viewer(viewer.clone());
                self.announce(&s, json!({ "type": "control", "controller": viewer }));
            }
            InMsg::Release(viewer) => {
                if s.controller.is(&viewer) {
                    s.controller = Controller::Nobody;
                    self.announce(&s, json!({ "type": "control", "controller": null }));
                }
            }
            InMsg::Resize(viewer, cols, rows) => {
                if let Some(host) = s.host.as_ref().filter(|_| s.controller.is(&viewer)) {
                    let (m, n) = text(json!({ "type": "resize", "cols": cols, "rows": rows }));
                    let _ = host.queue.try_push(m, n);
                }
            }
            InMsg::Input(viewer, bytes) => {
                if let Some(host) = s.host.as_ref().filter(|_| s.controller.is(&viewer)) {
                    let n = bytes.len();
                    let _ = host.queue.try_push(Message::Binary(bytes), n);
                }
            }
        }
    }

    /// Asks the owner for a snapshot.
    pub(super) fn request_sync(&self) {
        self.publish_in(&InMsg::Sync);
    }

    /// Whether this mirror needs a snapshot.
    pub(super) fn mirror_unsynced(&self) -> bool {
        matches!(self.lock().link, Link::Mirror { synced: false, .. })
    }

    /// A mirror lost messages: it waits for a snapshot (and asks for one).
    pub(super) fn mirror_lost(&self) {
        let mut s = self.lock();
        if matches!(s.link, Link::Mirror { .. }) {
            set_synced(&mut s, false);
            drop(s);
            self.request_sync();
        }
    }

    /// A message on the output channel (this server mirrors the terminal).
    pub(super) fn on_out(&self, msg: OutMsg) {
        let mut s = self.lock();
        let synced = match &s.link {
            Link::Mirror { synced, .. } => *synced,
            _ => return,
        };
        match msg {
            OutMsg::Snapshot(header, screen) => {
                set_synced(&mut s, true);
                s.screen
                    .replace(header.cols, header.rows, &screen, header.pos);
                s.remote_host = header.host_connected;
                s.controller = Controller::from_json(&header.controller);
                s.exit = header.exit;
                for v in &s.viewers {
                    v.queue.reset();
                    s.push_fresh_start(&v.queue);
                }
            }
            OutMsg::Output(pos, bytes) => {
                if !synced {
                    return;
                }
                let at = s.screen.pos();
                if pos == at {
                    s.screen.feed(&bytes);
                    s.broadcast_output(&bytes);
                } else if pos > at {
                    // A message was lost: wait for a fresh screen.
                    set_synced(&mut s, false);
                    drop(s);
                    self.request_sync();
                }
            }
            OutMsg::Event(event) => {
                let v: Value = serde_json::from_str(&event).unwrap_or(Value::Null);
                match v.get("type").and_then(Value::as_str) {
                    Some("resize") => {
                        let dim = |k: &str| {
                            v.get(k)
                                .and_then(Value::as_u64)
                                .and_then(|n| u16::try_from(n).ok())
                                .unwrap_or(1)
                        };
                        s.screen.resize(dim("cols"), dim("rows"));
                    }
                    Some("host") => s.remote_host = v["connected"].as_bool().unwrap_or(false),
                    Some("control") => s.controller = Controller::from_json(&v["controller"]),
                    Some("exit") => s.exit = Some(event.clone()),
                    _ => return,
                }
                s.broadcast(&v);
            }
        }
    }
}

fn set_synced(s: &mut State, value: bool) {
    if let Link::Mirror { synced, .. } = &mut s.link {
        *synced = value;
    }
}

fn not_in_control() -> Value {
    error(
        "not_in_control",
        "take control first ({\"type\":\"take-control\"})",
    )
}

fn host_busy() -> Value {
    error(
        "host_busy",
        "the host is not reading its input; try again shortly",
    )
}
