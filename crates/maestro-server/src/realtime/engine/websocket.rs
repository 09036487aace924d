//! WebSocket: the handshake (a new session, or the upgrade of a polling one), the probe,
//! and the reader that feeds a session's messages to the handler.

use super::*;

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl Engine {
    /// A WebSocket handshake: a new session (no `sid`) or the upgrade of a polling one.
    pub(super) fn upgrade(
        self: Arc<Self>,
        mut req: Request<Body>,
        peer: Option<SocketAddr>,
        sid: Option<String>,
    ) -> Response<Body> {
        let headers = req.headers();
        let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let valid = header_has(headers, header::CONNECTION, "upgrade")
            && header_has(headers, header::UPGRADE, "websocket")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        let Some(key) = key.filter(|_| valid) else {
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        };
        // Answer 101 only for a connection this server can take over: one hyper can hand back
        // (an HTTP/1 connection of ours), and room for a new session.
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_none()
        {
            return refuse(StatusCode::BAD_REQUEST, 3, "Bad request");
        }
        let principal = req.extensions().get::<Principal>().cloned();
        let hold = match sid {
            None => match self.admit_new(peer, req.headers(), principal.as_ref()) {
                Ok(hold) => hold,
                Err((status, why)) => return refuse(status, 3, why),
            },
            Some(_) => None,
        };
        // A WebSocket for a session that already has one, or is being taken over by one, is
        // accepted and closed at once (the client sees a close, as from the reference server).
        let mut taken = false;
        let existing = match sid {
            None => None,
            Some(sid) => match self.lookup(&sid) {
                Some(s) => {
                    let mut out = s.out.lock().expect("session lock");
                    if matches!(out.transport, Transport::Polling) && !out.probing {
                        out.probing = true;
                        drop(out);
                        Some(s)
                    } else {
                        taken = true;
                        None
                    }
                }
                None => return refuse(StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
            },
        };
        let kept = kept_headers(req.headers());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let engine = self.clone();
        self.tasks.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    if let Some(session) = &existing {
                        session.abort_upgrade();
                    }
                    return;
                }
            };
            // `run` serves connections with hyper's HTTP/1 builder over `TokioIo<TcpStream>`, so
            // this is the socket itself (plus any bytes hyper read past the request).
            let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => parts,
                Err(_) => {
                    tracing::error!("websocket upgrade on a connection that is not plain TCP");
                    if let Some(session) = &existing {
                        session.abort_upgrade();
                    }
                    return;
                }
            };
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            let stream = Arc::new(Socket::new(io.into_inner()));
            let buf = BytesMut::from(&read_buf[..]);
            // `read_buf` is a slice of hyper's read buffer (several KB): keeping it for the
            // socket's life would keep that buffer alive too.
            drop(read_buf);
            if taken {
                let _ = stream.write_all(&ws::close_frame(ws::CLOSE_NORMAL)).await;
                return;
            }
            match existing {
                Some(session) => engine.run_upgrade(session, stream, buf).await,
                None => {
                    let session = engine.open_session(
                        peer,
                        principal,
                        hold,
                        kept,
                        Transport::WebSocket(stream.clone()),
                    );
                    tracing::debug!(session = %session.id, "engine.io session opened (websocket)");
                    session.send(&Frame::text(&engine.open_packet(&session.id, &[])));
                    engine.read_websocket(&session, &stream, buf).await;
                    engine.finish(&session);
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, ws::accept_key(key.as_bytes()))
            .body(Body::empty())
            .expect("a valid response")
    }

    /// The probe phase of an upgrade, then (after `5`) the session's reader.
    async fn run_upgrade(&self, session: Arc<Session>, stream: Arc<Socket>, mut buf: BytesMut) {
        let mut decoder = ws::Decoder::new(self.config.max_payload);
        let mut need = 0;
        let upgraded = 'probe: loop {
            loop {
                match decoder.next(&mut buf, &mut need) {
                    Ok(Some(Incoming::Text(t))) if t == "2probe" => {
                        if !session.begin_upgrade()
                            || stream
                                .write_all(&Frame::text("3probe").bytes)
                                .await
                                .is_err()
                        {
                            break 'probe false;
                        }
                    }
                    Ok(Some(Incoming::Text(t))) if t == "5" => {
                        break 'probe session.switch_to_websocket(stream.clone());
                    }
                    Ok(Some(Incoming::Ping(p))) => {
                        if stream.write_all(&ws::frame(ws::OP_PONG, &p)).await.is_err() {
                            break 'probe false;
                        }
                    }
                    Ok(Some(Incoming::Pong)) => {}
                    Ok(Some(_)) | Err(_) => break 'probe false,
                    Ok(None) => break,
                }
            }
            tokio::select! {
                _ = session.closed.cancelled() => break false,
                r = read_more(&stream, &mut buf, need) => if !r { break false },
            }
        };
        if !upgraded {
            session.abort_upgrade();
            return;
        }
        tracing::debug!(session = %session.id, "engine.io session upgraded to websocket");
        self.read_websocket(&session, &stream, buf).await;
        self.finish(&session);
    }

    /// Reads the session's WebSocket until it closes (either side).
    async fn read_websocket(&self, session: &Arc<Session>, stream: &Socket, mut buf: BytesMut) {
        let mut decoder = ws::Decoder::new(self.config.max_payload);
        let mut need = 0;
        loop {
            loop {
                match decoder.next(&mut buf, &mut need) {
                    Ok(Some(Incoming::Text(t))) => {
                        let _inbox = session.inbox.lock().await;
                        self.on_packet(session, &t).await;
                        if session.is_closed() {
                            return;
                        }
                    }
                    Ok(Some(Incoming::Binary(data))) => {
                        let _inbox = session.inbox.lock().await;
                        self.handler.on_binary(session, data.into()).await;
                        if session.is_closed() {
                            return;
                        }
                    }
                    Ok(Some(Incoming::Ping(p))) => {
                        let pong = ws::frame(ws::OP_PONG, &p);
                        session.send_bytes(&pong, || pong.clone());
                    }
                    Ok(Some(Incoming::Pong)) => {}
                    Ok(Some(Incoming::Close)) => {
                        session.close();
                        return;
                    }
                    Ok(None) => break,
                    Err(v) => {
                        tracing::debug!(session = %session.id, reason = v.reason, "websocket protocol error; closing");
                        session.close_with(v.code);
                        return;
                    }
                }
            }
            if buf.is_empty() && buf.capacity() > 4096 {
                // A large message came and went; do not keep its buffer for an idle socket.
                buf = BytesMut::new();
            }
            tokio::select! {
                _ = session.closed.cancelled() => return,
                r = read_more(stream, &mut buf, need) => if !r {
                    session.close_with(ws::CLOSE_GOING_AWAY);
                    return;
                },
            }
        }
    }
}

/// Reads what the socket has into `buf` (making room for `need` bytes); `false` when the
/// connection is gone. Cancel-safe: nothing is read unless it returns.
async fn read_more(stream: &Socket, buf: &mut BytesMut, need: usize) -> bool {
    let want = need.saturating_sub(buf.len()).max(512);
    matches!(stream.read_into(buf, want).await, Ok(n) if n > 0)
}
