//! A socket turned into a stream of frames, with the limits it enforces: every frame
//! bounded, every read and write under a timeout.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use smol::Async;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::error::Error;
use super::rules::{Limits, clean_text};

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

/// Most bytes read at once, so that a frame's claimed length is never allocated before
/// its bytes arrive.
const MAX_READ: usize = 64 * 1024;

/// A connection speaking frames, with the limits it enforces.
///
/// Reads are buffered: one `read` usually brings a whole request, and bytes that arrive
/// beyond a frame (a raw transfer right behind its `sending` frame) are kept for what
/// comes next, [`Connection::into_blocking`] included.
pub struct Connection {
    stream: Async<TcpStream>,
    peer: SocketAddr,
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
    /// Wrap an accepted or connected stream.
    pub fn new(stream: Async<TcpStream>, limits: Limits) -> Result<Self> {
        Connection::with_received(stream, limits, Vec::new())
    }

    /// Wrap a stream from which `received` was already read and not yet used.
    pub fn with_received(
        stream: Async<TcpStream>,
        limits: Limits,
        received: Vec<u8>,
    ) -> Result<Self> {
        let peer = stream
            .get_ref()
            .peer_addr()
            .map_err(|e| Error::io("reading the peer's address", e))?;
        stream.get_ref().set_nodelay(true).ok();
        Ok(Connection {
            stream,
            peer,
            limits,
            inbox: received,
            consumed: 0,
        })
    }

    /// Connect to `addr` within the limits' timeout.
    pub async fn connect(addr: SocketAddr, limits: Limits) -> Result<Self> {
        let stream = Async::<TcpStream>::connect(addr)
            .or(async {
                smol::Timer::after(limits.timeout).await;
                Err(std::io::ErrorKind::TimedOut.into())
            })
            .await
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        Connection::new(stream, limits)
    }

    /// Address of the other side.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Our address on this connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.stream
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
        let n = self.stream.read(&mut grown.buf[start..]).await?;
        let mut grown = grown;
        grown.keep = start + n;
        Ok(n)
    }

    /// Receive one message, waiting up to `idle` for it to begin.
    ///
    /// `Ok(None)` is a clean end of the connection between messages.
    pub async fn recv<T: DeserializeOwned>(&mut self, idle: Duration) -> Result<Option<T>> {
        if self.buffered() == 0 {
            // Wait without a buffer: idle connections (thousands of peer sessions) hold
            // no memory for reading.
            let got = async {
                self.stream.readable().await?;
                self.fill(READ_CHUNK).await
            }
            .or(async {
                smol::Timer::after(idle).await;
                Err(std::io::ErrorKind::TimedOut.into())
            })
            .await;
            match got {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Error::Timeout(format!("waiting for {}", self.peer)));
                }
                Err(e) => return Err(Error::io(format!("receiving from {}", self.peer), e)),
            }
        }
        let timeout = self.limits.timeout;
        let peer = self.peer;
        self.frame()
            .or(async {
                smol::Timer::after(timeout).await;
                Err(Error::Timeout(format!("receiving a message from {peer}")))
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
        self.stream
            .write_all(bytes)
            .or(async {
                smol::Timer::after(self.limits.timeout).await;
                Err(std::io::ErrorKind::TimedOut.into())
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
                self.buffer(1)
                    .or(async {
                        smol::Timer::after(timeout).await;
                        Err(Error::Timeout(format!("receiving from {peer}")))
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
            let _ = self.stream.readable().await;
        }
    }

    /// Hand the socket over to blocking code for a raw transfer, with `timeout` on
    /// every read and write, together with the bytes already received and not used
    /// (read them first).
    pub fn into_blocking(self) -> Result<(TcpStream, Vec<u8>)> {
        let received = self.inbox[self.consumed..].to_vec();
        let stream = self
            .stream
            .into_inner()
            .map_err(|e| Error::io("taking over the socket", e))?;
        stream
            .set_nonblocking(false)
            .map_err(|e| Error::io("making the socket blocking", e))?;
        stream.set_read_timeout(Some(self.limits.timeout)).ok();
        stream.set_write_timeout(Some(self.limits.timeout)).ok();
        Ok((stream, received))
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
        let conn = Connection::new(Async::new(ours).unwrap(), limits).unwrap();
        (conn, other)
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
