//! One session: its state, its writer (a direct non-blocking write, else the queue and a
//! flusher task), and closing.

use super::*;

/// Frames (WebSocket) or packets (polling) a session may have waiting before the client
/// counts as gone: it is disconnected and recovers with `lastSeq` when it reconnects.
pub const MAX_QUEUED: usize = 16_384;
/// How long a WebSocket may accept nothing while frames wait, before the session is closed.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// One write attempt that never waits: `Ok(None)` means the socket has no room now.
fn try_write(stream: &Socket, bytes: &[u8]) -> io::Result<Option<usize>> {
    match stream.try_write(bytes) {
        Ok(Some(0)) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
        other => other,
    }
}

impl Session {
    pub(super) fn new(
        peer: Option<SocketAddr>,
        headers: HeaderMap,
        transport: Transport,
        first_ping: u64,
        opened: u64,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Session {
            id: new_sid(),
            peer,
            headers,
            out: Mutex::new(Out {
                transport,
                queue: VecDeque::new(),
                flushing: false,
                polling: false,
                upgrading: false,
                probing: false,
                client_closed: false,
                close_answered: false,
            }),
            wake_poll: Notify::new(),
            // Not a child of the shutdown token: shutdown closes sessions itself, after the
            // goodbyes (`Engine::close_all`).
            closed: CancellationToken::new(),
            finished: AtomicBool::new(false),
            ping_sent: AtomicU64::new(0),
            next_ping: AtomicU64::new(first_ping),
            inbox: tokio::sync::Mutex::new(()),
            sockets: Mutex::new(Vec::new()),
            principal: std::sync::OnceLock::new(),
            opened,
            joined: AtomicBool::new(false),
            hold: Mutex::new(None),
            tasks,
        })
    }

    /// The handler has taken this session on (a Socket.IO namespace connected): the
    /// [connect timeout](EngineConfig::connect_timeout) no longer applies.
    pub fn mark_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// The Engine.IO session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The peer's address, as the TCP connection of the handshake saw it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The handshake request's headers that decide trust (Origin and the credential headers).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.get()
    }

    /// Whether this session acts for the credential `id`.
    pub fn is_credential(&self, id: &str) -> bool {
        self.principal()
            .is_some_and(|p| p.id.as_deref() == Some(id))
            || self
                .sockets
                .lock()
                .expect("sockets lock")
                .iter()
                .any(|c| c.principal.id.as_deref() == Some(id))
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Reads the writer's lock word without taking it: what a send reads first. A fan-out
    /// reads it ahead of sending.
    pub fn warm(&self) -> usize {
        usize::from(self.out.is_poisoned())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Sends one packet; `false` if the session is closed (or closes now because the client
    /// stopped taking packets).
    pub fn send(self: &Arc<Self>, frame: &Frame) -> bool {
        self.send_bytes(&frame.bytes, || frame.polling_form())
    }

    /// Sends several packets, in order, as one write on a WebSocket (a replay of a thousand
    /// events is one system call, not a thousand).
    pub fn send_many(self: &Arc<Self>, frames: &[Frame]) -> bool {
        let websocket = matches!(
            self.out.lock().expect("session lock").transport,
            Transport::WebSocket(_)
        );
        if !websocket {
            return frames.iter().all(|f| self.send(f));
        }
        let mut all = BytesMut::with_capacity(frames.iter().map(|f| f.bytes.len()).sum());
        for f in frames {
            all.extend_from_slice(&f.bytes);
        }
        // Only the whole is written from here on: a session that changed transport meanwhile
        // can only have closed (a WebSocket is never downgraded).
        let all = all.freeze();
        self.send_bytes(&all, || all.clone())
    }

    /// Sends `bytes` on a WebSocket, or queues `polling()` for a polling `GET`. Nothing is
    /// cloned when the kernel takes the whole frame at once, the usual case: in a fan-out every
    /// socket shares one frame, and a reference count touched per socket from both fan-out
    /// threads is a contended cache line.
    pub(super) fn send_bytes(
        self: &Arc<Self>,
        bytes: &Bytes,
        polling: impl FnOnce() -> Bytes,
    ) -> bool {
        let mut out = self.out.lock().expect("session lock");
        let is_polling = matches!(out.transport, Transport::Polling);
        // A WebSocket with nothing waiting is written to right here.
        let idle_socket = match &out.transport {
            Transport::Closed => return false,
            Transport::Polling => None,
            Transport::WebSocket(stream) => {
                (out.queue.is_empty() && !out.flushing).then_some(stream)
            }
        };
        let mut flusher = None;
        let rest = match idle_socket.map(|stream| (stream, try_write(stream, bytes))) {
            None if is_polling => polling(),
            None => bytes.clone(),
            Some((_, Ok(Some(n)))) if n == bytes.len() => return true,
            // The kernel took part or none of it: the rest waits for a flusher.
            Some((stream, Ok(written))) => {
                flusher = Some(stream.clone());
                bytes.slice(written.unwrap_or(0)..)
            }
            Some((_, Err(e))) => {
                drop(out);
                tracing::debug!(session = %self.id, error = %e, "websocket write failed");
                self.close();
                return false;
            }
        };
        out.queue.push_back(rest);
        out.flushing |= flusher.is_some();
        if out.queue.len() > MAX_QUEUED {
            drop(out);
            self.overflow();
            return false;
        }
        drop(out);
        if is_polling {
            self.wake_poll.notify_one();
        }
        if let Some(stream) = flusher {
            self.tasks.spawn(self.clone().flush(stream));
        }
        true
    }

    fn overflow(&self) {
        tracing::warn!(session = %self.id, "client stopped taking packets; disconnecting (it recovers with lastSeq)");
        self.close();
    }

    /// Writes the queue as the socket takes it; ends when the queue is empty. A socket that
    /// takes nothing for [`STALL_LIMIT`] is closed.
    async fn flush(self: Arc<Self>, stream: Arc<Socket>) {
        loop {
            {
                let mut guard = self.out.lock().expect("session lock");
                let out = &mut *guard;
                if !matches!(out.transport, Transport::WebSocket(_)) {
                    return;
                }
                loop {
                    if out.queue.is_empty() {
                        out.flushing = false;
                        return;
                    }
                    let slices: Vec<IoSlice<'_>> =
                        out.queue.iter().take(64).map(|b| IoSlice::new(b)).collect();
                    match stream.try_write_vectored(&slices) {
                        Ok(Some(0)) => {
                            drop(guard);
                            self.close();
                            return;
                        }
                        Ok(Some(mut n)) => {
                            while n > 0 {
                                let front = out.queue.front_mut().expect("written from it");
                                if n >= front.len() {
                                    n -= front.len();
                                    out.queue.pop_front();
                                } else {
                                    *front = front.slice(n..);
                                    n = 0;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            drop(guard);
                            tracing::debug!(session = %self.id, error = %e, "websocket write failed");
                            self.close();
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.closed.cancelled() => return,
                ready = tokio::time::timeout(STALL_LIMIT, stream.writable()) => match ready {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        self.close();
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(session = %self.id, "client accepted nothing for {STALL_LIMIT:?}; disconnecting");
                        self.close();
                        return;
                    }
                },
            }
        }
    }

    /// Closes the session: a WebSocket gets a close frame (if nothing is still queued in
    /// front of it); a waiting polling `GET` gets what is queued and the close packet.
    pub fn close(&self) {
        self.close_with(ws::CLOSE_NORMAL);
    }

    pub(super) fn close_with(&self, code: u16) {
        let mut out = self.out.lock().expect("session lock");
        let previous = std::mem::replace(&mut out.transport, Transport::Closed);
        if let Transport::WebSocket(stream) = previous {
            if out.queue.is_empty() && !out.flushing {
                let _ = try_write(&stream, &ws::close_frame(code));
            }
            out.queue.clear();
        }
        drop(out);
        self.closed.cancel();
        self.wake_poll.notify_one();
    }

    pub(super) fn pong(&self, now: u64, interval: u64) {
        self.ping_sent.store(0, Ordering::Relaxed);
        self.next_ping.store(now + interval, Ordering::Relaxed);
    }

    /// A WebSocket probe was answered: waiting polls end with a noop so the client can pause.
    pub(super) fn begin_upgrade(&self) -> bool {
        let mut out = self.out.lock().expect("session lock");
        if !matches!(out.transport, Transport::Polling) {
            return false;
        }
        out.upgrading = true;
        drop(out);
        self.wake_poll.notify_one();
        true
    }

    pub(super) fn abort_upgrade(&self) {
        let mut out = self.out.lock().expect("session lock");
        out.upgrading = false;
        out.probing = false;
    }

    /// The client sent `1`. A waiting polling `GET` ends with a noop: the client knows, and the
    /// reference server answers so.
    pub(super) fn close_by_client(&self) {
        self.out.lock().expect("session lock").client_closed = true;
        self.close();
    }

    /// The client sent `5`: the WebSocket carries the session from now on, starting with
    /// whatever was still queued for polling.
    pub(super) fn switch_to_websocket(self: &Arc<Self>, stream: Arc<Socket>) -> bool {
        let mut out = self.out.lock().expect("session lock");
        if !matches!(out.transport, Transport::Polling) {
            return false;
        }
        let pending: Vec<Bytes> = out
            .queue
            .drain(..)
            .map(|packet| match packet.strip_prefix(b"b") {
                // Only `Frame::binary` queues a packet starting with `b`: valid base64.
                Some(b64) => ws::frame(ws::OP_BINARY, &BASE64.decode(b64).unwrap_or_default()),
                None => ws::frame(ws::OP_TEXT, &packet),
            })
            .collect();
        out.transport = Transport::WebSocket(stream.clone());
        out.upgrading = false;
        let start_flusher = !pending.is_empty();
        out.queue.extend(pending);
        if start_flusher {
            out.flushing = true;
        }
        drop(out);
        if start_flusher {
            self.tasks.spawn(self.clone().flush(stream));
        }
        self.wake_poll.notify_one();
        true
    }
}

#[cfg(test)]
impl Session {
    /// A polling session outside any engine: what is sent collects in its queue.
    pub(in crate::realtime) fn detached() -> Arc<Self> {
        Session::new(
            None,
            HeaderMap::new(),
            Transport::Polling,
            0,
            0,
            TaskTracker::new(),
        )
    }

    /// The packets queued so far, taken.
    pub(in crate::realtime) fn take_queued(&self) -> Vec<String> {
        let mut out = self.out.lock().unwrap();
        out.queue
            .drain(..)
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect()
    }
}
