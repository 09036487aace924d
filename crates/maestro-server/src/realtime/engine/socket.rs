//! A WebSocket session's TCP connection, registered with the runtime for reads only.
//!
//! Why not tokio's `TcpStream`: it registers the socket for both directions, edge-triggered.
//! Every ACK that frees room in the socket's send buffer is then an `EPOLLOUT` edge, so each
//! event fanned out to N sockets came back as N epoll wake-ups that the runtime woke a thread
//! for, looked up and dropped (nobody waits to write: the send buffer is almost never full).
//! Measured with `perf` on the fan-out (docs/performance.md, issue 24), that was the largest
//! part of the server's cost above the loopback floor. Here the socket is registered for
//! `EPOLLIN` only; writes are plain non-blocking system calls; and only a writer that found the
//! buffer full waits for room, through a duplicate of the descriptor registered for `EPOLLOUT`
//! for as long as it waits.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub(crate) struct Socket {
    fd: AsyncFd<TcpStream>,
}

impl Socket {
    /// Takes over a connection from the runtime (it must be in non-blocking mode, as tokio's
    /// sockets are).
    pub(crate) fn new(stream: tokio::net::TcpStream) -> io::Result<Self> {
        let stream = stream.into_std()?;
        Ok(Self {
            fd: register(stream, Interest::READABLE)?,
        })
    }

    /// One write that never waits: `Ok(None)` when the send buffer has no room.
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<Option<usize>> {
        would_block(self.fd.get_ref().write(bytes))
    }

    /// [`Socket::try_write`] of several buffers in one system call.
    pub(crate) fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
        would_block(self.fd.get_ref().write_vectored(slices))
    }

    /// Waits until the socket has something to read, then reads it into `buf` (making room for
    /// at least `want` bytes); `Ok(0)` at end of stream. Cancel-safe: nothing is read unless it
    /// returns.
    pub(crate) async fn read_into(&self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let filled = buf.len();
            buf.resize(filled + want, 0);
            let read = guard.try_io(|fd| fd.get_ref().read(&mut buf[filled..]));
            let n = match &read {
                Ok(Ok(n)) => *n,
                _ => 0,
            };
            buf.truncate(filled + n);
            match read {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(result) => return result,
                // Not readable after all (the readiness was stale): wait again.
                Err(_would_block) => continue,
            }
        }
    }

    /// Something to wait on for room in the send buffer (see the module's notes).
    pub(crate) fn writable(&self) -> io::Result<Writable> {
        let twin = self.fd.get_ref().try_clone()?;
        Ok(Writable(register(twin, Interest::WRITABLE)?))
    }

    /// Writes all of `bytes`, waiting for room as needed.
    pub(crate) async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        let mut waiter = None;
        while !bytes.is_empty() {
            match self.try_write(bytes)? {
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(n) => bytes = &bytes[n..],
                None => {
                    if waiter.is_none() {
                        waiter = Some(self.writable()?);
                    }
                    waiter.as_ref().expect("set above").wait().await?;
                }
            }
        }
        Ok(())
    }
}

/// A duplicate of a socket's descriptor registered for `EPOLLOUT`; deregistered and closed
/// when dropped.
pub(crate) struct Writable(AsyncFd<TcpStream>);

impl Writable {
    /// Waits for room in the send buffer. The readiness is cleared before the caller writes
    /// again, so an edge that comes after that write is never lost.
    pub(crate) async fn wait(&self) -> io::Result<()> {
        let mut guard = self.0.writable().await?;
        guard.clear_ready();
        Ok(())
    }
}

/// Registers `stream` with the runtime for `interest` only.
///
/// `AsyncFd::with_interest` is deprecated in favour of an `unsafe` constructor whose contract
/// is that the descriptor stays open and the same while registered; this crate forbids
/// `unsafe`, and a `std::net::TcpStream` owned by the `AsyncFd` meets that contract (it owns its
/// descriptor and never replaces it), so the safe, deprecated one is used.
#[allow(deprecated)]
fn register(stream: TcpStream, interest: Interest) -> io::Result<AsyncFd<TcpStream>> {
    AsyncFd::with_interest(stream, interest)
}

fn would_block(result: io::Result<usize>) -> io::Result<Option<usize>> {
    match result {
        Ok(n) => Ok(Some(n)),
        // Interrupted: nothing was written; the caller waits for room, which a writable socket
        // reports at once.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
