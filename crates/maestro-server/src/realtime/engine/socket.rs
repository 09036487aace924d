//! A WebSocket session's TCP connection: read through the runtime, written with plain
//! non-blocking system calls.
//!
//! Why not tokio's `TcpStream::try_write`: before its system call it reads (and after a full
//! buffer, clears) the readiness state the runtime keeps for the socket, one more cache line
//! per socket and event, shared with the reactor thread. In a fan-out to thousands of sockets
//! that was 4 % of the server's CPU in `perf` (docs/performance.md, issue 24). Here a write is
//! `send(2)` with `MSG_DONTWAIT | MSG_NOSIGNAL` and nothing else. Only a writer that found the
//! buffer full goes through the runtime ([`Socket::writable`], then the runtime's own write,
//! which clears the readiness when the buffer is still full); the readiness it finds may be
//! stale (the direct write did not clear it), which costs one more attempt, never a lost
//! wake-up.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use rustix::net::SendFlags;
use tokio::net::TcpStream;

const FLAGS: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);

pub(crate) struct Socket {
    stream: TcpStream,
}

impl Socket {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self { stream }
    }

    /// One write that never waits: `Ok(None)` when the send buffer has no room.
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<Option<usize>> {
        would_block(rustix::net::send(&self.stream, bytes, FLAGS))
    }

    /// Several buffers in one system call, for the flusher (the rare path): through the
    /// runtime, so that a full buffer clears the readiness the next [`Socket::writable`] waits
    /// on.
    pub(crate) fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
        match self.stream.try_write_vectored(slices) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until the send buffer may have room (see the module's notes).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.stream.writable().await
    }

    /// Waits until the socket has something to read, then reads it into `buf` (making room for
    /// at least `want` bytes); `Ok(0)` at end of stream. Cancel-safe: nothing is read unless it
    /// returns.
    pub(crate) async fn read_into(&self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        loop {
            self.stream.readable().await?;
            match self.stream.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Writes all of `bytes`, waiting for room as needed.
    pub(crate) async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.try_write(bytes)? {
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(n) => bytes = &bytes[n..],
                None => {
                    self.stream.writable().await?;
                    // Clears the runtime's readiness if the buffer is still full, so the next
                    // wait sleeps until there is room.
                    match self.stream.try_write(bytes) {
                        Ok(n) => bytes = &bytes[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

fn would_block(result: rustix::io::Result<usize>) -> io::Result<Option<usize>> {
    match result {
        Ok(n) => Ok(Some(n)),
        // Interrupted: nothing was written; the caller waits for room, which a writable socket
        // reports at once.
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
