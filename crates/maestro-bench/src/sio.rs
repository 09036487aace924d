//! A minimal Socket.IO v5 client over an Engine.IO v4 WebSocket, as `socket.io-client` speaks
//! it with `transports: ["websocket"]` (adapted from `crates/maestro-server/tests/server/socketio.rs`).
//! Only what the benchmarks need: connect to a namespace with `auth`, answer pings, read packets,
//! one acked call. (The fan-out's thousands of sockets use the leaner [`crate::crowd`].)

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest the client waits for any one packet.
const READ_LIMIT: Duration = Duration::from_secs(30);

pub struct Sio {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ns: String,
    next_ack: u64,
}

impl Sio {
    /// Connects to namespace `ns` with the handshake `auth` and waits for its CONNECT answer.
    pub async fn connect(addr: SocketAddr, ns: &str, auth: &Value) -> Result<Self> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio::time::timeout(READ_LIMIT, tokio_tungstenite::connect_async(url))
            .await
            .context("websocket connect timed out")??;
        let mut sio = Self {
            ws,
            ns: ns.to_owned(),
            next_ack: 1,
        };
        let open = sio.read().await?.context("closed before the open packet")?;
        if !open.starts_with('0') {
            bail!("expected the Engine.IO open packet, got {open}");
        }
        sio.send(&format!("40{ns},{auth}")).await?;
        let answer = sio.read().await?.context("closed before CONNECT")?;
        if !answer.starts_with(&format!("40{ns},")) {
            bail!("connect to {ns} refused: {answer}");
        }
        Ok(sio)
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next Engine.IO message that is not a ping (pings are answered); `None` once closed.
    /// Fails when nothing comes for 30 s.
    pub async fn read(&mut self) -> Result<Option<String>> {
        tokio::time::timeout(READ_LIMIT, self.next_message())
            .await
            .context("nothing from the server in time")?
    }

    /// [`Sio::read`] without a time limit, for sockets that idle until their owner drops them
    /// (the server pings every 25 s and the answer goes out from here).
    pub async fn next_message(&mut self) -> Result<Option<String>> {
        loop {
            let msg = self.ws.next().await;
            let text = match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
            };
            match text.as_bytes().first() {
                Some(b'2') => self.send("3").await?,
                Some(b'1') => return Ok(None),
                _ => return Ok(Some(text.to_string())),
            }
        }
    }

    /// Emits `event` with one payload and returns its ack (events in between are dropped).
    pub async fn call(&mut self, event: &str, data: Value) -> Result<Value> {
        let id = self.next_ack;
        self.next_ack += 1;
        let ns = self.ns.clone();
        self.send(&format!("42{ns},{id}{}", json!([event, data])))
            .await?;
        let prefix = format!("43{ns},{id}");
        loop {
            let text = self.read().await?.context("closed before the ack")?;
            if let Some(rest) = text.strip_prefix(&prefix) {
                let mut args: Vec<Value> = serde_json::from_str(rest)?;
                return args.pop().context("an ack without a value");
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The `seq` of an event packet `42/ns,["name",{…,"seq":N,"projectId":…}]`: the envelope's
/// `seq` comes after its `data`, so it is the last `"seq":` in the text.
pub fn envelope_seq(packet: &str) -> Option<u64> {
    let at = packet.rfind("\"seq\":")? + "\"seq\":".len();
    let digits: String = packet[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        let p = r#"42/ui,["task:created",{"type":"task:created","event":"task:created","data":{"id":"t","seq":7},"timestamp":1,"seq":42,"projectId":"p"}]"#;
        assert_eq!(envelope_seq(p), Some(42));
        assert_eq!(envelope_seq("42/ui,[\"x\",{}]"), None);
    }
}
