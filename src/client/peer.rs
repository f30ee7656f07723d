//! [`PeerClient`]: the downloader's side of the peer protocol — the handshake, a file's
//! chunk list (checked against the index's), a range of its bytes, and ping.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use smol::Async;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::net;
use crate::protocol::{
    self, Connection, FileEntry, Fingerprint, Limits, PeerRequest, PeerResponse,
};

/// A connection to a peer's file server that has said hello.
pub struct PeerClient {
    conn: Connection,
}

impl PeerClient {
    /// Connect to the file server at `addr`, accepting any key it proves, and exchange
    /// versions.
    pub async fn connect(addr: SocketAddr, limits: Limits) -> Result<Self> {
        PeerClient::connect_to(addr, None, limits).await
    }

    /// Connect to the file server at `addr`, which must prove `expected` when given (the
    /// sharer's key a search hit named), and exchange versions.
    pub async fn connect_to(
        addr: SocketAddr,
        expected: Option<Fingerprint>,
        limits: Limits,
    ) -> Result<Self> {
        PeerClient::connect_as(addr, expected, &Identity::ephemeral(), limits).await
    }

    /// [`PeerClient::connect_to`], proving `identity` (a peer's own key: the file
    /// server's `uploads` then shows the downloader's Peer ID).
    pub async fn connect_as(
        addr: SocketAddr,
        expected: Option<Fingerprint>,
        identity: &Identity,
        limits: Limits,
    ) -> Result<Self> {
        let stream = Connection::dial(addr, limits).await.map_err(|e| match e {
            e @ protocol::Error::Io { .. } => Error::msg(format!("unreachable: {e}")),
            other => Error::from(other),
        })?;
        PeerClient::handshake(stream, expected, identity, limits).await
    }

    /// Be the downloader on a TCP stream to the file server obtained another way (a
    /// reverse connection, whichever side opened it): the same TLS client handshake,
    /// which must prove `expected`, and versions exchanged.
    pub async fn over(
        stream: Async<TcpStream>,
        expected: Fingerprint,
        limits: Limits,
    ) -> Result<Self> {
        PeerClient::handshake(stream, Some(expected), &Identity::ephemeral(), limits).await
    }

    /// [`PeerClient::over`], proving `identity` (a relayed sharer serves only the key
    /// that asked for the relay).
    pub async fn over_as(
        stream: Async<TcpStream>,
        expected: Fingerprint,
        identity: &Identity,
        limits: Limits,
    ) -> Result<Self> {
        PeerClient::handshake(stream, Some(expected), identity, limits).await
    }

    async fn handshake(
        stream: Async<TcpStream>,
        expected: Option<Fingerprint>,
        identity: &Identity,
        limits: Limits,
    ) -> Result<Self> {
        let addr = stream
            .get_ref()
            .peer_addr()
            .map_err(|e| Error::io("reading the peer's address", e))?;
        let mut conn = net::connect_over(stream, identity, expected, limits)
            .await
            .map_err(|e| match e {
                Error::WrongKey { seen, expected, .. } => Error::msg(format!(
                    "refused: the file server at {addr} proved key {seen}, not the sharer's \
                     {expected}: someone else answers at that address (the sharer left, or \
                     an attacker is in the way); nothing was downloaded from it"
                )),
                Error::Protocol(e @ protocol::Error::Io { .. }) => {
                    Error::msg(format!("unreachable: {e}"))
                }
                other => other,
            })?;
        net::greet::<PeerRequest, PeerResponse>(&mut conn)
            .await
            .map_err(|e| match e {
                Error::Refused { message, .. } => Error::msg(format!("refused us: {message}")),
                other => other,
            })?;
        Ok(PeerClient { conn })
    }

    /// Address of the file server.
    pub fn addr(&self) -> SocketAddr {
        self.conn.peer_addr()
    }

    /// The key the file server proved.
    pub fn fingerprint(&self) -> Fingerprint {
        self.conn.peer_fingerprint()
    }

    /// Round-trip time of a ping.
    pub async fn ping(&mut self) -> Result<Duration> {
        let started = Instant::now();
        self.conn.send(&PeerRequest::Ping {}).await?;
        match self.conn.recv_reply().await? {
            PeerResponse::Pong {} => Ok(started.elapsed()),
            other => Err(Error::malformed(format!(
                "{} answered a ping with {other:?}",
                self.addr()
            ))),
        }
    }

    /// The peer's chunk list for `file`, checked against the chunk-list root the index
    /// recorded.
    pub async fn chunk_list(&mut self, file: &FileEntry) -> Result<Vec<[u8; 32]>> {
        self.conn
            .send(&PeerRequest::Chunks {
                name: file.name.clone(),
            })
            .await?;
        let expected = protocol::chunk_count(file.size);
        let count = match self.conn.recv_reply().await? {
            PeerResponse::ChunkList { size, count } if size == file.size && count == expected => {
                count
            }
            PeerResponse::ChunkList { size, .. } if size != file.size => {
                return Err(Error::msg(format!(
                    "its copy of {} is {size} bytes but the index says {}: it changed after it was registered",
                    file.name, file.size
                )));
            }
            PeerResponse::ChunkList { count, .. } => {
                return Err(Error::msg(format!(
                    "it announced a chunk list of {count} entries for {}, which has {expected}",
                    file.name
                )));
            }
            PeerResponse::Error { message, .. } => {
                return Err(Error::msg(format!(
                    "refused: {}",
                    protocol::clean_text(&message)
                )));
            }
            other => return Err(Error::malformed(format!("answered out of turn: {other:?}"))),
        };
        let raw = self.conn.recv_raw(count as usize * 32).await?;
        let digests: Vec<[u8; 32]> = raw
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunks"))
            .collect();
        if protocol::chunks_root(&digests) != file.chunks {
            return Err(Error::msg("its chunk list does not match the index's"));
        }
        Ok(digests)
    }

    /// Ask for `length` bytes of `file` at `offset`, and check that the peer announces
    /// exactly those; the bytes themselves are read from [`PeerClient::into_range`].
    /// While the peer says the request is queued, wait (each update within the
    /// timeout) as long as `wanted`, told the position in line, says the range is still
    /// worth waiting for.
    pub async fn request_range(
        &mut self,
        file: &FileEntry,
        offset: u64,
        length: u64,
        wanted: impl Fn(u64) -> bool,
    ) -> Result<()> {
        let request = PeerRequest::Get {
            name: file.name.clone(),
            offset,
            length: Some(length),
        };
        self.conn.send(&request).await?;
        let size = file.size;
        let mut reply = self.conn.recv_reply::<PeerResponse>().await?;
        while let PeerResponse::Queued { position } = reply {
            if !wanted(position) {
                return Err(Error::msg(format!(
                    "stopped waiting in its upload queue (at position {position})"
                )));
            }
            reply = self.conn.recv_reply::<PeerResponse>().await?;
        }
        match reply {
            PeerResponse::Sending {
                size: now,
                offset: o,
                length: l,
            } if now == size && o == offset && l == length => Ok(()),
            PeerResponse::Sending { size: now, .. } if now != size => Err(Error::msg(format!(
                "its copy is now {now} bytes but the index says {size}: it changed after it \
                 was registered; try another peer"
            ))),
            PeerResponse::Sending {
                offset: o,
                length: l,
                ..
            } => Err(Error::msg(format!(
                "it offered {l} bytes at offset {o} when asked for {length} at {offset}"
            ))),
            PeerResponse::Error { message, .. } => Err(Error::msg(protocol::clean_text(&message))),
            other => Err(Error::malformed(format!("answered out of turn: {other:?}"))),
        }
    }

    /// Hand the connection to the calling thread to read an announced range (the bytes
    /// already received come first): its socket blocks, every read waiting at most the
    /// timeout. [`RangeReader::into_client`] gives it back.
    pub fn into_range(mut self) -> Result<RangeReader> {
        self.conn.set_blocking(true)?;
        Ok(RangeReader { client: self })
    }
}

/// A range of a file arriving on a connection read by a blocking thread, every read
/// under the timeout (a read that times out is `TimedOut`). The thread decrypts on its
/// own: no executor, reactor or timer takes part.
pub struct RangeReader {
    client: PeerClient,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.client.conn.read_blocking(buf)
    }
}

impl RangeReader {
    /// The connection back, for the next request, once the whole range was read.
    pub fn into_client(mut self) -> Result<PeerClient> {
        self.client.conn.set_blocking(false)?;
        Ok(self.client)
    }
}
