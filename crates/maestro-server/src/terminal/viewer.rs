//! A viewer's WebSocket: what its queue holds goes out (the hello, the screen, live output,
//! state changes), what it sends goes to the terminal's rules. Reading and writing run side by
//! side, so a viewer that does not read its socket still has its messages handled, and a
//! writer stuck on a full socket holds up nobody else.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use super::{Access, Terminals};
use crate::queue::Popped;

/// How long a closing connection may take to say goodbye.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub(super) async fn serve(
    terminals: Terminals,
    socket: WebSocket,
    session_id: String,
    access: Access,
) {
    let (mut sink, mut stream) = socket.split();
    let (term, handle) = match terminals.join(&session_id, &access) {
        Ok(joined) => joined,
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
    let id = handle.id.clone();
    let writer = async {
        while let Some(next) = handle.queue.pop().await {
            match next {
                Popped::Item(msg) => {
                    if sink.send(msg).await.is_err() {
                        return;
                    }
                }
                // It wrote out what it had after falling behind: start it afresh.
                Popped::Lagged => term.resync(&id),
            }
        }
    };
    let reader = async {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Text(text) => term.viewer_text(&id, text.as_str()),
                Message::Binary(bytes) => term.viewer_input(&id, bytes),
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = handle.close.cancelled() => {}
    }
    term.leave(&id);
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(None))).await;
}
