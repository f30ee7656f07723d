//! The peer's file server: answers downloaders with the bytes of registered files,
//! streamed raw after a `Sending` frame, and with their chunk lists.
//!
//! The request/answer exchange is async; the bytes of a range are copied by a blocking
//! thread (`smol::unblock`) that owns the socket for the copy, because a copy from the
//! page cache to a socket at GiB/s would otherwise hold an executor thread for the whole
//! transfer. The connection is handed over and taken back in `send`; meanwhile its
//! socket blocks (with the timeout), so that the thread encrypts and writes with no
//! reactor or timer per write.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use smol::Async;
use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use tracing::{debug, warn};

use crate::config::Config;
use crate::digest::IO_BUFFER;
use crate::error::{Error, IoContext, Result};
use crate::gate::{self, Admission};
use crate::identity::Identity;
use crate::limit::{Pace, RateLimit};
use crate::net;
use crate::peer::pushes::PushPermit;
use crate::peer::share::Share;
use crate::peer::slots::Slots;
use crate::peer::upload_log::Upload;
use crate::peer::uploads::{Tracked, Uploads};
use crate::protocol::{
    self, Connection, ErrorCode, Fingerprint, Limits, PeerRequest, PeerResponse, Reply,
};
use crate::punch;
use crate::rendezvous::{self, Rendezvous};
use crate::runtime::Shutdown;

/// The folder being served; replaced or changed while serving.
pub type SharedFolder = Arc<RwLock<Share>>;

/// What a file server enforces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The key this file server proves (the peer's, the one it registered with).
    pub identity: Identity,
    /// Wire limits; the timeout also bounds every write of a transfer.
    pub limits: Limits,
    /// Connections and TLS handshakes at once, in all and per address.
    pub admits: gate::Bounds,
    /// Most transfers at once; further requests wait their turn (told `queued`).
    pub max_uploads: usize,
    /// Most requests (sending or waiting) from one IP address; more are told `busy`.
    pub max_uploads_per_address: usize,
    /// Upload bandwidth shared by every transfer.
    pub upload: Arc<RateLimit>,
    /// Who downloads what right now (`uploads`).
    pub uploads: Arc<Uploads>,
    /// Where reverse connections to this file server meet the downloads waiting for
    /// them (this process's downloads); `None` refuses them.
    pub rendezvous: Option<Arc<Rendezvous>>,
}

impl Settings {
    /// The settings `napster.toml` asks for, sharing `upload` with every transfer, with a
    /// fresh in-memory key (the shell puts the `[peer] key` in its place).
    pub fn from_config(config: &Config, upload: Arc<RateLimit>) -> Self {
        let p = &config.peer;
        Settings {
            identity: Identity::generate().unwrap_or_else(|_| Identity::ephemeral()),
            limits: config.limits(),
            admits: gate::Bounds {
                connections: p.max_connections,
                connections_per_address: p.max_connections_per_address,
                handshakes: p.max_handshakes,
                handshakes_per_address: p.max_handshakes_per_address,
            },
            max_uploads: config.peer.max_uploads,
            max_uploads_per_address: config.peer.max_uploads_per_address,
            upload,
            uploads: Arc::default(),
            rendezvous: None,
        }
    }
}

impl Default for Settings {
    /// The built-in defaults, with no upload limit.
    fn default() -> Self {
        Settings::from_config(&Config::default(), Arc::new(RateLimit::new(0)))
    }
}

/// How long a downloader may stay silent between requests.
const IDLE: Duration = Duration::from_secs(30);

/// What every connection of one file server shares.
struct Server {
    folder: SharedFolder,
    settings: Settings,
    slots: Arc<Slots>,
    /// What it admits, on its listener and on the connections it opens to serve.
    admission: Admission,
}

/// Serve `folder` on `listener` until `shutdown` fires.
pub async fn run(
    listener: Async<TcpListener>,
    folder: SharedFolder,
    settings: Settings,
    shutdown: Shutdown,
) -> Result<()> {
    Files::new(folder, settings, shutdown).run(listener).await
}

/// A file server: served on its listener, and over the reverse connections its peer's
/// session opens (`docs/NAT.md`), with the same slots and limits.
#[derive(Clone)]
pub struct Files {
    server: Arc<Server>,
    shutdown: Shutdown,
}

impl Files {
    /// A file server of `folder`, until `shutdown` fires.
    pub fn new(folder: SharedFolder, settings: Settings, shutdown: Shutdown) -> Self {
        let server = Arc::new(Server {
            admission: Admission::new(settings.limits, settings.admits, "file server"),
            slots: Slots::new(settings.max_uploads, settings.max_uploads_per_address),
            folder,
            settings,
        });
        Files { server, shutdown }
    }

    /// Serve on `listener` until shutdown.
    pub async fn run(self, listener: Async<TcpListener>) -> Result<()> {
        let settings = &self.server.settings;
        let admission = self.server.admission.clone();
        let identity = settings.identity.clone();
        let hooks = net::Hooks {
            on_refused: None,
            handoff: settings.rendezvous.as_ref().map(Rendezvous::handoff),
        };
        let server = self.server.clone();
        net::accept_loop::<PeerRequest, PeerResponse, _, _>(
            listener,
            identity,
            admission,
            self.shutdown.clone(),
            hooks,
            move |conn, shutdown| {
                let server = server.clone();
                async move {
                    smol::future::or(server.requests(conn), async {
                        shutdown.wait().await;
                        Ok(())
                    })
                    .await
                }
            },
        )
        .await;
        Ok(())
    }

    /// A reverse connection: connect to a downloader's file server at `to` (the address
    /// the index observed for it), open with `token`, then serve it as the TLS server,
    /// exactly as on the listener, until it leaves or shutdown.
    pub async fn serve_reverse(&self, to: SocketAddr, token: &str, turn: PushPermit) -> Result<()> {
        let conn = self.open(to, token, None).await?;
        self.serve_pushed(conn, turn).await
    }

    /// Serve a connection a push opened, as on the listener, until it leaves or shutdown;
    /// handshaken, it is an upload (bounded by the slots), so the push's `turn` ends.
    async fn serve_pushed(&self, conn: Connection, turn: PushPermit) -> Result<()> {
        drop(turn);
        smol::future::or(self.server.requests(conn), async {
            self.shutdown.wait().await;
            Ok(())
        })
        .await
    }

    /// A relayed connection: join the relay of the index at `index` with `token`, then
    /// serve the downloader as the TLS server, if it proves `downloader` (the key that
    /// asked the index for the relay); anybody else is refused.
    pub async fn serve_relayed(
        &self,
        index: SocketAddr,
        token: &str,
        downloader: Fingerprint,
        turn: PushPermit,
    ) -> Result<()> {
        let conn = self
            .open(index, token, Some(downloader))
            .await
            .map_err(|e| Error::msg(format!("a relayed downloader: {e}")))?;
        self.serve_pushed(conn, turn).await
    }

    /// A punched connection: connect from `local` (our session's port) to `to` (the
    /// downloader's connection to the index, as the index observed it) until its own
    /// attempt meets ours, open with `token`, then serve the downloader as the TLS
    /// server if it proves `downloader` (the key that asked); anybody else is refused.
    pub async fn serve_punched(
        &self,
        (local, to): (SocketAddr, SocketAddr),
        token: &str,
        downloader: Fingerprint,
        turn: PushPermit,
    ) -> Result<()> {
        let stream = punch::punch(local, to, punch::PUNCH_WAIT)
            .await
            .map_err(|e| Error::io(format!("punching a hole from {local} to {to}"), e))?;
        let conn = self.open_over(stream, to, token, Some(downloader)).await?;
        self.serve_pushed(conn, turn).await
    }

    /// Connect to `to`, send the preamble of `token`, and be the TLS server there (to
    /// the key `client` only, when given).
    async fn open(
        &self,
        to: SocketAddr,
        token: &str,
        client: Option<Fingerprint>,
    ) -> Result<Connection> {
        let stream = Connection::dial(to, self.server.settings.limits).await?;
        self.open_over(stream, to, token, client).await
    }

    /// Send the preamble of `token` on `stream` (to `to`), and be the TLS server there
    /// (to the key `client` only, when given).
    async fn open_over(
        &self,
        mut stream: Async<TcpStream>,
        to: SocketAddr,
        token: &str,
        client: Option<Fingerprint>,
    ) -> Result<Connection> {
        let (settings, admission) = (&self.server.settings, &self.server.admission);
        let preamble = rendezvous::preamble(token);
        net::io_within(settings.limits.timeout, stream.write_all(&preamble))
            .await
            .context(|| format!("opening a reverse connection to {to}"))?;
        let identity = &settings.identity;
        net::serve_stream::<PeerRequest, PeerResponse>(stream, identity, client, admission).await
    }
}

impl Server {
    /// Answer one downloader's requests until it leaves or breaks the protocol.
    async fn requests(&self, mut conn: Connection) -> Result<()> {
        let from = conn.peer_addr();
        let mut upload = Upload::new(from);
        let tracked = Arc::new(self.settings.uploads.track(from, conn.peer_fingerprint()));
        loop {
            let request = match conn.recv::<PeerRequest>(IDLE).await {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(e @ protocol::Error::Malformed(_)) => {
                    warn!("bad request from {from}: {e}");
                    conn.send(&PeerResponse::error(ErrorCode::BadRequest, e.to_string()))
                        .await?;
                    continue;
                }
                Err(e @ protocol::Error::FrameTooLarge { .. }) => {
                    warn!("closing {from}: {e}");
                    conn.send(&PeerResponse::error(ErrorCode::BadRequest, e.to_string()))
                        .await
                        .ok();
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            conn = match request {
                PeerRequest::Ping {} => reply(conn, PeerResponse::Pong {}).await?,
                PeerRequest::Hello { .. } => {
                    let again =
                        PeerResponse::error(ErrorCode::BadRequest, "hello was already said");
                    reply(conn, again).await?
                }
                PeerRequest::Chunks { name } => self.chunks(conn, &name).await?,
                PeerRequest::Get {
                    name,
                    offset,
                    length,
                } => {
                    let asked = (name.as_str(), offset, length);
                    let (conn, sent) = self.get(conn, from, asked, &tracked).await?;
                    if let Some(sent) = sent {
                        upload.sent(&name, sent);
                    }
                    conn
                }
            };
        }
    }

    /// Answer `chunks`: the chunk list follows its frame raw.
    async fn chunks(&self, mut conn: Connection, name: &str) -> Result<Connection> {
        let list = self.folder.read().chunk_list(name);
        match list {
            Some((size, digests)) => {
                let count = (digests.len() / 32) as u64;
                conn.send(&PeerResponse::ChunkList { size, count }).await?;
                conn.send_raw(&digests).await?;
                Ok(conn)
            }
            None => {
                let message = format!("{:?} is not shared here", protocol::truncate(name));
                reply(conn, PeerResponse::error(ErrorCode::NotFound, message)).await
            }
        }
    }

    /// Wait for an upload slot, telling the downloader its place in line (`queued`) when
    /// it changes and at least every half timeout, so that it knows we are alive.
    async fn wait_turn(
        &self,
        mut conn: Connection,
        slot: &mut crate::peer::slots::Ticket,
        tracked: &Tracked,
    ) -> Result<Connection> {
        let every = conn.limits().timeout / 2;
        let mut told = None;
        loop {
            let changed = self.slots.listen();
            let position = match slot.try_take() {
                Ok(()) => {
                    tracked.waiting(0);
                    return Ok(conn);
                }
                Err(position) => position,
            };
            tracked.waiting(position);
            if told != Some(position) {
                conn.send(&PeerResponse::Queued { position }).await?;
                told = Some(position);
            }
            let timed_out = async {
                changed.await;
                false
            }
            .or(async {
                smol::Timer::after(every).await;
                true
            })
            .await;
            if timed_out {
                told = None;
            }
        }
    }

    /// Answer `get`: a `sending` frame, then the bytes, once an upload slot is free.
    async fn get(
        &self,
        conn: Connection,
        from: SocketAddr,
        (name, offset, length): (&str, u64, Option<u64>),
        tracked: &Arc<Tracked>,
    ) -> Result<(Connection, Option<u64>)> {
        let unsent = |conn| (conn, None);
        // Opening touches the disk (and another user's files): off the executor.
        let (folder, wanted) = (self.folder.clone(), name.to_owned());
        let opened = smol::unblock(move || folder.read().open(&wanted)).await;
        let (file, size) = match opened {
            Ok(pair) => pair,
            Err(message) => {
                warn!("refused {from}: {message}");
                let error = PeerResponse::error(ErrorCode::NotFound, message);
                return reply(conn, error).await.map(unsent);
            }
        };
        if offset > size {
            let message = format!("offset {offset} is past the end of {name} ({size} bytes)");
            let error = PeerResponse::error(ErrorCode::Range, message);
            return reply(conn, error).await.map(unsent);
        }
        let length = length.map_or(size - offset, |l| l.min(size - offset));
        tracked.asking(name, size);
        let Some(mut slot) = self.slots.join(from.ip()) else {
            let message = format!(
                "{} requests from {} are already sending or waiting here (the most one \
                 address may have); finish one first",
                self.slots.per_address(),
                from.ip()
            );
            warn!("refused {from}: {message}");
            let error = PeerResponse::error(ErrorCode::Busy, message);
            return reply(conn, error).await.map(unsent);
        };
        let conn = self.wait_turn(conn, &mut slot, tracked).await?;
        let started = Instant::now();
        let upload = self.settings.upload.clone();
        let conn = send(
            conn,
            (file, size),
            (offset, length),
            (upload, tracked.clone()),
        )
        .await?;
        debug!(
            "sent {name} ({length} bytes from offset {offset}) to {from} in {:.3}s",
            started.elapsed().as_secs_f64()
        );
        Ok((conn, Some(length)))
    }
}

/// Send one answer and hand the connection back for the next request.
async fn reply(mut conn: Connection, response: PeerResponse) -> Result<Connection> {
    conn.send(&response).await?;
    Ok(conn)
}

/// Announce a range and copy it on a blocking thread; whatever the downloader sent
/// meanwhile stays buffered for its next request.
async fn send(
    mut conn: Connection,
    (file, size): (File, u64),
    (offset, length): (u64, u64),
    (limit, tracked): (Arc<RateLimit>, Arc<Tracked>),
) -> Result<Connection> {
    conn.send(&PeerResponse::Sending {
        size,
        offset,
        length,
    })
    .await?;
    let limits = conn.limits();
    // The thread belongs to no executor: it drives the connection's writes itself, on a
    // blocking socket.
    smol::unblock(move || {
        let pace = Pace::new(limits.min_rate, limits.timeout);
        conn.set_blocking(true)?;
        send_range(file, &mut conn, (offset, length), (&limit, &tracked), pace)?;
        conn.set_blocking(false)?;
        Ok(conn)
    })
    .await
}

/// Copy `length` bytes of `file` from `offset` to `conn`. Every write is bounded by
/// the timeout, and the downloader must read at its `pace`: one that stops reading, or
/// reads a trickle, loses its slot.
fn send_range(
    mut file: File,
    conn: &mut Connection,
    (offset, length): (u64, u64),
    (limit, tracked): (&RateLimit, &Tracked),
    mut pace: Pace,
) -> Result<()> {
    file.seek(SeekFrom::Start(offset))
        .context(|| "seeking in the file".into())?;
    let mut buf = vec![0; IO_BUFFER];
    let mut left = length;
    while left > 0 {
        let want = (left.min(limit.block(IO_BUFFER) as u64)) as usize;
        let n = file
            .read(&mut buf[..want])
            .context(|| "reading the file".into())?;
        if n == 0 {
            return Err(Error::msg("the file shrank while it was being sent"));
        }
        let mut sent = 0;
        while sent < n {
            let asked = Instant::now();
            let wrote = match conn.write_blocking(&buf[sent..n]) {
                Ok(0) => return Err(Error::msg("the downloader stopped taking data")),
                Ok(wrote) => wrote,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Error::msg(
                        "the downloader stopped reading for the whole timeout; its slot is freed",
                    ));
                }
                Err(e) => return Err(Error::io("sending the file", e)),
            };
            sent += wrote;
            tracked.sent(wrote as u64);
            pace.record(asked.elapsed(), wrote)
                .map_err(|slow| Error::msg(format!("the downloader reads too slowly: {slow}")))?;
        }
        left -= n as u64;
        if !limit.throttle_while(n, || !conn.is_gone_blocking()) {
            return Err(Error::msg("the downloader left; its slot is freed"));
        }
    }
    conn.flush_blocking()
        .map_err(|e| Error::io("sending the file", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file past 4 GiB: the bytes at a 64-bit offset arrive intact.
    #[test]
    fn ranges_beyond_four_gib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.bin");
        let file = File::create(&path).unwrap();
        let offset = (5u64 << 30) + 12345;
        file.set_len(offset + 4096).unwrap();
        let marker: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        std::os::unix::fs::FileExt::write_all_at(&file, &marker, offset).unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let mut sender = Connection::new(
            protocol::Socket::new(Async::new(sender).unwrap()),
            protocol::Fingerprint([0; 32]),
            Limits::default(),
        )
        .unwrap();
        let file = File::open(&path).unwrap();
        let limit = RateLimit::new(0);
        let pace = Pace::new(0, Duration::from_secs(1));
        let uploads = Arc::new(Uploads::default());
        let tracked = uploads.track(
            receiver.local_addr().unwrap(),
            protocol::Fingerprint([0; 32]),
        );
        tracked.asking("huge.bin", offset + 4096);
        sender.set_blocking(true).unwrap();
        send_range(file, &mut sender, (offset, 4096), (&limit, &tracked), pace).unwrap();
        assert_eq!(uploads.sent(), 4096);
        assert_eq!(uploads.rows()[0].sent, 4096);
        let mut got = vec![0; 4096];
        receiver.read_exact(&mut got).unwrap();
        assert_eq!(got, marker);
    }
}
