//! A socket turned into a stream of frames, with the limits it enforces: every frame
//! bounded, every read and write under a timeout. The socket is a TLS stream whose
//! handshake `net` did; the connection keeps the fingerprint the other side proved.

use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use smol::Async;
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::Error;
use super::fingerprint::Fingerprint;
use super::rules::{Limits, clean_text};
use super::socket::Socket;

/// What a [`Connection`] runs on: a TLS stream over a [`Socket`] (or, in unit tests of
/// the framing, the bare socket).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync {
    /// The socket underneath.
    fn socket(&self) -> &Socket;
    /// The socket underneath, to change its mode.
    fn socket_mut(&mut self) -> &mut Socket;
}

impl Transport for Socket {
    fn socket(&self) -> &Socket {
        self
    }

    fn socket_mut(&mut self) -> &mut Socket {
        self
    }
}

/// A TLS stream ended without `close_notify` reads as a plain end: frames and raw
/// transfers carry their own lengths, so a cut is seen where it matters (in the middle
/// of a message or transfer), and a peer that simply closes is not an error.
fn eof_is_end(read: std::io::Result<usize>) -> std::io::Result<usize> {
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

impl Transport for futures_rustls::TlsStream<Socket> {
    fn socket(&self) -> &Socket {
        self.get_ref().0
    }

    fn socket_mut(&mut self) -> &mut Socket {
        self.get_mut().0
    }
}

/// `op`, failing with `expired()` when it takes longer than `timeout`. The timer (a
/// registration with the reactor, which wakes it) is only set when `op` has to wait:
/// most writes, and most frames once their first bytes are in, complete at once.
async fn within<T, E>(
    timeout: Duration,
    op: impl Future<Output = std::result::Result<T, E>>,
    expired: impl FnOnce() -> E,
) -> std::result::Result<T, E> {
    let mut op = std::pin::pin!(op);
    if let Some(done) = smol::future::poll_once(op.as_mut()).await {
        return done;
    }
    op.or(async {
        smol::Timer::after(timeout).await;
        Err(expired())
    })
    .await
}

/// Poll the first read of a message into `inbox` (emptied first), through a buffer on
/// the stack of this one poll: a connection waiting for its next message (thousands of
/// idle peer sessions) holds no read buffer of ours, neither on the heap nor in its
/// task's state, which a buffer living across the wait would be part of.
fn poll_first(
    stream: &mut Box<dyn Transport>,
    inbox: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let mut first = [0; FIRST_READ];
    match Pin::new(&mut **stream).poll_read(cx, &mut first) {
        Poll::Ready(read) => {
            let n = eof_is_end(read)?;
            inbox.clear();
            inbox.extend_from_slice(&first[..n]);
            Poll::Ready(Ok(n))
        }
        Poll::Pending => Poll::Pending,
    }
}

/// What a connection's operations return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Encode a message as one frame: length then JSON.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut frame = vec![0; 4];
    serde_json::to_writer(&mut frame, message).expect("protocol messages always serialize");
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Decode a frame's body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Malformed(clean_text(&e.to_string())))
}

/// Bytes read from the socket at a time (more when a frame needs more, up to
/// [`MAX_READ`]).
const READ_CHUNK: usize = 16 * 1024;

/// Bytes read while waiting for a message to begin.
const FIRST_READ: usize = 1024;

/// Most bytes read at once, so that a frame's claimed length is never allocated before
/// its bytes arrive.
const MAX_READ: usize = 64 * 1024;

/// A connection speaking frames, with the limits it enforces.
///
/// Reads are buffered: one `read` usually brings a whole request, and bytes that arrive
/// beyond a frame (a raw transfer right behind its `sending` frame) are kept for what
/// comes next, [`Connection::read_blocking`] included.
pub struct Connection {
    stream: Box<dyn Transport>,
    peer: SocketAddr,
    fingerprint: Fingerprint,
    limits: Limits,
    /// Received bytes; `inbox[consumed..]` are not used yet.
    inbox: Vec<u8>,
    consumed: usize,
}

/// Truncates a buffer grown for a read back to what the read delivered, also when the
/// read is cancelled (a timeout), so that no zeros pass for data.
struct Grown<'a> {
    buf: &'a mut Vec<u8>,
    keep: usize,
}

impl Drop for Grown<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.keep);
    }
}

impl Connection {
    /// Wrap a stream whose other side proved `fingerprint`.
    pub fn new(
        stream: impl Transport + 'static,
        fingerprint: Fingerprint,
        limits: Limits,
    ) -> Result<Self> {
        let peer = stream
            .socket()
            .get_ref()
            .peer_addr()
            .map_err(|e| Error::io("reading the peer's address", e))?;
        stream.socket().get_ref().set_nodelay(true).ok();
        Ok(Connection {
            stream: Box::new(stream),
            peer,
            fingerprint,
            limits,
            inbox: Vec::new(),
            consumed: 0,
        })
    }

    /// Connect a TCP socket to `addr` within the limits' timeout (the TLS handshake
    /// follows, in `net`).
    pub async fn dial(addr: SocketAddr, limits: Limits) -> Result<Async<TcpStream>> {
        Async::<TcpStream>::connect(addr)
            .or(async {
                smol::Timer::after(limits.timeout).await;
                Err(std::io::ErrorKind::TimedOut.into())
            })
            .await
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))
    }

    /// The fingerprint of the key the other side proved in the handshake.
    pub fn peer_fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Address of the other side.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Our address on this connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream
            .socket()
            .get_ref()
            .local_addr()
            .map_err(|e| Error::io("reading the local address", e))
    }

    /// The limits this connection enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Send one message.
    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<()> {
        self.send_raw(&encode(message)).await
    }

    fn buffered(&self) -> usize {
        self.inbox.len() - self.consumed
    }

    /// Read more bytes (about `want`, within bounds); 0 means the other side closed.
    async fn fill(&mut self, want: usize) -> std::io::Result<usize> {
        if self.consumed > 0 {
            self.inbox.drain(..self.consumed);
            self.consumed = 0;
        }
        let start = self.inbox.len();
        self.inbox
            .resize(start + want.clamp(READ_CHUNK, MAX_READ), 0);
        let grown = Grown {
            buf: &mut self.inbox,
            keep: start,
        };
        let n = eof_is_end(self.stream.read(&mut grown.buf[start..]).await)?;
        let mut grown = grown;
        grown.keep = start + n;
        Ok(n)
    }

    /// Receive one message, waiting up to `idle` for it to begin.
    ///
    /// `Ok(None)` is a clean end of the connection between messages.
    pub async fn recv<T: DeserializeOwned>(&mut self, idle: Duration) -> Result<Option<T>> {
        if self.buffered() == 0 {
            let (stream, inbox) = (&mut self.stream, &mut self.inbox);
            let first = std::future::poll_fn(|cx| poll_first(stream, inbox, cx));
            let got = within(idle, first, || std::io::ErrorKind::TimedOut.into()).await;
            match got {
                Ok(0) => return Ok(None),
                Ok(_) => self.consumed = 0,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Error::Timeout(format!("waiting for {}", self.peer)));
                }
                Err(e) => return Err(Error::io(format!("receiving from {}", self.peer), e)),
            }
        }
        let timeout = self.limits.timeout;
        let peer = self.peer;
        within(timeout, self.frame(), || {
            Error::Timeout(format!("receiving a message from {peer}"))
        })
        .await
        .map(Some)
    }

    /// Receive one message that must come within the timeout (an answer).
    pub async fn recv_reply<T: DeserializeOwned>(&mut self) -> Result<T> {
        match self.recv(self.limits.timeout).await? {
            Some(message) => Ok(message),
            None => Err(Error::Closed(self.peer.to_string())),
        }
    }

    /// Make sure `len` bytes are buffered.
    async fn buffer(&mut self, len: usize) -> Result<()> {
        while self.buffered() < len {
            let want = len - self.buffered();
            match self.fill(want).await {
                Ok(0) => {
                    return Err(Error::Closed(format!(
                        "{} in the middle of a message",
                        self.peer
                    )));
                }
                Ok(_) => {}
                Err(e) => return Err(Error::io(format!("receiving from {}", self.peer), e)),
            }
        }
        Ok(())
    }

    async fn frame<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.buffer(4).await?;
        let header: [u8; 4] = self.inbox[self.consumed..self.consumed + 4]
            .try_into()
            .expect("four bytes");
        let len = u32::from_be_bytes(header);
        if len > self.limits.max_frame {
            return Err(Error::FrameTooLarge {
                len: len.into(),
                max: self.limits.max_frame.into(),
            });
        }
        let total = 4 + len as usize;
        self.buffer(total).await?;
        let decoded = decode(&self.inbox[self.consumed + 4..self.consumed + total]);
        self.consumed += total;
        if self.consumed == self.inbox.len() {
            // Idle connections hold no buffer.
            self.inbox = Vec::new();
            self.consumed = 0;
        }
        decoded
    }

    /// Send raw bytes: a frame, or a chunk list after the frame that announced it.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let peer = self.peer;
        let stream = &mut self.stream;
        let send = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        within(self.limits.timeout, send, || {
            std::io::ErrorKind::TimedOut.into()
        })
        .await
        .map_err(|e| Error::io(format!("sending to {peer}"), e))
    }

    /// Receive exactly `len` raw bytes announced by a frame.
    pub async fn recv_raw(&mut self, len: usize) -> Result<Vec<u8>> {
        let timeout = self.limits.timeout;
        let peer = self.peer;
        let mut bytes = Vec::with_capacity(len.min(MAX_READ));
        while bytes.len() < len {
            if self.buffered() == 0 {
                within(timeout, self.buffer(1), || {
                    Error::Timeout(format!("receiving from {peer}"))
                })
                .await?;
            }
            let take = self.buffered().min(len - bytes.len());
            bytes.extend_from_slice(&self.inbox[self.consumed..self.consumed + take]);
            self.consumed += take;
        }
        Ok(bytes)
    }

    /// Resolves when the other side has sent something or closed the connection; on a
    /// request/response connection where we spoke last, that means it is gone.
    pub async fn readable(&self) {
        if self.buffered() == 0 {
            let _ = std::future::poll_fn(|cx| self.stream.socket().poll_readable(cx)).await;
        }
    }

    /// Hand the connection to a thread for a raw transfer (`true`): the socket blocks,
    /// every read and write waiting at most the timeout, and only the `*_blocking`
    /// methods may be used until it is handed back (`false`).
    pub fn set_blocking(&mut self, blocking: bool) -> Result<()> {
        let timeout = blocking.then_some(self.limits.timeout);
        self.stream
            .socket_mut()
            .set_blocking(timeout)
            .map_err(|e| Error::io("setting up the socket", e))
    }

    /// In blocking mode, wait at most `wait` per read or write instead of the timeout
    /// (for a caller that looks at a stop flag between reads and keeps the timeout itself).
    pub fn set_wait(&mut self, wait: std::time::Duration) -> Result<()> {
        self.stream
            .socket_mut()
            .set_blocking(Some(wait.min(self.limits.timeout)))
            .map_err(|e| Error::io("setting up the socket", e))
    }

    /// Drive one poll of the stream on this thread; in blocking mode it never waits on
    /// a reactor, so it never returns `Pending`.
    fn poll_here<T>(
        &mut self,
        poll: impl FnOnce(Pin<&mut dyn Transport>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> std::io::Result<T> {
        if !self.stream.socket().is_blocking() {
            return Err(std::io::Error::other(
                "a blocking call on a connection in async mode",
            ));
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match poll(Pin::new(&mut *self.stream), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the stream is waiting for the socket",
            )),
        }
    }

    /// In blocking mode: read raw bytes (those already received first), at most
    /// `buf.len()`, waiting up to the timeout for some (`TimedOut` after it); 0 means the
    /// other side closed.
    pub fn read_blocking(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.buffered() > 0 {
            let n = self.buffered().min(buf.len());
            buf[..n].copy_from_slice(&self.inbox[self.consumed..self.consumed + n]);
            self.consumed += n;
            if self.consumed == self.inbox.len() {
                self.inbox = Vec::new();
                self.consumed = 0;
            }
            return Ok(n);
        }
        eof_is_end(self.poll_here(|stream, cx| stream.poll_read(cx, buf)))
    }

    /// In blocking mode: write raw bytes, waiting up to the timeout for the other side to
    /// take some (`TimedOut` after it); returns how many were written.
    pub fn write_blocking(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.poll_here(|stream, cx| stream.poll_write(cx, bytes))
    }

    /// In blocking mode: whether the other side has closed or reset the connection,
    /// looked at without waiting and without taking anything (bytes it sent meanwhile
    /// stay for the next read). A throttled upload asks between its short sleeps, so a
    /// downloader that gave up frees its slot then, not after the whole debt.
    pub fn is_gone_blocking(&self) -> bool {
        let socket = self.stream.socket().get_ref();
        if socket.set_nonblocking(true).is_err() {
            return false;
        }
        let peeked = socket.peek(&mut [0u8; 1]);
        let _ = socket.set_nonblocking(false);
        match peeked {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }

    /// In blocking mode: push out what was written (a TLS stream may hold a record back).
    pub fn flush_blocking(&mut self) -> std::io::Result<()> {
        self.poll_here(|stream, cx| stream.poll_flush(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::protocol::{IndexRequest, IndexResponse};

    /// A connected pair: ours (a [`Connection`]) and a plain socket for the other side.
    fn pair(limits: Limits) -> (Connection, TcpStream) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let other = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let conn = Connection::new(
            Socket::new(Async::new(ours).unwrap()),
            Fingerprint([0; 32]),
            limits,
        )
        .unwrap();
        (conn, other)
    }

    #[test]
    fn waiting_for_a_message_holds_no_read_buffer() {
        // Idle sessions spend their lives in this wait: whatever its state holds, each of
        // thousands of them holds, so no read buffer may live in it.
        let (mut conn, _other) = pair(Limits::default());
        let waiting = conn.recv::<IndexRequest>(Duration::from_secs(1));
        let size = std::mem::size_of_val(&waiting);
        assert!(
            size < FIRST_READ / 2,
            "waiting for a message holds {size} bytes"
        );
    }

    #[test]
    fn frames_split_across_writes_and_packed_in_one_arrive_whole() {
        use std::io::Write;
        let (mut conn, mut other) = pair(Limits::default());
        let mut bytes = encode(&IndexRequest::Ping {});
        bytes.extend(encode(&IndexRequest::Peers {}));
        other.write_all(&bytes[..3]).unwrap();
        let reader = std::thread::spawn(move || {
            other.write_all(&bytes[3..]).unwrap();
            other
        });
        smol::block_on(async {
            let first: IndexRequest = conn.recv_reply().await.unwrap();
            assert_eq!(first, IndexRequest::Ping {});
            let second: IndexRequest = conn.recv_reply().await.unwrap();
            assert_eq!(second, IndexRequest::Peers {});
        });
        drop(reader.join().unwrap());
        let end = smol::block_on(conn.recv::<IndexRequest>(Duration::from_secs(5)));
        assert!(
            matches!(end, Ok(None)),
            "a clean close between frames: {end:?}"
        );
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        use std::io::Write;
        let limits = Limits {
            max_frame: 4096,
            ..Limits::default()
        };
        let (mut conn, mut other) = pair(limits);
        other.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
        let got = smol::block_on(conn.recv_reply::<IndexRequest>());
        assert!(matches!(got, Err(Error::FrameTooLarge { len, max: 4096 }) if len == 1 << 30));
    }

    #[test]
    fn garbage_is_malformed_and_a_cut_frame_is_closed() {
        use std::io::Write;
        let (mut conn, mut other) = pair(Limits::default());
        other.write_all(&5u32.to_be_bytes()).unwrap();
        other.write_all(b"{nope").unwrap();
        let got = smol::block_on(conn.recv_reply::<IndexResponse>());
        assert!(matches!(got, Err(Error::Malformed(_))), "{got:?}");
        other.write_all(&100u32.to_be_bytes()).unwrap();
        other.write_all(b"{\"type\"").unwrap();
        drop(other);
        let got = smol::block_on(conn.recv_reply::<IndexResponse>());
        assert!(matches!(got, Err(Error::Closed(_))), "{got:?}");
    }

    #[test]
    fn a_begun_frame_that_stalls_times_out() {
        use std::io::Write;
        let limits = Limits {
            timeout: Duration::from_millis(100),
            ..Limits::default()
        };
        let (mut conn, mut other) = pair(limits);
        other.write_all(&100u32.to_be_bytes()).unwrap();
        let got = smol::block_on(conn.recv::<IndexRequest>(Duration::from_secs(5)));
        assert!(matches!(got, Err(Error::Timeout(_))), "{got:?}");
    }
}
