//! The TCP socket under every TLS stream: reads taken from the kernel in large blocks
//! while data streams in, and a blocking mode for the bulk bytes of a transfer on a
//! thread of its own.
//!
//! rustls asks its socket for at most 4 KiB at a time, so a record of 16 KiB took four or
//! five `read` calls and, on an async socket, as many trips through the reactor. A
//! [`Socket`] reads straight into what it is asked to fill while the other side sends
//! little (a request, an answer: no copy, no memory of ours held while waiting); once a
//! read fills the caller's buffer, more is coming, and the socket reads up to [`BULK`] at
//! once and hands rustls what it asks for from memory, until a short read drains it.
//!
//! In blocking mode ([`Socket::set_blocking`]) the file descriptor blocks, with the
//! timeout as `SO_RCVTIMEO`/`SO_SNDTIMEO`: polling never returns `Pending`, so a thread
//! drives the TLS stream above it directly, with no executor, reactor or timer per read
//! or write. An expired timeout is `TimedOut`.

use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

/// Most bytes taken from the kernel in one `read`: the buffer of a socket that streams,
/// or that blocks for a bulk transfer.
pub const BULK: usize = 256 * 1024;

/// A read shorter than this that drains the buffer means the stream has gone quiet:
/// reads go straight to the caller again, and the buffer is freed.
const QUIET: usize = 16 * 1024;

/// A TCP socket read in large blocks while it streams, async by default, blocking on
/// request.
pub struct Socket {
    io: Async<TcpStream>,
    /// Received bytes; `inbox[start..end]` are not handed out yet.
    inbox: Vec<u8>,
    start: usize,
    end: usize,
    /// Data streams in: reads go through the buffer.
    streaming: bool,
    blocking: bool,
}

impl From<Async<TcpStream>> for Socket {
    fn from(io: Async<TcpStream>) -> Self {
        Socket::new(io)
    }
}

/// A blocking socket's timeout reads as `WouldBlock`; above us it must not look like
/// "try again later", which an async caller would wait on forever.
fn timed_out(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return std::io::Error::new(std::io::ErrorKind::TimedOut, "the timeout expired");
    }
    e
}

impl Socket {
    /// Wrap a connected socket (async mode).
    pub fn new(io: Async<TcpStream>) -> Self {
        Socket {
            io,
            inbox: Vec::new(),
            start: 0,
            end: 0,
            streaming: false,
            blocking: false,
        }
    }

    /// The socket underneath.
    pub fn get_ref(&self) -> &TcpStream {
        self.io.get_ref()
    }

    /// Ready when bytes (or an end) can be read.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.start < self.end {
            return Poll::Ready(Ok(()));
        }
        self.io.poll_readable(cx)
    }

    /// Block, every read and write waiting at most `timeout` (`Some`), or go back to
    /// async mode (`None`). While blocking, the socket must not be awaited.
    pub fn set_blocking(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        let socket = self.io.get_ref();
        match timeout {
            Some(timeout) => {
                let timeout = Some(timeout.max(Duration::from_millis(1)));
                socket.set_read_timeout(timeout)?;
                socket.set_write_timeout(timeout)?;
                socket.set_nonblocking(false)?;
                self.streaming = true;
            }
            None => {
                socket.set_nonblocking(true)?;
                self.streaming = false;
                self.release();
            }
        }
        self.blocking = timeout.is_some();
        Ok(())
    }

    /// Whether the socket is in blocking mode.
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }

    /// Free the drained buffer of a socket that stopped streaming.
    fn release(&mut self) {
        if self.start == self.end && !self.streaming {
            self.inbox = Vec::new();
        }
    }

    /// Hand out buffered bytes.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.end - self.start).min(buf.len());
        buf[..n].copy_from_slice(&self.inbox[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.release();
        }
        n
    }

    /// Poll one read from the kernel into `buf`.
    fn poll_kernel(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.blocking {
            Poll::Ready(self.io.get_ref().read(buf).map_err(timed_out))
        } else {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    /// Poll one read from the kernel into the (empty) buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.inbox.len() < BULK {
            self.inbox = vec![0; BULK];
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        let read = self.poll_kernel(cx, &mut inbox);
        self.inbox = inbox;
        match read {
            Poll::Ready(Ok(n)) => {
                self.end = n;
                if n < QUIET && !self.blocking {
                    self.streaming = false;
                }
            }
            _ if !self.blocking => self.streaming = false,
            _ => {}
        }
        if self.end == 0 {
            // Closed, failing or waiting: hold no memory meanwhile.
            self.release();
        }
        read
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.start < this.end {
            return Poll::Ready(Ok(this.take(buf)));
        }
        if !this.streaming || buf.len() >= BULK {
            let read = this.poll_kernel(cx, buf);
            if let Poll::Ready(Ok(n)) = read
                && n == buf.len()
                && n < BULK
            {
                // The caller's buffer was too small for what had arrived.
                this.streaming = true;
            }
            return read;
        }
        match this.poll_fill(cx) {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(0)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(this.take(buf))),
            other => other,
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.blocking {
            return Poll::Ready(this.io.get_ref().write(buf).map_err(timed_out));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.blocking {
            return Poll::Ready(this.io.get_ref().write_vectored(bufs).map_err(timed_out));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // TCP has nothing of ours to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.blocking {
            return Poll::Ready(this.io.get_ref().shutdown(std::net::Shutdown::Write));
        }
        Pin::new(&mut this.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use smol::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let other = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        (Socket::new(Async::new(ours).unwrap()), other)
    }

    #[test]
    fn small_reads_are_served_from_one_large_one_and_the_buffer_is_freed() {
        let (mut socket, mut other) = pair();
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        other.write_all(&sent).unwrap();
        drop(other);
        let mut got = Vec::new();
        smol::block_on(async {
            let mut piece = [0; 4096];
            let mut reads = 0;
            loop {
                let n = socket.read(&mut piece).await.unwrap();
                if n == 0 {
                    break;
                }
                reads += 1;
                if reads == 2 {
                    // The first read filled the piece straight; the second took all
                    // that had arrived into the buffer.
                    assert!(socket.streaming && socket.end - socket.start > 4096);
                }
                got.extend_from_slice(&piece[..n]);
            }
        });
        assert_eq!(got, sent);
        assert!(
            socket.inbox.is_empty(),
            "a drained, quiet socket holds no buffer"
        );
    }

    #[test]
    fn blocking_mode_reads_and_writes_and_times_out() {
        let (mut socket, mut other) = pair();
        socket
            .set_blocking(Some(Duration::from_millis(100)))
            .unwrap();
        other.write_all(b"ping").unwrap();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut buf = [0; 16];
        let read = Pin::new(&mut socket).poll_read(&mut cx, &mut buf);
        assert!(matches!(read, Poll::Ready(Ok(4))), "{read:?}");
        let wrote = Pin::new(&mut socket).poll_write(&mut cx, b"pong");
        assert!(matches!(wrote, Poll::Ready(Ok(4))), "{wrote:?}");
        let mut answer = [0; 4];
        other.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong");
        // Nothing more comes: the read waits the timeout, then says so.
        let read = Pin::new(&mut socket).poll_read(&mut cx, &mut buf);
        assert!(
            matches!(&read, Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut),
            "{read:?}"
        );
        // And back to async mode.
        socket.set_blocking(None).unwrap();
        other.write_all(b"again").unwrap();
        let n = smol::block_on(socket.read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"again");
        smol::block_on(socket.write_all(b"ok")).unwrap();
    }
}
