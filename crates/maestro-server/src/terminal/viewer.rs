//! A viewer's WebSocket: what the terminal has for it goes out (the hello, the screen, live
//! output, state changes), what it sends goes to the terminal's rules. Reading and writing run
//! side by side, so a viewer that does not read its socket still has its messages handled, and
//! a writer stuck on a full socket holds up nobody else.

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};

use super::{Access, CLOSE_WAIT, Terminals};

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
            refused.send_and_close(&mut sink).await;
            return;
        }
    };
    let id = handle.id.clone();
    let writer = async {
        while let Some(msg) = term.next_for(&handle).await {
            if sink.send(msg).await.is_err() {
                return;
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
