//! One terminal: its screen, its host (when connected here), its viewers, who is in control,
//! and whether it owns or mirrors the terminal across servers.
//!
//! Every operation takes the terminal's lock briefly and never awaits under it. Host output
//! is parsed and kept once, in the screen's ring; each viewer has a position in it and reads
//! on from there when its socket takes more, so nothing on the host's path waits for a viewer
//! and a flood costs no memory per viewer. Messages to a viewer (state changes, replies) are
//! queued with the output position they were sent at and go out between the same bytes as
//! they happened. A viewer that falls out of the ring starts afresh from the screen; because
//! its snapshot and its new position are taken under the lock output is fed under, it never
//! gets a byte twice or misses one between the two.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::relay::{self, InMsg, OutMsg, SnapshotHeader};
use super::screen::Screen;
use super::{
    Access, HOST_QUEUE_BYTES, MAX_VIEWERS, Refused, Shared, VIEWER_FRAME_BYTES,
    VIEWER_MESSAGE_BYTES,
};
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
    /// Notified when there is something new for the viewer.
    pub wake: Arc<Notify>,
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
    wake: Arc<Notify>,
    can_type: bool,
    credential: Option<String>,
    close: CancellationToken,
    /// The viewer's first message, until it is sent (starting afresh keeps it).
    hello: Option<Message>,
    /// Messages not sent yet, each with the output position it goes out at (after the output
    /// before that position, before the output from it) and its size.
    messages: VecDeque<(u64, Message, usize)>,
    /// Bytes in `messages`.
    queued: usize,
    /// The position of the next output byte this viewer gets.
    cursor: u64,
    /// Messages were dropped: it starts afresh at its next message.
    lagged: bool,
}

impl ViewerLink {
    /// Queues a message sent at output position `at`; at [`VIEWER_MESSAGE_BYTES`] drops what
    /// is queued instead, and the viewer starts afresh.
    fn send(&mut self, at: u64, msg: Message, size: usize) {
        if self.lagged {
            return;
        }
        if !self.messages.is_empty() && self.queued + size > VIEWER_MESSAGE_BYTES {
            self.messages.clear();
            self.queued = 0;
            self.lagged = true;
        } else {
            self.messages.push_back((at, msg, size));
            self.queued += size;
        }
        self.wake.notify_one();
    }

    /// Queues a message whatever the bound: the few a viewer must get (the hello, a fresh
    /// start), bounded by their callers.
    fn force_send(&mut self, at: u64, msg: Message, size: usize) {
        self.messages.push_back((at, msg, size));
        self.queued += size;
        self.wake.notify_one();
    }
}

/// What a viewer gets next.
#[derive(Debug, PartialEq)]
pub(super) enum Pulled {
    Message(Message),
    /// Nothing yet: wait for its `wake`.
    Nothing,
    /// It left the terminal.
    Gone,
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
    /// Until when output is published for mirrors (one was heard from lately).
    mirrored_until: Option<Instant>,
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

    fn broadcast(&mut self, v: &Value) {
        let s = v.to_string();
        let n = s.len();
        let text = Utf8Bytes::from(s);
        let at = self.screen.pos();
        for viewer in &mut self.viewers {
            viewer.send(at, Message::Text(text.clone()), n);
        }
    }

    /// New output is in the ring: every viewer reads on.
    fn wake_viewers(&self) {
        for viewer in &self.viewers {
            viewer.wake.notify_one();
        }
    }

    /// Viewer `i` starts afresh: what it had queued goes, it gets the state messages,
    /// `snapshot` and the screen, and live output from here on.
    fn start_afresh(&mut self, i: usize) {
        let (cols, rows) = self.screen.size();
        let at = self.screen.pos();
        let state = [
            json!({ "type": "resize", "cols": cols, "rows": rows }),
            json!({ "type": "host", "connected": self.host_connected() }),
            json!({ "type": "control", "controller": self.controller.to_json() }),
            json!({ "type": "snapshot" }),
        ];
        let screen = self.screen.snapshot();
        let exit = self.exit.clone();
        let viewer = &mut self.viewers[i];
        viewer.messages.clear();
        viewer.queued = 0;
        viewer.lagged = false;
        viewer.cursor = at;
        for v in state {
            let (m, n) = text(v);
            viewer.force_send(at, m, n);
        }
        let n = screen.len();
        viewer.force_send(at, Message::Binary(screen.into()), n);
        if let Some(exit) = exit {
            let n = exit.len();
            viewer.force_send(at, Message::Text(exit.into()), n);
        }
    }

    fn viewer(&self, id: &str) -> Option<&ViewerLink> {
        self.viewers.iter().find(|v| v.id == id)
    }

    fn viewer_mut(&mut self, id: &str) -> Option<&mut ViewerLink> {
        self.viewers.iter_mut().find(|v| v.id == id)
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
                mirrored_until: None,
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
    fn announce(&self, s: &mut State, v: Value) {
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
        let wake = Arc::new(Notify::new());
        let at = s.screen.pos();
        let mut link = ViewerLink {
            id: id.clone(),
            wake: wake.clone(),
            can_type: access.can_type,
            credential: access.credential.clone(),
            close: self.shared.shutdown.child_token(),
            hello: None,
            messages: VecDeque::new(),
            queued: 0,
            cursor: at,
            lagged: false,
        };
        let (cols, rows) = s.screen.size();
        let (hello, _) = text(json!({
            "type": "hello",
            "cols": cols,
            "rows": rows,
            "hostConnected": s.host_connected(),
            "canType": access.can_type,
            "controller": s.controller.to_json(),
            "viewerId": id,
        }));
        link.hello = Some(hello);
        let screen = s.screen.snapshot();
        let n = screen.len();
        link.force_send(at, Message::Binary(screen.into()), n);
        if let Some(exit) = &s.exit {
            link.force_send(at, Message::Text(exit.clone().into()), exit.len());
        }
        let close = link.close.clone();
        s.viewers.push(link);
        self.shared.cancel_expiry(&self.session_id);
        if s.host.is_none() {
            self.start_mirror(&mut s);
        }
        self.shared
            .metrics
            .viewers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(ViewerHandle { id, wake, close })
    }

    pub(super) fn leave(&self, viewer: &str) {
        let mut s = self.lock();
        let Some(i) = s.viewers.iter().position(|v| v.id == viewer) else {
            return;
        };
        let link = s.viewers.swap_remove(i);
        link.wake.notify_one();
        self.shared
            .metrics
            .viewers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if s.controller.is(viewer) {
            if s.host.is_some() {
                s.controller = Controller::Nobody;
                self.announce(&mut s, json!({ "type": "control", "controller": null }));
            } else {
                self.publish_in(&InMsg::Release(viewer.to_owned()));
            }
        }
        if s.viewers.is_empty() && matches!(s.link, Link::Mirror { .. }) {
            Self::stop_link(&mut s);
        }
        self.check_idle(&s);
    }

    /// The next message for a viewer, once there is one; `None` once it has left.
    pub(super) async fn next_for(&self, viewer: &ViewerHandle) -> Option<Message> {
        loop {
            match self.pull(&viewer.id) {
                Pulled::Message(m) => return Some(m),
                Pulled::Nothing => viewer.wake.notified().await,
                Pulled::Gone => return None,
            }
        }
    }

    /// What a viewer gets next: a message queued at or before its position, else the output
    /// from its position up to the next message (at most [`VIEWER_FRAME_BYTES`] at a time).
    /// A viewer whose position has left the ring, or whose messages were dropped, starts
    /// afresh first.
    pub(super) fn pull(&self, viewer: &str) -> Pulled {
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(i) = s.viewers.iter().position(|v| v.id == viewer) else {
            return Pulled::Gone;
        };
        if s.viewers[i].lagged || s.viewers[i].cursor < s.screen.oldest() {
            s.start_afresh(i);
            self.shared
                .metrics
                .resyncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let v = &mut s.viewers[i];
        if let Some(hello) = v.hello.take() {
            return Pulled::Message(hello);
        }
        if v.messages.front().is_some_and(|(at, ..)| *at <= v.cursor) {
            let (_, msg, n) = v.messages.pop_front().expect("a queued message");
            v.queued -= n;
            return Pulled::Message(msg);
        }
        let pos = s.screen.pos();
        let until = v.messages.front().map_or(pos, |(at, ..)| (*at).min(pos));
        if v.cursor < until {
            // At most a frame, so it fits in `usize`.
            let most = (until - v.cursor).min(VIEWER_FRAME_BYTES as u64) as usize;
            if let Some(bytes) = s.screen.output_from(v.cursor, most) {
                v.cursor += bytes.len() as u64;
                return Pulled::Message(Message::Binary(bytes.into()));
            }
        }
        Pulled::Nothing
    }

    fn reply(s: &mut State, viewer: &str, v: Value) {
        let at = s.screen.pos();
        if let Some(link) = s.viewer_mut(viewer) {
            let (m, n) = text(v);
            link.send(at, m, n);
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
                    return Self::reply(&mut s, viewer, forbidden("taking control"));
                }
                if s.host.is_some() {
                    s.controller = Controller::Viewer(viewer.to_owned());
                    self.announce(&mut s, json!({ "type": "control", "controller": viewer }));
                } else if s.remote_host {
                    self.publish_in(&InMsg::Take(viewer.to_owned()));
                } else {
                    Self::reply(&mut s, viewer, error("no_host", "no host is connected"));
                }
            }
            "release-control" => {
                if !s.controller.is(viewer) {
                    return;
                }
                if s.host.is_some() {
                    s.controller = Controller::Nobody;
                    self.announce(&mut s, json!({ "type": "control", "controller": null }));
                } else {
                    self.publish_in(&InMsg::Release(viewer.to_owned()));
                }
            }
            "resize" => {
                if !can_type {
                    return Self::reply(&mut s, viewer, forbidden("resizing"));
                }
                let dim = |k: &str| {
                    msg.get(k)
                        .and_then(Value::as_u64)
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n > 0)
                };
                let (Some(cols), Some(rows)) = (dim("cols"), dim("rows")) else {
                    return Self::reply(
                        &mut s,
                        viewer,
                        error("bad_message", "resize needs cols and rows (1-65535)"),
                    );
                };
                if !s.controller.is(viewer) {
                    return Self::reply(&mut s, viewer, not_in_control());
                }
                match &s.host {
                    Some(host) => {
                        let (m, n) = text(json!({ "type": "resize", "cols": cols, "rows": rows }));
                        if host.queue.try_push(m, n).is_err() {
                            Self::reply(&mut s, viewer, host_busy());
                        }
                    }
                    None => self.publish_in(&InMsg::Resize(viewer.to_owned(), cols, rows)),
                }
            }
            _ => Self::reply(
                &mut s,
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
        let mut s = self.lock();
        let Some(link) = s.viewer(viewer) else { return };
        if !link.can_type {
            return Self::reply(
                &mut s,
                viewer,
                error("forbidden", "typing needs scope 'operate'"),
            );
        }
        if !s.controller.is(viewer) {
            return Self::reply(&mut s, viewer, not_in_control());
        }
        match &s.host {
            Some(host) => {
                let n = bytes.len();
                if host.queue.try_push(Message::Binary(bytes), n).is_err() {
                    Self::reply(&mut s, viewer, host_busy());
                }
            }
            None if s.remote_host => {
                self.publish_in(&InMsg::Input(viewer.to_owned(), bytes));
            }
            None => Self::reply(&mut s, viewer, error("no_host", "no host is connected")),
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
            self.announce(&mut s, json!({ "type": "host", "connected": true }));
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
        s.wake_viewers();
        self.shared
            .metrics
            .bytes_in
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // Only for mirrors heard from lately (`relay`'s documentation).
        if s.mirrored_until.is_some_and(|until| Instant::now() < until) {
            self.publish_out(&OutMsg::Output(pos, bytes));
        }
    }

    pub(super) fn host_resize(&self, host: u64, cols: u16, rows: u16) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        s.screen.resize(cols, rows);
        self.announce(
            &mut s,
            json!({ "type": "resize", "cols": cols, "rows": rows }),
        );
    }

    /// The person at the host's terminal typed: control goes back to the desk.
    pub(super) fn host_desk(&self, host: u64) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        s.controller = Controller::Desk;
        self.announce(&mut s, json!({ "type": "control", "controller": "desk" }));
    }

    pub(super) fn host_exit(&self, host: u64, code: Value, signal: Value) {
        let Some(mut s) = self.current_host(host) else {
            return;
        };
        let v = json!({ "type": "exit", "code": code, "signal": signal });
        s.exit = Some(v.to_string());
        self.announce(&mut s, v);
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

    /// Types a reply to the session's question into the host's terminal (one line of text,
    /// then Enter), when the host is connected here and asked for replies.
    pub(super) fn type_reply(&self, message: &str) -> bool {
        let s = self.lock();
        let Some(host) = s.host.as_ref().filter(|h| h.replies) else {
            return false;
        };
        let bytes = reply_line(message);
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
        if !matches!(msg, InMsg::Claim { .. }) {
            // A mirror spoke: it gets output for a while.
            s.mirrored_until = Some(Instant::now() + relay::MIRRORED_FOR);
        }
        match msg {
            InMsg::Claim { server, .. } if server != self.shared.server => {
                if let Some(h) = &s.host {
                    tracing::info!(session.id = %self.session_id, "a host connected to another server replaces this one");
                    h.close.cancel();
                }
                s.replaced_remotely = true;
            }
            InMsg::Claim { .. } | InMsg::Watching => {}
            InMsg::Sync => {
                let msg = s.snapshot_message();
                self.shared
                    .relay
                    .publish(&relay::out_channel(&self.session_id), msg);
            }
            InMsg::Take(viewer) => {
                s.controller = Controller::Viewer(viewer.clone());
                self.announce(&mut s, json!({ "type": "control", "controller": viewer }));
            }
            InMsg::Release(viewer) => {
                if s.controller.is(&viewer) {
                    s.controller = Controller::Nobody;
                    self.announce(&mut s, json!({ "type": "control", "controller": null }));
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

    /// Tells the owner this mirror still has viewers, so it keeps publishing output.
    pub(super) fn still_watching(&self) {
        self.publish_in(&InMsg::Watching);
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
                for i in 0..s.viewers.len() {
                    s.start_afresh(i);
                }
            }
            OutMsg::Output(pos, bytes) => {
                if !synced {
                    return;
                }
                let at = s.screen.pos();
                if pos == at {
                    s.screen.feed(&bytes);
                    s.wake_viewers();
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

/// A reply as typed into a terminal: one line of text, then Enter. Never keystrokes: control
/// characters (C0, ESC, DEL, C1) would be commands to the terminal, so they go; line breaks
/// and tabs become spaces.
fn reply_line(message: &str) -> Vec<u8> {
    let line: String = message
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .filter(|c| !c.is_control())
        .collect();
    let mut bytes = line.trim_end().as_bytes().to_vec();
    bytes.push(b'\r');
    bytes
}

#[cfg(test)]
mod tests {
    use super::reply_line;

    #[test]
    fn a_reply_is_one_line_without_control_characters() {
        assert_eq!(reply_line("yes, go on"), b"yes, go on\r");
        assert_eq!(reply_line("a\nb\r\nc"), b"a b  c\r");
        // ESC sequences, Ctrl-C, DEL and C1 controls are dropped, not typed.
        assert_eq!(reply_line("ok\x1b[2J\x03\x7f\u{9b}!"), b"ok[2J!\r");
        assert_eq!(reply_line("héllo ✓"), "héllo ✓\r".as_bytes());
    }
}
