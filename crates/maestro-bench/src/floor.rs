//! The loopback floor of a fan-out: what it costs, on this machine and kernel, to send one
//! pre-built WebSocket frame to each of N connected sockets with one `write()` each, and
//! nothing else. The fan-out figure reports the server's cost per socket as a ratio to it.
//!
//! The floor runs as its own process (`maestro-bench --floor-writer`, so that its CPU time is
//! read from `/proc` exactly as the server's is) and speaks just enough of the protocol for a
//! [`Crowd`] to connect to it as it does to Maestro: the WebSocket upgrade, Engine.IO's open
//! packet, the answer to Socket.IO's CONNECT. The crowd, its sockets and the frame's size are
//! the same as in the server's run, so the kernel's work on the receiving side (which loopback
//! TCP does in the sender's context) is in both figures alike.
//!
//! Control is by lines on the writer's stdin: `fire` writes the frame once to every socket and
//! answers `sent <sockets>`; end of input ends the process. It never reads its sockets after
//! the handshake and sends no pings, so each event is exactly one `write()` per socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The floor writer, as a child process.
pub struct Floor {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
}

impl Floor {
    /// Starts a writer whose event frame has a text payload of `payload_len` bytes starting with
    /// `prefix` (what the crowd counts as the event).
    pub fn start(prefix: &str, payload_len: usize) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--floor-writer", &format!("{payload_len}:{prefix}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the floor writer")?;
        let stdin = child.stdin.take().context("the writer's stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("the writer's stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .context("the floor writer did not say where it listens")?
            .parse()?;
        Ok(Self {
            child,
            stdin,
            stdout,
            addr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One event: the frame to every socket. Returns how many sockets it went to.
    pub fn fire(&mut self) -> Result<usize> {
        self.stdin.write_all(b"fire\n")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.trim()
            .strip_prefix("sent ")
            .context("the floor writer stopped")?
            .parse()
            .context("the floor writer's answer")
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `maestro-bench --floor-writer LEN:PREFIX`: the writer process.
pub fn writer(spec: &str) -> Result<()> {
    let (len, prefix) = spec
        .split_once(':')
        .context("--floor-writer takes LEN:PREFIX")?;
    let len: usize = len.parse().context("the payload length")?;
    let frame = Arc::new(event_frame(prefix.as_bytes(), len)?);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    {
        let conns = conns.clone();
        std::thread::Builder::new()
            .name("floor-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let accepted = stream.map_err(anyhow::Error::from).and_then(handshake);
                    match accepted {
                        Ok(s) => conns.lock().expect("conns").push(s),
                        Err(e) => eprintln!("floor writer: a handshake failed: {e:#}"),
                    }
                }
            })?;
    }
    // MAESTRO_BENCH_FLOOR_THREADS: write from that many threads at once, a shard each, as the
    // server's fan-out does (to see what sending in parallel costs the kernel; the floor the
    // bench reports is one thread's).
    let threads: usize = std::env::var("MAESTRO_BENCH_FLOOR_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        if line? != "fire" {
            bail!("the floor writer takes `fire`");
        }
        let conns = conns.lock().expect("conns");
        // Blocking sockets that the crowd keeps reading: the kernel takes the whole frame in
        // the one call (`write_all` only loops on a short write, which does not happen).
        let write = |shard: &[TcpStream]| -> std::io::Result<()> {
            shard.iter().try_for_each(|mut s| s.write_all(&frame))
        };
        if threads <= 1 || conns.is_empty() {
            write(&conns)?;
        } else {
            std::thread::scope(|scope| {
                let mut shards = conns.chunks(conns.len().div_ceil(threads));
                let mine = shards.next().unwrap_or_default();
                let others: Vec<_> = shards.map(|s| scope.spawn(|| write(s))).collect();
                write(mine)?;
                others
                    .into_iter()
                    .try_for_each(|t| t.join().expect("a floor writer thread panicked"))
            })?;
        }
        writeln!(out, "sent {}", conns.len())?;
        out.flush()?;
    }
    Ok(())
}

/// A server text frame whose payload is `len` bytes: `prefix`, then a JSON-ish filler that
/// ends the event packet.
fn event_frame(prefix: &[u8], len: usize) -> Result<Vec<u8>> {
    let tail = b",{}]";
    if len < prefix.len() + tail.len() {
        bail!("a payload of {len} bytes cannot hold the event's prefix");
    }
    let mut payload = prefix.to_vec();
    payload.extend(std::iter::repeat_n(b' ', len - prefix.len() - tail.len()));
    payload.extend_from_slice(tail);
    Ok(server_frame(&payload))
}

/// A server's (unmasked) WebSocket text frame.
pub(crate) fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65_536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// The server's side of what [`crate::crowd`]'s client does: the upgrade, the open packet, the
/// CONNECT to `/ui` and its answer.
fn handshake(mut stream: TcpStream) -> Result<TcpStream> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("closed during the upgrade");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    buf.drain(..head_end);
    // The crowd does not check Sec-WebSocket-Accept.
    stream.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )?;
    stream.write_all(&server_frame(
        br#"0{"sid":"floor","upgrades":[],"pingInterval":600000,"pingTimeout":600000,"maxPayload":1000000}"#,
    ))?;
    // The client's CONNECT: one masked text frame, short.
    loop {
        if buf.len() >= 6 {
            let len = (buf[1] & 0x7f) as usize;
            if len < 126 && buf.len() >= 6 + len {
                break;
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("closed before the CONNECT");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let key = [buf[2], buf[3], buf[4], buf[5]];
    let len = (buf[1] & 0x7f) as usize;
    let connect: Vec<u8> = buf[6..6 + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    if !connect.starts_with(b"40/ui,") {
        bail!("expected a CONNECT to /ui");
    }
    stream.write_all(&server_frame(br#"40/ui,{"sid":"floor"}"#))?;
    stream.set_read_timeout(None)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_frame_has_the_asked_size_and_prefix() {
        let f = event_frame(b"42/ui,[\"task:created\"", 198).unwrap();
        assert_eq!(f.len(), 202, "a 198-byte payload takes a 4-byte header");
        assert!(f[4..].starts_with(b"42/ui,[\"task:created\""));
        assert!(f.ends_with(b",{}]"));
        assert!(event_frame(b"42/ui,[\"task:created\"", 10).is_err());
    }
}
