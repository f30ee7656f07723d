//! Helpers shared by the integration tests: index servers and sharing peers started
//! in-process on port 0, a raw socket that speaks frames by hand, a bounded wait for a
//! condition, deterministic file contents; and, in [`process`], the real binary run
//! from a script.

#![allow(dead_code)]

pub mod process;
pub mod web;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::{Duration, Instant};

use napster::client::IndexClient;
use napster::index::{self, MemoryStore, Settings};
use napster::peer::serve::{self as file_server, SharedFolder};
use napster::peer::{Sharing, SharingSettings};
use napster::protocol::{
    self, ErrorCode, FileEntry, IndexRequest, IndexResponse, Limits, PeerRequest, PeerResponse,
};
use napster::runtime::{self, ShutdownTrigger};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use smol::{Async, Task};

/// Longest any single wait in these tests may take before it counts as a hang.
pub const WAIT: Duration = Duration::from_secs(20);

/// Largest frame the raw helper accepts back from a server.
const MAX_REPLY: usize = 16 << 20;

/// Limits for well-behaved clients in the tests: generous, so only the server's own
/// limits are under test.
pub fn client_limits() -> Limits {
    Limits {
        max_frame: protocol::DEFAULT_MAX_FRAME,
        timeout: WAIT,
        ..Limits::default()
    }
}

/// Index settings for hostile tests: small frames, a short frame timeout, a small
/// per-peer file limit, and a session TTL long enough not to interfere.
pub fn hostile_index_settings() -> Settings {
    Settings {
        limits: Limits {
            max_frame: 64 * 1024,
            timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        session_ttl: Duration::from_secs(30),
        max_connections: 64,
        max_results: 100,
        max_files_per_peer: 16,
        ..Settings::default()
    }
}

/// Start an index server with `settings` on 127.0.0.1, any port. Dropping (or
/// triggering) the returned trigger stops it.
pub fn start_index(settings: Settings) -> (SocketAddr, ShutdownTrigger) {
    let (addr, trigger, task) = start_index_at(([127, 0, 0, 1], 0).into(), settings);
    task.detach();
    (addr, trigger)
}

/// Start an in-memory index server with `settings` listening on `addr` (port 0: any);
/// its address, the trigger that stops it, and its task, which ends once it stopped.
pub fn start_index_at(
    addr: SocketAddr,
    settings: Settings,
) -> (SocketAddr, ShutdownTrigger, Task<napster::Result<()>>) {
    let listener = Async::<TcpListener>::bind(addr).expect("binding the index");
    let addr = listener
        .get_ref()
        .local_addr()
        .expect("the index's address");
    let (trigger, shutdown) = runtime::shutdown_pair();
    let store = Arc::new(MemoryStore::new());
    let task = runtime::spawn(index::run(listener, store, settings, shutdown));
    (addr, trigger, task)
}

/// Settings for a sharing peer: any port, default frame limits, no upload limit, at
/// most `max_uploads` at once, heartbeats for `session_ttl`, default living share.
pub fn sharing_settings(max_uploads: usize, session_ttl: Duration) -> SharingSettings {
    let mut settings = SharingSettings {
        session_ttl,
        ..SharingSettings::default()
    };
    settings.server.max_uploads = max_uploads;
    // Each peer of a test is its own key, so its own peer.
    settings.server.identity = napster::identity::Identity::generate().unwrap();
    settings
}

/// Scan and hash `dir`, then share it with the index at `index` under `settings`.
pub async fn share_folder(dir: &Path, index: SocketAddr, settings: &SharingSettings) -> Sharing {
    let share = napster::peer::scan::scan(dir)
        .unwrap()
        .hash(&|_| {})
        .unwrap();
    Sharing::start(share, &[index], settings).await.unwrap()
}

/// Connect a well-behaved index client.
pub fn index_client(addr: SocketAddr) -> napster::Result<IndexClient> {
    smol::block_on(IndexClient::connect(addr, client_limits()))
}

/// A file entry with well-formed (made-up) checksums.
pub fn entry(name: &str, size: u64) -> FileEntry {
    FileEntry {
        tags: None,
        name: name.into(),
        size,
        sha256: format!("{:064x}", size.wrapping_add(0x5eed)),
        chunks: format!("{:064x}", size.wrapping_add(0xc4a2)),
    }
}

/// The true file entry of `contents` shared under `name`: its size, SHA-256 and
/// chunk-list root, computed the way a peer computes them.
pub fn real_entry(name: &str, contents: &[u8]) -> FileEntry {
    let digest = napster::digest::digest_bytes(contents);
    FileEntry {
        tags: None,
        name: name.into(),
        size: digest.size,
        sha256: digest.sha256,
        chunks: napster::protocol::chunks_root(&digest.chunks),
    }
}

/// The chunk digests of `contents`, concatenated as they travel after a `ChunkList`.
pub fn chunk_bytes(contents: &[u8]) -> Vec<u8> {
    napster::digest::digest_bytes(contents).chunks.concat()
}

/// A token of the right shape, distinct per `n`.
pub fn token(n: u128) -> String {
    format!("{n:032x}")
}

/// Wait, polling every few milliseconds, until `condition` holds; panic naming `what`
/// once `within` has passed.
pub fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What reading one frame from a raw socket gave.
#[derive(Debug)]
pub enum Frame {
    /// A whole frame's body.
    Body(Vec<u8>),
    /// The other side closed (or reset) the connection.
    Closed,
    /// Nothing (whole) arrived within the read timeout.
    TimedOut,
}

/// The identity every raw test client presents (one per test process).
pub fn test_identity() -> napster::identity::Identity {
    napster::identity::Identity::ephemeral()
}

/// What a [`Raw`] runs on: TLS as a client (what napster speaks), TLS as a server (a
/// fake peer), or the bare socket (to send what is not TLS at all).
pub enum RawStream {
    /// The bare socket.
    Plain(TcpStream),
    /// TLS, we are the client.
    Client(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// TLS, we are the server.
    Server(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl RawStream {
    /// The socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            RawStream::Plain(s) => s,
            RawStream::Client(s) => s.get_ref(),
            RawStream::Server(s) => s.get_ref(),
        }
    }
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Plain(s) => s.read(buf),
            RawStream::Client(s) => s.read(buf),
            RawStream::Server(s) => s.read(buf),
        }
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Plain(s) => s.write(buf),
            RawStream::Client(s) => s.write(buf),
            RawStream::Server(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            RawStream::Plain(s) => s.flush(),
            RawStream::Client(s) => s.flush(),
            RawStream::Server(s) => s.flush(),
        }
    }
}

/// A raw connection (TLS unless made with [`Raw::plain`]) on which the test writes
/// whatever bytes it likes and reads frames back, every read bounded by a timeout.
pub struct Raw {
    pub stream: RawStream,
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            // A TLS alert: the other side refused and closed.
            | ErrorKind::InvalidData
    )
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

impl Raw {
    /// Connect to `addr` and finish a TLS handshake with a new identity, with [`WAIT`]
    /// as read and write timeout.
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connecting a raw socket");
        Raw::from_stream(stream)
    }

    /// Connect to `addr` without TLS (to send what an older napster or a stranger sends).
    pub fn plain(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connecting a raw socket");
        Raw::with_timeouts(RawStream::Plain(stream))
    }

    /// Finish a TLS handshake as a client on a connected stream, with a new identity
    /// (so, as a new peer if it registers).
    pub fn from_stream(stream: TcpStream) -> Raw {
        let identity = napster::identity::Identity::generate().unwrap();
        Raw::client_as(stream, &identity, None).expect("the TLS handshake")
    }

    /// Finish a TLS handshake as a client on a connected stream, as `identity`, with a
    /// server that must prove `expected` when given.
    pub fn client_as(
        stream: TcpStream,
        identity: &napster::identity::Identity,
        expected: Option<protocol::Fingerprint>,
    ) -> std::io::Result<Raw> {
        let (config, _) = napster::tls::client_config(identity, expected);
        let name = rustls::pki_types::ServerName::try_from(napster::tls::SERVER_NAME).unwrap();
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut raw = Raw::with_timeouts(RawStream::Client(Box::new(rustls::StreamOwned::new(
            conn, stream,
        ))));
        if let RawStream::Client(s) = &mut raw.stream {
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
        }
        Ok(raw)
    }

    /// Finish a TLS handshake as a server on an accepted stream, as `identity` (a fake
    /// peer's file server).
    pub fn accepted(stream: TcpStream, identity: &napster::identity::Identity) -> Raw {
        let config = napster::tls::server_config(identity);
        let conn = rustls::ServerConnection::new(config).expect("a TLS server");
        let mut raw = Raw::with_timeouts(RawStream::Server(Box::new(rustls::StreamOwned::new(
            conn, stream,
        ))));
        if let RawStream::Server(s) = &mut raw.stream {
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock).expect("the TLS handshake");
            }
        }
        raw
    }

    fn with_timeouts(stream: RawStream) -> Raw {
        let tcp = stream.tcp();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        tcp.set_nodelay(true).ok();
        Raw { stream }
    }

    /// Set the read timeout.
    pub fn read_timeout(&mut self, timeout: Duration) {
        self.stream.tcp().set_read_timeout(Some(timeout)).unwrap();
    }

    /// Write raw bytes; an error means the server already closed the connection.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Write a frame whose body is `body`, whatever it is.
    pub fn send_body(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.send_bytes(&frame)
    }

    /// Write a message as a proper frame.
    pub fn send<T: Serialize>(&mut self, message: &T) {
        self.send_bytes(&protocol::encode(message))
            .expect("sending a frame");
    }

    /// No more bytes from us.
    pub fn shutdown_write(&mut self) {
        match &mut self.stream {
            RawStream::Plain(_) => {}
            RawStream::Client(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
            RawStream::Server(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        }
        let _ = self.stream.tcp().shutdown(NetShutdown::Write);
    }

    /// Read exactly `buf.len()` bytes; `Err(Frame::Closed/TimedOut)` otherwise.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Frame> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(Frame::Closed),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) => return Err(Frame::Closed),
                Err(e) if is_timeout(&e) => return Err(Frame::TimedOut),
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
        Ok(())
    }

    /// Read one frame within the read timeout.
    pub fn read_frame(&mut self) -> Frame {
        let mut header = [0u8; 4];
        if let Err(outcome) = self.read_exact(&mut header) {
            return outcome;
        }
        let len = u32::from_be_bytes(header) as usize;
        assert!(len <= MAX_REPLY, "the server sent a frame of {len} bytes");
        let mut body = vec![0; len];
        match self.read_exact(&mut body) {
            Ok(()) => Frame::Body(body),
            Err(outcome) => outcome,
        }
    }

    /// Read one frame and decode it as `T`; panics if none comes or it does not decode.
    pub fn recv<T: DeserializeOwned>(&mut self) -> T {
        match self.read_frame() {
            Frame::Body(body) => serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "undecodable reply {:?}: {e}",
                    String::from_utf8_lossy(&body)
                )
            }),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Read until the connection closes, which must happen within `within`; every frame
    /// read meanwhile is returned.
    pub fn frames_until_closed(&mut self, within: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the connection is still open after {within:?}"
            );
            self.read_timeout(left);
            match self.read_frame() {
                Frame::Body(body) => frames.push(body),
                Frame::Closed => return frames,
                Frame::TimedOut => panic!("the connection is still open after {within:?}"),
            }
        }
    }

    /// Assert that the server closes the connection within `within` without sending
    /// anything more.
    pub fn expect_closed(&mut self, within: Duration) {
        let frames = self.frames_until_closed(within);
        assert!(
            frames.is_empty(),
            "expected the connection to close, got {:?}",
            frames
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
        );
    }

    /// Whether the connection is still open with nothing to read right now.
    pub fn is_open_and_quiet(&mut self) -> bool {
        let tcp = self.stream.tcp();
        tcp.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let open = match tcp.peek(&mut byte) {
            Ok(_) => false,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        };
        tcp.set_nonblocking(false).unwrap();
        open
    }

    /// Say hello to an index and expect its welcome.
    pub fn index_hello(&mut self) {
        self.send(&IndexRequest::Hello {
            version: protocol::VERSION,
        });
        match self.recv::<IndexResponse>() {
            IndexResponse::Welcome { version } => assert_eq!(version, protocol::VERSION),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Say hello to a file server and expect its welcome.
    pub fn peer_hello(&mut self) {
        self.send(&PeerRequest::Hello {
            version: protocol::VERSION,
        });
        match self.recv::<PeerResponse>() {
            PeerResponse::Welcome { version } => assert_eq!(version, protocol::VERSION),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Send an index request and return the answer.
    pub fn index_request(&mut self, request: &IndexRequest) -> IndexResponse {
        self.send(request);
        self.recv()
    }
}

/// Connect to `addr`, write `bytes`, and read one frame back within `timeout`.
pub fn exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Frame {
    let mut raw = Raw::connect(addr);
    raw.read_timeout(timeout);
    if raw.send_bytes(bytes).is_err() {
        // The server may have closed already; what it sent first is still readable.
    }
    raw.read_frame()
}

/// The error code of an index reply, panicking on anything but an error.
pub fn index_error_code(response: &IndexResponse) -> ErrorCode {
    match response {
        IndexResponse::Error { code, .. } => *code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Write `files` (relative `/`-separated names) under `root`, creating folders.
pub fn write_files(root: &Path, files: &[(&str, &[u8])]) {
    for (name, contents) in files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
    }
}

/// File-server settings for hostile tests.
pub fn file_server_settings() -> file_server::Settings {
    file_server::Settings {
        identity: napster::identity::Identity::generate().unwrap(),
        limits: Limits {
            max_frame: 64 * 1024,
            timeout: Duration::from_secs(2),
            ..Limits::default()
        },
        max_uploads: 8,
        max_uploads_per_address: 1024,
        // Every test connects from 127.0.0.1: one address may hold the whole server.
        admits: napster::gate::Bounds {
            connections: 1024,
            connections_per_address: 1024,
            handshakes: 1024,
            handshakes_per_address: 1024,
        },
        ..file_server::Settings::default()
    }
}

/// The secret that lives next to (outside) every shared folder.
pub const SECRET: &[u8] = b"TOP-SECRET: must never leave this machine\n";

/// A file server running on a temporary folder.
pub struct FileServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The shared folder (`<tmp>/share`).
    pub root: PathBuf,
    /// The temporary folder: `share/` and, outside it, `secret` and `outside/secret`.
    pub tmp: tempfile::TempDir,
    /// What it serves.
    pub folder: SharedFolder,
    /// Stops it when dropped.
    pub trigger: ShutdownTrigger,
}

/// Make `<tmp>/share` with `files`, plus secrets outside it; nothing is scanned yet.
pub fn prepare_folder(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("share");
    std::fs::create_dir_all(&root).unwrap();
    write_files(&root, files);
    write_files(
        tmp.path(),
        &[("secret", SECRET), ("outside/secret", SECRET)],
    );
    (tmp, root)
}

/// Scan and hash `root` and serve it on 127.0.0.1, any port.
pub fn serve_folder(root: &Path) -> (SocketAddr, SharedFolder, ShutdownTrigger) {
    serve_folder_with(root, file_server_settings(), [127, 0, 0, 1].into())
}

/// Scan and hash `root` and serve it with `settings` on `ip`, any port.
pub fn serve_folder_with(
    root: &Path,
    settings: file_server::Settings,
    ip: std::net::IpAddr,
) -> (SocketAddr, SharedFolder, ShutdownTrigger) {
    let share = napster::peer::scan::scan(root)
        .expect("scanning the shared folder")
        .hash(&|_| {})
        .expect("hashing the shared folder");
    let folder: SharedFolder = Arc::new(RwLock::new(share));
    let listener = Async::<TcpListener>::bind((ip, 0)).expect("binding the file server");
    let addr = listener.get_ref().local_addr().unwrap();
    let (trigger, shutdown) = runtime::shutdown_pair();
    runtime::spawn(file_server::run(
        listener,
        folder.clone(),
        settings,
        shutdown,
    ))
    .detach();
    (addr, folder, trigger)
}

/// Start a file server on a temporary folder holding `files`.
pub fn start_file_server(files: &[(&str, &[u8])]) -> FileServer {
    let (tmp, root) = prepare_folder(files);
    start_file_server_on(tmp, root)
}

/// Start a file server on a folder made by [`prepare_folder`] (and perhaps changed).
pub fn start_file_server_on(tmp: tempfile::TempDir, root: PathBuf) -> FileServer {
    let (addr, folder, trigger) = serve_folder(&root);
    FileServer {
        addr,
        root,
        tmp,
        folder,
        trigger,
    }
}

/// What a `Get` gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    /// A `Sending` frame and the bytes that followed it.
    Data {
        size: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// An error reply.
    Error(ErrorCode),
}

/// Send a `Get` on a connection that said hello, and read the answer and its bytes.
pub fn get_on(raw: &mut Raw, name: &str, offset: u64, length: Option<u64>) -> Got {
    raw.send(&PeerRequest::Get {
        name: name.into(),
        offset,
        length,
    });
    let mut answer = raw.recv::<PeerResponse>();
    while let PeerResponse::Queued { .. } = answer {
        answer = raw.recv::<PeerResponse>();
    }
    match answer {
        PeerResponse::Sending {
            size,
            offset,
            length,
        } => {
            assert!(length <= 64 << 20, "absurd length announced: {length}");
            let mut bytes = vec![0; length as usize];
            if let Err(outcome) = raw.read_exact(&mut bytes) {
                panic!("the file server announced {length} bytes, then: {outcome:?}");
            }
            Got::Data {
                size,
                offset,
                bytes,
            }
        }
        PeerResponse::Error { code, .. } => Got::Error(code),
        other => panic!("unexpected answer to get: {other:?}"),
    }
}

/// What a `Chunks` request gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// A `ChunkList` frame and the digests that followed it.
    List {
        size: u64,
        count: u64,
        digests: Vec<[u8; 32]>,
    },
    /// An error reply.
    Error(ErrorCode),
}

/// Send a `Chunks` request on a connection that said hello, and read the answer and
/// the digests that follow it.
pub fn chunks_on(raw: &mut Raw, name: &str) -> Chunked {
    raw.send(&PeerRequest::Chunks { name: name.into() });
    match raw.recv::<PeerResponse>() {
        PeerResponse::ChunkList { size, count } => {
            assert!(
                count <= protocol::MAX_CHUNKS,
                "absurd count announced: {count}"
            );
            let mut bytes = vec![0; count as usize * 32];
            if let Err(outcome) = raw.read_exact(&mut bytes) {
                panic!("the file server announced {count} digests, then: {outcome:?}");
            }
            let digests = bytes
                .chunks_exact(32)
                .map(|d| d.try_into().unwrap())
                .collect();
            Chunked::List {
                size,
                count,
                digests,
            }
        }
        PeerResponse::Error { code, .. } => Chunked::Error(code),
        other => panic!("unexpected answer to chunks: {other:?}"),
    }
}

impl FileServer {
    /// A new connection that said hello.
    pub fn connect(&self) -> Raw {
        let mut raw = Raw::connect(self.addr);
        raw.peer_hello();
        raw
    }

    /// `Chunks` on a new connection.
    pub fn chunks(&self, name: &str) -> Chunked {
        chunks_on(&mut self.connect(), name)
    }

    /// `Get` on a new connection.
    pub fn get(&self, name: &str, offset: u64, length: Option<u64>) -> Got {
        get_on(&mut self.connect(), name, offset, length)
    }

    /// Assert a normal request is still served, with the right bytes.
    pub fn assert_serves(&self, name: &str, contents: &[u8]) {
        assert_eq!(
            self.get(name, 0, None),
            Got::Data {
                size: contents.len() as u64,
                offset: 0,
                bytes: contents.to_vec(),
            },
            "the file server no longer serves {name} properly"
        );
    }
}

/// The xorshift64 generator behind [`noise`] and [`noise_words`].
struct Xorshift(u64);

impl Xorshift {
    /// A generator seeded from `seed` (any value, zero included).
    fn new(seed: u64) -> Xorshift {
        Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next state.
    fn step(&mut self) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
}

/// Deterministic pseudo-random bytes (xorshift), for file contents and noise.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(seed);
    (0..len).map(|_| (rng.step() >> 24) as u8).collect()
}

/// Deterministic pseudo-random bytes, eight per xorshift step: quick for large files,
/// and every chunk differs from every other.
pub fn noise_words(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.step().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every path under `dir` (recursively, symlinks not followed) with the contents of the
/// regular files, for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for item in std::fs::read_dir(&folder).unwrap() {
            let item = item.unwrap();
            let path = item.path();
            let kind = item.file_type().unwrap();
            if kind.is_dir() {
                pending.push(path.clone());
                out.push((path, None));
            } else if kind.is_file() {
                let contents = std::fs::read(&path).unwrap();
                out.push((path, Some(contents)));
            } else {
                out.push((path, None));
            }
        }
    }
    out.sort();
    out
}

/// Names of the entries of `dir` (hidden ones included), sorted.
pub fn entries_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(items) => items
            .map(|i| i.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("listing {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// Whether `file_name` is one of the downloader's hidden resume files: a part file
/// (`.name.hex.napster-part`) or its state (`<part>.state`).
pub fn is_resume_file(file_name: &str) -> bool {
    file_name.starts_with('.')
        && (file_name.ends_with(".napster-part") || file_name.ends_with(".napster-part.state"))
}

/// The part file a download of `file_name` (its name on disk) with SHA-256 `sha256`
/// keeps in the downloads folder.
pub fn part_file_name(file_name: &str, sha256: &str) -> String {
    format!(".{file_name}.{}.napster-part", &sha256[..16])
}

/// Assert that a failed download left nothing visible in `dir`: no file under
/// `final_name`, and nothing but hidden resume files (part file and state).
pub fn assert_only_resume_files(dir: &Path, final_name: &str, what: &str) {
    assert!(
        !dir.join(final_name).exists(),
        "{what}: a file appeared under the final name {final_name:?}"
    );
    let left = entries_of(dir);
    assert!(
        left.iter().all(|name| is_resume_file(name)),
        "{what}: the downloads folder should hold only hidden resume files, holds {left:?}"
    );
}

/// A fake index on port 0 answering every connection on a thread of its own: `Hello`
/// and `Ping` as an index would, every other request with what `answer` returns (a
/// hostile index's lies). The threads end with the test process.
pub fn fake_index(
    answer: impl Fn(IndexRequest) -> IndexResponse + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let answer = answer.clone();
            std::thread::spawn(move || {
                // The fake index is a TLS server with a key of its own.
                let identity = napster::identity::Identity::generate().unwrap();
                let mut raw = Raw::accepted(stream, &identity);
                while let Frame::Body(body) = raw.read_frame() {
                    let Ok(request) = serde_json::from_slice::<IndexRequest>(&body) else {
                        break;
                    };
                    let response = match request {
                        IndexRequest::Hello { .. } => IndexResponse::Welcome {
                            version: protocol::VERSION,
                        },
                        IndexRequest::Ping {} => IndexResponse::Pong {},
                        other => answer(other),
                    };
                    let body = serde_json::to_vec(&response).unwrap();
                    if raw.send_body(&body).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A search or lookup answer of a fake index.
pub fn results(hits: Vec<napster::protocol::Hit>) -> IndexResponse {
    IndexResponse::Results {
        hits,
        truncated: false,
        total: None,
    }
}

/// An address nothing listens on (a port just bound and released).
pub fn closed_addr() -> SocketAddr {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Start an in-memory index server with `settings` on 127.0.0.1, any port, counting into
/// metrics: its address, the trigger that stops it, and the metrics.
pub fn start_index_with_metrics(
    settings: Settings,
) -> (SocketAddr, ShutdownTrigger, Arc<index::Metrics>) {
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).expect("binding the index");
    let addr = listener.get_ref().local_addr().unwrap();
    let metrics = Arc::new(index::Metrics::new());
    let (trigger, shutdown) = runtime::shutdown_pair();
    let store = Arc::new(MemoryStore::new());
    let run = index::run_with_metrics(listener, store, settings, shutdown, Some(metrics.clone()));
    runtime::spawn(run).detach();
    (addr, trigger, metrics)
}

/// The value of the metric line that starts with `series` (name and labels), 0 if none.
pub fn metric(metrics: &index::Metrics, series: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `host:port` of an `http://host:port/path` URL.
pub fn http_host(url: &str) -> &str {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    rest.split('/').next().unwrap_or(rest)
}

/// GET `url` (`http://host:port/path`) over a plain socket, as a scraper would; the
/// status line and the body.
pub fn scrape(url: &str) -> (String, String) {
    use std::io::{Read, Write};
    let host = http_host(url);
    let path = url["http://".len() + host.len()..].trim_start_matches('/');
    let mut stream = TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}
