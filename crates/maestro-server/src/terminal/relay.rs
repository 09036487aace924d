//! The terminal across servers: the messages one server's terminal sends another's over the
//! [`Relay`], and the two tasks that receive them.
//!
//! Two channels per session:
//! - `term:<session>:out`, published by the *owner* (the server holding the host): every
//!   output chunk with its byte position while a mirror watches, state changes (`resize`,
//!   `host`, `control`, `exit`, as the viewer messages themselves), and a snapshot on every
//!   host hello and whenever a mirror asks;
//! - `term:<session>:in`, published by *mirrors* (servers with viewers and no host): snapshot
//!   requests, `watching` every [`SYNC_RETRY`] while synced, `take`/`release` control,
//!   resizes and keystrokes of their viewers; and by a server whose host just connected
//!   (`claim`), so a previous owner closes its host.
//!
//! Output goes out only while a mirror has been heard from in the last [`MIRRORED_FOR`]: a
//! terminal nobody mirrors costs no relay traffic (on Redis, no `PUBLISH` per chunk and no
//! outbox filled by a flood). A mirror that was not heard for a while (a new owner after the
//! host moved, a Redis outage) sees a gap in the positions once output resumes and asks for a
//! snapshot, as after any lost message.
//!
//! A mirror applies output only at the position it expects: a later position means a message
//! was lost (a full queue, a Redis reconnect), and it waits for a snapshot, asking again every
//! [`SYNC_RETRY`] until one comes. The owner decides who is in control; a mirror checks its copy
//! first, so its viewers get `not_in_control` at once, and the owner checks again.
//!
//! Wire format, binary: `O` + position (u64, big-endian) + bytes; `S` + header length (u32) +
//! JSON header + screen; `J` + JSON (events out, control in); `I` + viewer id length (u8) +
//! viewer id + keystrokes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::term::Terminal;
use crate::ports::Relay;
use crate::queue::Popped;

/// How often a mirror without a screen asks the owner again, and a synced one says it is
/// still watching.
pub const SYNC_RETRY: Duration = Duration::from_secs(2);
/// How long after a mirror was last heard from the owner still publishes output.
pub const MIRRORED_FOR: Duration = Duration::from_secs(6);

pub fn out_channel(session_id: &str) -> String {
    format!("term:{session_id}:out")
}

pub fn in_channel(session_id: &str) -> String {
    format!("term:{session_id}:in")
}

/// What a snapshot says besides the screen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotHeader {
    /// The output position the screen is at.
    pub pos: u64,
    pub cols: u16,
    pub rows: u16,
    pub host_connected: bool,
    pub controller: Value,
    /// The `exit` message, once the agent ended.
    pub exit: Option<String>,
}

/// Owner → mirrors.
#[derive(Debug, Clone, PartialEq)]
pub enum OutMsg {
    Output(u64, Bytes),
    Snapshot(SnapshotHeader, Bytes),
    /// A viewer message (JSON text) about a state change.
    Event(String),
}

/// Mirrors (and new owners) → the owner.
#[derive(Debug, Clone, PartialEq)]
pub enum InMsg {
    /// A host for the session connected to `server`.
    Claim {
        server: String,
        host: u64,
    },
    Sync,
    /// A synced mirror still has viewers.
    Watching,
    Take(String),
    Release(String),
    Resize(String, u16, u16),
    Input(String, Bytes),
}

pub fn encode_out(msg: &OutMsg) -> Bytes {
    let mut out = BytesMut::new();
    match msg {
        OutMsg::Output(pos, bytes) => {
            out.put_u8(b'O');
            out.put_u64(*pos);
            out.put_slice(bytes);
        }
        OutMsg::Snapshot(header, screen) => {
            let header = serde_json::to_vec(header).expect("headers serialise");
            out.put_u8(b'S');
            out.put_u32(header.len() as u32);
            out.put_slice(&header);
            out.put_slice(screen);
        }
        OutMsg::Event(json) => {
            out.put_u8(b'J');
            out.put_slice(json.as_bytes());
        }
    }
    out.freeze()
}

pub fn decode_out(mut b: Bytes) -> Option<OutMsg> {
    if b.is_empty() {
        return None;
    }
    let tag = b.split_to(1)[0];
    match tag {
        b'O' if b.len() >= 8 => {
            let pos = u64::from_be_bytes(b.split_to(8)[..].try_into().ok()?);
            Some(OutMsg::Output(pos, b))
        }
        b'S' if b.len() >= 4 => {
            let len = u32::from_be_bytes(b.split_to(4)[..].try_into().ok()?) as usize;
            if b.len() < len {
                return None;
            }
            let header = serde_json::from_slice(&b.split_to(len)).ok()?;
            Some(OutMsg::Snapshot(header, b))
        }
        b'J' => {
            serde_json::from_slice::<Value>(&b).ok()?;
            Some(OutMsg::Event(String::from_utf8(b.to_vec()).ok()?))
        }
        _ => None,
    }
}

pub fn encode_in(msg: &InMsg) -> Bytes {
    let mut out = BytesMut::new();
    let control = match msg {
        InMsg::Input(viewer, bytes) => {
            out.put_u8(b'I');
            let id = &viewer.as_bytes()[..viewer.len().min(255)];
            out.put_u8(id.len() as u8);
            out.put_slice(id);
            out.put_slice(bytes);
            return out.freeze();
        }
        InMsg::Claim { server, host } => json!({ "t": "claim", "server": server, "host": host }),
        InMsg::Sync => json!({ "t": "sync" }),
        InMsg::Watching => json!({ "t": "watching" }),
        InMsg::Take(v) => json!({ "t": "take", "viewer": v }),
        InMsg::Release(v) => json!({ "t": "release", "viewer": v }),
        InMsg::Resize(v, cols, rows) => {
            json!({ "t": "resize", "viewer": v, "cols": cols, "rows": rows })
        }
    };
    out.put_u8(b'J');
    out.put_slice(control.to_string().as_bytes());
    out.freeze()
}

pub fn decode_in(mut b: Bytes) -> Option<InMsg> {
    if b.is_empty() {
        return None;
    }
    let tag = b.split_to(1)[0];
    match tag {
        b'I' => {
            let len = usize::from(*b.first()?);
            if b.len() < 1 + len {
                return None;
            }
            let _ = b.split_to(1);
            let viewer = String::from_utf8(b.split_to(len).to_vec()).ok()?;
            Some(InMsg::Input(viewer, b))
        }
        b'J' => {
            let v: Value = serde_json::from_slice(&b).ok()?;
            let viewer = || v.get("viewer").and_then(Value::as_str).map(str::to_owned);
            let dim = |k: &str| {
                v.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
            };
            match v.get("t")?.as_str()? {
                "claim" => Some(InMsg::Claim {
                    server: v.get("server")?.as_str()?.to_owned(),
                    host: v.get("host")?.as_u64()?,
                }),
                "sync" => Some(InMsg::Sync),
                "watching" => Some(InMsg::Watching),
                "take" => Some(InMsg::Take(viewer()?)),
                "release" => Some(InMsg::Release(viewer()?)),
                "resize" => Some(InMsg::Resize(viewer()?, dim("cols")?, dim("rows")?)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The owner's task: applies what mirrors send, until `stop`.
pub async fn own(term: Arc<Terminal>, stop: CancellationToken, relay: Arc<dyn Relay>) {
    let channel = in_channel(term.session_id());
    let mut sub = tokio::select! {
        _ = stop.cancelled() => return,
        sub = relay.subscribe(&channel) => sub,
    };
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = sub.next() => next,
        };
        match next {
            None => return,
            Some(Popped::Lagged) => tracing::debug!("terminal input from other servers was lost"),
            Some(Popped::Item(bytes)) => match decode_in(bytes) {
                Some(msg) => term.on_in(msg),
                None => tracing::debug!("malformed terminal relay message"),
            },
        }
    }
}

/// A mirror's task: follows the owner's output, until `stop`.
pub async fn mirror(term: Arc<Terminal>, stop: CancellationToken, relay: Arc<dyn Relay>) {
    let channel = out_channel(term.session_id());
    let mut sub = tokio::select! {
        _ = stop.cancelled() => return,
        sub = relay.subscribe(&channel) => sub,
    };
    // Subscribed: anything published from now on reaches us, the snapshot included.
    term.request_sync();
    let mut retry = tokio::time::interval_at(tokio::time::Instant::now() + SYNC_RETRY, SYNC_RETRY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = retry.tick() => {
                if term.mirror_unsynced() {
                    term.request_sync();
                } else {
                    term.still_watching();
                }
            }
            next = sub.next() => match next {
                None => return,
                Some(Popped::Lagged) => term.mirror_lost(),
                Some(Popped::Item(bytes)) => match decode_out(bytes) {
                    Some(msg) => term.on_out(msg),
                    None => tracing::debug!("malformed terminal relay message"),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let outs = [
            OutMsg::Output(u64::MAX - 3, Bytes::from_static(b"\x1b[1mhi")),
            OutMsg::Output(0, Bytes::new()),
            OutMsg::Snapshot(
                SnapshotHeader {
                    pos: 42,
                    cols: 120,
                    rows: 40,
                    host_connected: true,
                    controller: json!("v1-abcd"),
                    exit: Some(r#"{"type":"exit","code":0,"signal":null}"#.into()),
                },
                Bytes::from_static(b"\x1b[H\x1b[Jscreen"),
            ),
            OutMsg::Event(r#"{"type":"host","connected":false}"#.into()),
        ];
        for m in outs {
            assert_eq!(decode_out(encode_out(&m)), Some(m));
        }
        let ins = [
            InMsg::Claim {
                server: "k2x9".into(),
                host: 7,
            },
            InMsg::Sync,
            InMsg::Watching,
            InMsg::Take("v1-a".into()),
            InMsg::Release("v1-a".into()),
            InMsg::Resize("v1-a".into(), 100, 30),
            InMsg::Input("v1-a".into(), Bytes::from_static(b"ls\r")),
        ];
        for m in ins {
            assert_eq!(decode_in(encode_in(&m)), Some(m));
        }
        for junk in [
            &b""[..],
            b"O123",
            b"S\0\0\0\x09{}",
            b"Jnot json",
            b"I\x09ab",
            b"X",
        ] {
            assert_eq!(decode_out(Bytes::copy_from_slice(junk)), None, "{junk:?}");
            assert_eq!(decode_in(Bytes::copy_from_slice(junk)), None, "{junk:?}");
        }
    }
}
