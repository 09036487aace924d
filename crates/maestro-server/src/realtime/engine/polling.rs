//! Long-polling: a `GET` waits for packets, a `POST` carries the client's.

use super::*;

/// Polling packets are separated by this byte.
const SEPARATOR: u8 = 0x1e;

/// Resets a session's "a `GET` is waiting" mark when the request ends, even when the client
/// goes away mid-wait.
struct PollGuard<'a>(&'a Session);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.out.lock().expect("session lock").polling = false;
    }
}

impl Engine {
    /// A polling `GET`: answers at once with what is queued, else waits for packets.
    pub(super) async fn poll(&self, session: Arc<Session>) -> Response<Body> {
        {
            let mut out = session.out.lock().expect("session lock");
            if out.polling {
                drop(out);
                tracing::debug!(session = %session.id, "overlapping polls; closing");
                self.finish(&session);
                return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
            }
            if matches!(out.transport, Transport::WebSocket(_)) {
                return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
            }
            out.polling = true;
        }
        let _guard = PollGuard(&session);
        let deadline = tokio::time::sleep(self.config.ping_interval + self.config.ping_timeout);
        tokio::pin!(deadline);
        loop {
            let notified = session.wake_poll.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut out = session.out.lock().expect("session lock");
                match out.transport {
                    Transport::Closed if out.client_closed => {
                        out.close_answered = true;
                        drop(out);
                        self.finish(&session);
                        return text("6", "text/plain; charset=UTF-8");
                    }
                    Transport::Closed => {
                        let body = drain_polling(&mut out, true);
                        drop(out);
                        self.finish(&session);
                        return text(body, "text/plain; charset=UTF-8");
                    }
                    // Upgraded while this request waited.
                    Transport::WebSocket(_) => return text("6", "text/plain; charset=UTF-8"),
                    Transport::Polling => {}
                }
                if !out.queue.is_empty() {
                    let body = drain_polling(&mut out, false);
                    return text(body, "text/plain; charset=UTF-8");
                }
                if out.upgrading {
                    return text("6", "text/plain; charset=UTF-8");
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = &mut deadline => return text("6", "text/plain; charset=UTF-8"),
            }
        }
    }

    /// A polling `POST`: the client's packets, handled in order.
    pub(super) async fn post(&self, session: Arc<Session>, body: Body) -> Response<Body> {
        let bytes = match axum::body::to_bytes(body, self.config.max_payload).await {
            Ok(b) => b,
            Err(_) => {
                tracing::debug!(session = %session.id, "polling payload too large; closing");
                self.finish(&session);
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, 3, "Payload too large");
            }
        };
        let Ok(body) = std::str::from_utf8(&bytes) else {
            self.finish(&session);
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        };
        if session.is_closed() {
            return refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown");
        }
        let _inbox = session.inbox.lock().await;
        let mut valid = true;
        for packet in body.split(SEPARATOR as char) {
            if session.is_closed() {
                break;
            }
            valid = self.on_packet(&session, packet).await;
            if !valid {
                break;
            }
        }
        if session.is_closed() {
            self.remember_client_close(&session);
            self.finish(&session);
        }
        if !valid {
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        }
        text("ok", "text/html")
    }
}

/// Takes everything queued for a polling `GET`, as its body.
fn drain_polling(out: &mut Out, closing: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for packet in out.queue.drain(..) {
        if !body.is_empty() {
            body.push(SEPARATOR);
        }
        body.extend_from_slice(&packet);
    }
    if closing {
        if !body.is_empty() {
            body.push(SEPARATOR);
        }
        body.push(b'1');
    }
    body
}
