//! The wire protocol: messages in each direction, their framing, limits and timeouts.
//!
//! Every message is a frame: a 4-byte big-endian length followed by that many bytes of
//! JSON. A frame longer than [`Limits::max_frame`] is refused before anything is
//! allocated for it. The only bytes that are not frames are a file's contents, which
//! follow a [`PeerResponse::Sending`] raw and exactly as long as it announced.
//! `docs/PROTOCOL.md` is the prose version of this module.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use smol::Async;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, IoContext, Result};

/// Protocol version, exchanged in the first message of every connection.
pub const VERSION: u32 = 1;

/// Default largest frame, in bytes.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Default time allowed for connecting, and for a message to arrive once it has begun.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest file name (a relative path with `/` separators), in bytes.
pub const MAX_NAME: usize = 1024;

/// Longest search pattern, in bytes.
pub const MAX_PATTERN: usize = 256;

/// Longest free-text field (agent names, error messages), in bytes.
pub const MAX_TEXT: usize = 256;

/// Length of a session token in hex digits.
pub const TOKEN_HEX: usize = 32;

/// Bounds every connection enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame accepted, in bytes.
    pub max_frame: u32,
    /// Time allowed to connect, and for a started message to arrive whole.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Smallest chunk a file is verified in, in bytes.
pub const MIN_CHUNK: u64 = 1 << 20;

/// Most chunks a file is cut into; larger files get larger chunks.
pub const MAX_CHUNKS: u64 = 8192;

/// The chunk size of a file of `size` bytes: a power of two, at least [`MIN_CHUNK`],
/// large enough that the file has at most [`MAX_CHUNKS`] chunks.
pub fn chunk_size(size: u64) -> u64 {
    size.div_ceil(MAX_CHUNKS).next_power_of_two().max(MIN_CHUNK)
}

/// How many chunks a file of `size` bytes has (the last one may be short).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(chunk_size(size))
}

/// One shared file as a peer announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the shared folder, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, 64 lowercase hex digits.
    pub sha256: String,
    /// SHA-256 of the file's chunk list (the SHA-256 digests of its chunks, 32 raw bytes
    /// each, concatenated), 64 lowercase hex digits.
    pub chunks: String,
}

/// One search result: a file and the peer that shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hit {
    /// Peer ID assigned by the index.
    pub peer_id: u64,
    /// Address of the peer's file server, as the index saw the peer connect.
    pub addr: SocketAddr,
    /// The file.
    pub file: FileEntry,
    /// When the peer registered, in seconds since the Unix epoch.
    pub shared_at: i64,
}

/// One registered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    /// Peer ID assigned by the index.
    pub peer_id: u64,
    /// Address of the peer's file server.
    pub addr: SocketAddr,
    /// Number of files shared.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// When the peer registered, in seconds since the Unix epoch.
    pub shared_at: i64,
}

// Variants without fields are written `Name {}` so that `deny_unknown_fields` also
// refuses stray fields on them (serde lets them through on unit variants).

/// Requests a client or peer sends to the index server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IndexRequest {
    /// First message of every connection.
    Hello {
        /// Protocol version of the client.
        version: u32,
    },
    /// Make this connection a peer session sharing `files`, served on `port`.
    Register {
        /// Port of the peer's file server; the host is taken from the connection.
        port: u16,
        /// Secret the peer keeps across reconnections to keep its Peer ID.
        token: String,
        /// The first batch of files (more may follow with `AddFiles`).
        files: Vec<FileEntry>,
    },
    /// Add (or replace, by name) files of this session's peer.
    AddFiles {
        /// The files.
        files: Vec<FileEntry>,
    },
    /// Withdraw files of this session's peer by name.
    RemoveFiles {
        /// Their names.
        names: Vec<String>,
    },
    /// Withdraw every file of this session's peer; the session stays open.
    Unregister {},
    /// Files whose names match a pattern (substring, or `*`/`?` wildcards), narrowed by
    /// the optional criteria.
    Search {
        /// The pattern; empty means any name (then `sha256` is required).
        pattern: String,
        /// A lowercase hex prefix of the SHA-256.
        #[serde(default)]
        sha256: Option<String>,
        /// Smallest size, inclusive.
        #[serde(default)]
        min_size: Option<u64>,
        /// Largest size, inclusive.
        #[serde(default)]
        max_size: Option<u64>,
        /// Most results wanted (the server caps it at its own limit).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Every file of one peer (Napster's browse).
    Browse {
        /// The peer.
        peer_id: u64,
        /// Most results wanted (the server caps it at its own limit).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Files with exactly this name.
    Lookup {
        /// The name.
        name: String,
    },
    /// Every registered peer.
    Peers {},
    /// Liveness check; keeps a peer session alive.
    Ping {},
}

/// Responses of the index server, one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IndexResponse {
    /// Answer to `Hello`.
    Welcome {
        /// Protocol version of the server.
        version: u32,
    },
    /// Answer to `Register`.
    Registered {
        /// The Peer ID of this session.
        peer_id: u64,
        /// How many files the peer now shares.
        files: u64,
    },
    /// Answer to `AddFiles`, `RemoveFiles`, `Unregister`.
    Done {
        /// How many files the peer now shares.
        files: u64,
    },
    /// Answer to `Search` and `Lookup`.
    Results {
        /// The matches, by peer then name.
        hits: Vec<Hit>,
        /// True when more matched than the server's result limit.
        truncated: bool,
    },
    /// Answer to `Peers`.
    Peers {
        /// The peers.
        peers: Vec<PeerInfo>,
    },
    /// Answer to `Ping`.
    Pong {},
    /// The request failed; the connection stays usable unless said otherwise.
    Error {
        /// The kind of error.
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
}

/// Requests a downloader sends to a peer's file server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerRequest {
    /// First message of every connection.
    Hello {
        /// Protocol version of the downloader.
        version: u32,
    },
    /// Send bytes of a shared file.
    Get {
        /// Name as registered with the index.
        name: String,
        /// First byte wanted.
        offset: u64,
        /// How many bytes; `None` means to the end.
        length: Option<u64>,
    },
    /// The SHA-256 digests of a shared file's chunks.
    Chunks {
        /// Name as registered with the index.
        name: String,
    },
    /// Liveness and latency check.
    Ping {},
}

/// Responses of a peer's file server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerResponse {
    /// Answer to `Hello`.
    Welcome {
        /// Protocol version of the peer.
        version: u32,
    },
    /// Exactly `length` raw bytes of the file follow this frame.
    Sending {
        /// Current size of the whole file.
        size: u64,
        /// Offset of the first byte sent.
        offset: u64,
        /// Number of bytes that follow.
        length: u64,
    },
    /// Exactly `count` × 32 raw bytes follow: the chunks' SHA-256 digests, in order.
    ChunkList {
        /// Size of the file the list describes.
        size: u64,
        /// Number of digests that follow; always `chunk_count(size)`.
        count: u64,
    },
    /// Answer to `Ping`.
    Pong {},
    /// The request failed.
    Error {
        /// The kind of error.
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
}

/// Kinds of error replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message could not be decoded or broke a limit.
    BadRequest,
    /// The first message was not `Hello` or the version differs.
    Version,
    /// The request needs a registered session.
    NotRegistered,
    /// The file or peer does not exist.
    NotFound,
    /// The request asked for bytes outside the file.
    Range,
    /// The server is at its connection limit.
    Busy,
    /// Something failed on the server's side.
    Internal,
}

/// Why a name may not travel in the protocol, or `None` when it may.
///
/// A name is a relative path: non-empty `/`-separated components, none of them `.` or
/// `..`, no backslash, no control characters, at most [`MAX_NAME`] bytes.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > MAX_NAME {
        return Some("is too long");
    }
    if name.chars().any(char::is_control) {
        return Some("contains control characters");
    }
    if name.contains('\\') {
        return Some("contains a backslash");
    }
    if name.starts_with('/') {
        return Some("is an absolute path");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some("has an empty, `.` or `..` component");
    }
    None
}

/// Whether `hex` is a SHA-256 in lowercase hex.
pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Check a file entry received from the network.
pub fn check_entry(entry: &FileEntry) -> Result<()> {
    if let Some(problem) = name_problem(&entry.name) {
        return Err(Error::Malformed(format!(
            "file name {:?} {problem}",
            truncate(&entry.name)
        )));
    }
    if !is_sha256_hex(&entry.sha256) {
        return Err(Error::Malformed(format!(
            "sha256 of {:?} is not 64 lowercase hex digits",
            truncate(&entry.name)
        )));
    }
    if !is_sha256_hex(&entry.chunks) {
        return Err(Error::Malformed(format!(
            "chunks of {:?} is not 64 lowercase hex digits",
            truncate(&entry.name)
        )));
    }
    if entry.size > i64::MAX as u64 {
        return Err(Error::Malformed(format!(
            "size of {:?} is out of range",
            truncate(&entry.name)
        )));
    }
    Ok(())
}

/// Untrusted text (an error message from the other side) made safe to print: control
/// characters (terminal escapes) removed, at most [`MAX_TEXT`] bytes.
pub fn clean_text(text: &str) -> String {
    let mut clean = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if clean.len() + c.len_utf8() > MAX_TEXT {
            clean.push('…');
            break;
        }
        clean.push(c);
    }
    clean
}

/// A prefix of untrusted text short enough to quote in a message.
pub fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// JSON bytes a hit's fields other than the name can take at most: keys, an IPv6 address
/// with port, three 20-digit numbers and the two 64-digit hashes.
const HIT_JSON_FIXED: usize = 360;

/// An upper bound of a hit's JSON length, without encoding it. Names hold no control
/// characters (they are checked on the way in), so only `"` and `\` grow when escaped.
pub fn hit_json_bound(hit: &Hit) -> usize {
    let escaped = hit
        .file
        .name
        .bytes()
        .filter(|b| matches!(b, b'"' | b'\\'))
        .count();
    hit.file.name.len() + escaped + HIT_JSON_FIXED
}

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
            .context(|| "reading the peer's address".into())?;
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
            .context(|| format!("connecting to {addr}"))?;
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
            .context(|| "reading the local address".into())
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
            .context(|| format!("sending to {peer}"))
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
            .context(|| "taking over the socket".into())?;
        stream
            .set_nonblocking(false)
            .context(|| "making the socket blocking".into())?;
        stream.set_read_timeout(Some(self.limits.timeout)).ok();
        stream.set_write_timeout(Some(self.limits.timeout)).ok();
        Ok((stream, received))
    }
}
