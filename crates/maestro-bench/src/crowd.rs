//! Thousands of idle `/ui` sockets for the fan-out figure, served by one thread and one epoll.
//!
//! Why not the async client of [`crate::sio`]: with 10,000 sockets on a two-core machine the
//! clients compete with the server for the CPU, so their cost shows up in the figure. A tokio
//! task per socket, tungstenite and a copy of every frame cost about as much CPU per event as
//! the server's own fan-out; a single thread reading raw frames costs a fraction of it. The
//! protocol is the same: the WebSocket upgrade, Engine.IO's open packet, Socket.IO's CONNECT to
//! `/ui`, pings answered with pongs (masked client frames), event packets recognised by their
//! prefix without parsing their JSON.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};

/// What a crowd does when one of its sockets gets the event it watches.
pub trait OnEvent: Send + Sync + 'static {
    /// A socket got the event; its packet is `len` bytes.
    fn received(&self, len: usize);
    fn connected(&self);
}

/// A thread holding the sockets; they close when it is dropped.
pub struct Crowd {
    add: Option<mpsc::Sender<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Crowd {
    /// Starts the thread; sockets come with [`Crowd::grow`]. `prefix` is the packet start that
    /// counts as the event (e.g. `42/ui,["task:created"`).
    pub fn start(addr: SocketAddr, prefix: &str, sink: Arc<dyn OnEvent>) -> Result<Self> {
        let (add, requests) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let prefix = prefix.as_bytes().to_vec();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-crowd".into())
                .spawn(move || run(addr, &prefix, &*sink, &requests, &stop))?
        };
        Ok(Self {
            add: Some(add),
            stop,
            thread: Some(thread),
        })
    }

    /// Connects `n` more sockets (asynchronously; [`OnEvent::connected`] counts them).
    pub fn grow(&self, n: usize) -> Result<()> {
        self.add
            .as_ref()
            .context("the crowd has stopped")?
            .send(n)
            .context("the crowd's thread has ended")
    }

    /// Whether the thread ended (with its error, if any).
    pub fn finished(&mut self) -> Option<Result<()>> {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let thread = self.thread.take()?;
            return Some(
                thread
                    .join()
                    .unwrap_or_else(|_| bail!("the crowd panicked")),
            );
        }
        None
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.add = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes of an incomplete frame.
    pending: Vec<u8>,
}

/// Longest the thread runs, whatever happens.
const LIFETIME: Duration = Duration::from_secs(1_800);

fn run(
    addr: SocketAddr,
    prefix: &[u8],
    sink: &dyn OnEvent,
    requests: &mpsc::Receiver<usize>,
    stop: &AtomicBool,
) -> Result<()> {
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let mut conns: Vec<Conn> = Vec::new();
    let mut events = Vec::with_capacity(1_024);
    let mut scratch = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    while !stop.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
        while let Ok(n) = requests.try_recv() {
            for _ in 0..n {
                let (stream, pending) = handshake(addr)?;
                stream.set_nonblocking(true)?;
                epoll::add(
                    &epoll,
                    &stream,
                    epoll::EventData::new_u64(conns.len() as u64),
                    epoll::EventFlags::IN | epoll::EventFlags::ET,
                )?;
                conns.push(Conn { stream, pending });
                sink.connected();
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
        }
        events.clear();
        epoll::wait(&epoll, spare_capacity(&mut events), Some(&tick))?;
        for ev in &events {
            let conn = &mut conns[ev.data.u64() as usize];
            loop {
                match conn.stream.read(&mut scratch) {
                    Ok(0) => bail!(
                        "the server closed socket {} of {} (no close frame)",
                        ev.data.u64(),
                        conns.len()
                    ),
                    Ok(n) => {
                        conn.pending.extend_from_slice(&scratch[..n]);
                        let used = frames(&conn.pending, |payload| {
                            if payload.starts_with(prefix) {
                                sink.received(payload.len());
                            } else if payload == b"2" {
                                let _ = conn.stream.write_all(&client_frame(b"3"));
                            }
                        })?;
                        conn.pending.drain(..used);
                        if n < scratch.len() {
                            // The socket's queue is empty now: data that arrives later makes a
                            // new edge. Reading on until `WouldBlock` would cost a second
                            // system call per socket and event, as much as the first.
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// Calls `text` with the payload of every complete text frame at the start of `buf`; returns
/// how many bytes the complete frames took.
fn frames(buf: &[u8], mut text: impl FnMut(&[u8])) -> Result<usize> {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        if rest.len() < 2 {
            return Ok(at);
        }
        let opcode = rest[0] & 0x0f;
        if rest[1] & 0x80 != 0 {
            bail!("a masked frame from the server");
        }
        let (len, header) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 if rest.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            126 | 127 => return Ok(at),
            n => (n as usize, 2),
        };
        if rest.len() < header + len {
            return Ok(at);
        }
        let payload = &rest[header..header + len];
        match opcode {
            0x1 => text(payload),
            0x8 => bail!(
                "the server closed a socket: {}",
                String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
            ),
            _ => {} // pings at the WebSocket level are not sent by the server; ignore others
        }
        at += header + len;
    }
}

/// A client text frame (masked, with a zero key: the payload is unchanged).
fn client_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let mut f = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// The WebSocket upgrade, Engine.IO open and Socket.IO CONNECT to `/ui`, blocking. Returns the
/// stream and any bytes already read past the CONNECT answer.
fn handshake(addr: SocketAddr) -> Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(
        format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )?;
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
    if !buf.starts_with(b"HTTP/1.1 101") {
        bail!(
            "upgrade refused: {}",
            String::from_utf8_lossy(&buf[..head_end])
        );
    }
    buf.drain(..head_end);
    // Text payloads read but not yet looked at. Engine.IO pings ("2") can come at any point,
    // the first one right after the CONNECT answer: each is answered, or the server drops the
    // socket 20 s later.
    let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
    let mut next_text = |stream: &mut TcpStream,
                         buf: &mut Vec<u8>,
                         queue: &mut VecDeque<Vec<u8>>|
     -> Result<Vec<u8>> {
        loop {
            let used = frames(buf, |p| queue.push_back(p.to_vec()))?;
            buf.drain(..used);
            while let Some(p) = queue.pop_front() {
                if p == b"2" {
                    stream.write_all(&client_frame(b"3"))?;
                } else {
                    return Ok(p);
                }
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("closed during the handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let open = next_text(&mut stream, &mut buf, &mut queue)?;
    if !open.starts_with(b"0{") {
        bail!("expected the Engine.IO open packet");
    }
    stream.write_all(&client_frame(b"40/ui,{}"))?;
    let answer = next_text(&mut stream, &mut buf, &mut queue)?;
    if !answer.starts_with(b"40/ui,") {
        bail!("connect refused: {}", String::from_utf8_lossy(&answer));
    }
    for p in queue {
        if p == b"2" {
            stream.write_all(&client_frame(b"3"))?;
        }
    }
    stream.set_read_timeout(None)?;
    Ok((stream, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floor::server_frame;

    #[test]
    fn frames_are_split_and_partial_ones_kept() {
        let big = vec![b'x'; 70_000];
        let mut buf = server_frame(b"2");
        buf.extend(server_frame(&[b'a'; 300]));
        buf.extend(server_frame(&big));
        let whole = buf.len();
        buf.extend(&server_frame(b"42/ui,[\"e\"]")[..5]);
        let mut seen = Vec::new();
        let used = frames(&buf, |p| seen.push(p.len())).unwrap();
        assert_eq!(seen, [1, 300, 70_000]);
        assert_eq!(used, whole, "the partial frame stays");
        assert_eq!(client_frame(b"3"), [0x81, 0x81, 0, 0, 0, 0, b'3']);
    }
}
