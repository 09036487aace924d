//! A host's WebSocket: its output and state messages go to the terminal; input, resizes and
//! `stop` go out from its queue. The reader never waits on anything but the host itself.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use super::{Access, Terminals};
use crate::queue::Popped;

const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub(super) async fn serve(
    terminals: Terminals,
    socket: WebSocket,
    session_id: String,
    access: Access,
) {
    let (mut sink, mut stream) = socket.split();
    let (term, handle) = match terminals.attach_host(&session_id, &access) {
        Ok(attached) => attached,
        Err(refused) => {
            let refusal =
                json!({ "type": "error", "code": refused.code(), "message": refused.message() });
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                let _ = sink.send(Message::Text(refusal.to_string().into())).await;
                let _ = sink.send(Message::Close(None)).await;
            })
            .await;
            return;
        }
    };
    let host = handle.id;
    let writer = async {
        while let Some(next) = handle.queue.pop().await {
            if let Popped::Item(msg) = next
                && sink.send(msg).await.is_err()
            {
                return;
            }
        }
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(bytes) => term.host_output(host, bytes),
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    let dim = |k: &str| {
                        v.get(k)
                            .and_then(Value::as_u64)
                            .and_then(|n| u16::try_from(n).ok())
                            .filter(|n| *n > 0)
                    };
                    match (
                        v.get("type").and_then(Value::as_str),
                        dim("cols"),
                        dim("rows"),
                    ) {
                        (Some("hello"), Some(cols), Some(rows)) => {
                            term.host_hello(host, cols, rows, v["replies"] == true)
                        }
                        (Some("resize"), Some(cols), Some(rows)) => {
                            term.host_resize(host, cols, rows)
                        }
                        (Some("control"), _, _) if v["controller"] == "desk" => {
                            term.host_desk(host)
                        }
                        (Some("exit"), _, _) => {
                            term.host_exit(host, v["code"].clone(), v["signal"].clone())
                        }
                        _ => tracing::debug!(session.id = %session_id, "unexpected host message"),
                    }
                }
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        // Replaced by another host connection, or its credential was revoked.
        _ = handle.close.cancelled() => {}
    }
    term.detach_host(host);
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(None))).await;
}
