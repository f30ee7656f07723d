//! [`IndexClient`]: the typed client of the index protocol, used by the shell, the peer's
//! session and the tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::net;
use crate::protocol::{
    self, FileEntry, Fingerprint, Hit, IndexRequest, IndexResponse, Limits, PeerInfo, SearchQuery,
};
use crate::punch;

/// The key expected of each index address (kept by `KnownIndexes`).
pub type Pins = std::collections::HashMap<SocketAddr, Fingerprint>;

/// What changed in a share since the index was last told: sent as `add_files` and
/// `remove_files`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New files and files whose contents changed.
    pub upsert: Vec<FileEntry>,
    /// Names no longer shared.
    pub removed: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.removed.is_empty()
    }
}

/// How the index sees this peer's file server, as it said at `register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The address the index observed (source IP, registered port).
    pub addr: SocketAddr,
    /// Whether the index could connect to it.
    pub reachable: bool,
}

/// What the index asked this peer's session to do, unasked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// Connect from the session's local port to a downloader's connection at `addr`
    /// (observed by the index) until the two meet, open with `token`, and serve the key
    /// `downloader` only: hole punching.
    Punch {
        /// The downloader's connection to the index.
        addr: SocketAddr,
        /// Its one-time token.
        token: String,
        /// The key the downloader must prove.
        downloader: Fingerprint,
    },
    /// Connect out to a downloader's file server at `addr` (observed by the index) and
    /// open with `token`: a reverse connection.
    Connect {
        /// The downloader's file server.
        addr: SocketAddr,
        /// Its one-time token.
        token: String,
    },
    /// Join the index's relay with `token`, and serve the downloader with key
    /// `downloader` only.
    Relay {
        /// Our one-time token.
        token: String,
        /// The key the downloader must prove.
        downloader: Fingerprint,
    },
}

/// A connection to an index server that has said hello.
pub struct IndexClient {
    conn: protocol::Connection,
    /// What `register` last heard.
    reach: Option<Reach>,
    /// Pushes received while waiting for an answer, in order.
    pushes: std::collections::VecDeque<Push>,
}

impl IndexClient {
    /// Connect to the index at `addr` with a new in-memory identity (so, as a new peer
    /// if it registers), accepting any key the index proves, and exchange versions.
    pub async fn connect(addr: SocketAddr, limits: Limits) -> Result<Self> {
        IndexClient::connect_as(addr, &Identity::generate()?, None, limits).await
    }

    /// Connect to the index at `addr` as `identity`; when `expected` is given the index
    /// must prove that key.
    pub async fn connect_as(
        addr: SocketAddr,
        identity: &Identity,
        expected: Option<Fingerprint>,
        limits: Limits,
    ) -> Result<Self> {
        // Reusable, so that hole punching can connect out from the same port.
        let dialed = async {
            let stream = punch::dial(None, addr, limits.timeout)
                .await
                .map_err(|e| protocol::Error::io(format!("connecting to {addr}"), e))?;
            net::connect_over(stream, identity, expected, limits).await
        };
        let mut conn = dialed.await.map_err(|e| match e {
            Error::WrongKey { seen, expected, .. } => Error::msg(format!(
                "refused: the index at {addr} proved key {seen}, but {expected} is pinned \
                     for it: it is not the index this napster knew there (someone may be \
                     impersonating it, or its key was replaced). If you trust the new key, \
                     run `connect {addr}#{seen}`"
            )),
            Error::Protocol(e @ protocol::Error::Io { .. }) => Error::msg(format!(
                "cannot reach the index at {addr}: {e}; is `serve` running there?"
            )),
            e => Error::msg(format!("cannot use the index at {addr}: {e}")),
        })?;
        net::greet::<IndexRequest, IndexResponse>(&mut conn).await?;
        Ok(IndexClient {
            conn,
            reach: None,
            pushes: Default::default(),
        })
    }

    /// Connect to the first of `addrs` that answers, as `identity`, each one required
    /// to prove the key `pins` holds for it (any key when none).
    pub async fn connect_any_as(
        addrs: &[SocketAddr],
        identity: &Identity,
        pins: &Pins,
        limits: Limits,
    ) -> Result<Self> {
        let mut failures = Vec::new();
        for &addr in addrs {
            let pin = pins.get(&addr).copied();
            match IndexClient::connect_as(addr, identity, pin, limits).await {
                Ok(client) => return Ok(client),
                Err(e) => failures.push(e.to_string()),
            }
        }
        match failures.len() {
            0 => Err(Error::msg("no index server address is configured")),
            1 => Err(Error::msg(failures.remove(0))),
            _ => Err(Error::msg(format!(
                "no index server answers: {}",
                failures.join("; ")
            ))),
        }
    }

    /// Address of the index.
    pub fn addr(&self) -> SocketAddr {
        self.conn.peer_addr()
    }

    /// The key the index proved.
    pub fn fingerprint(&self) -> Fingerprint {
        self.conn.peer_fingerprint()
    }

    /// Our address as the index sees it (modulo NAT).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.conn.local_addr()?)
    }

    /// Resolves when the index sent something unasked for or closed the connection.
    pub async fn readable(&self) {
        self.conn.readable().await;
    }

    /// Send a request and wait for its answer; error replies become [`Error::Refused`].
    /// Pushes that arrive first are kept for [`IndexClient::take_push`].
    pub async fn request(&mut self, request: &IndexRequest) -> Result<IndexResponse> {
        self.conn.send(request).await?;
        loop {
            match self.conn.recv_reply().await? {
                IndexResponse::Error { code, message } => {
                    return Err(Error::refused(code, &message));
                }
                IndexResponse::ConnectTo { addr, token } => {
                    if protocol::token_problem(&token).is_none() && addr.port() != 0 {
                        self.pushes.push_back(Push::Connect { addr, token });
                    }
                }
                IndexResponse::RelayTo { token, downloader } => {
                    if protocol::token_problem(&token).is_none() {
                        self.pushes.push_back(Push::Relay { token, downloader });
                    }
                }
                IndexResponse::PunchTo {
                    addr,
                    token,
                    downloader,
                } => {
                    if protocol::token_problem(&token).is_none() && addr.port() != 0 {
                        self.pushes.push_back(Push::Punch {
                            addr,
                            token,
                            downloader,
                        });
                    }
                }
                response => return Ok(response),
            }
        }
    }

    /// The oldest push not handled yet.
    pub fn take_push(&mut self) -> Option<Push> {
        self.pushes.pop_front()
    }

    /// Ask the index to relay between us and `peer_id`; we then join with `token`.
    pub async fn relay_request(&mut self, peer_id: u64, token: &str) -> Result<()> {
        let request = IndexRequest::Relay {
            peer_id,
            token: token.into(),
        };
        match self.request(&request).await? {
            IndexResponse::Relaying {} => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ask the index to coordinate hole punching between us and `peer_id`; the sharer
    /// opens with `token`. Returns where to connect to: the sharer's session as the
    /// index observed it.
    pub async fn punch_request(&mut self, peer_id: u64, token: &str) -> Result<SocketAddr> {
        let request = IndexRequest::Punch {
            peer_id,
            token: token.into(),
        };
        match self.request(&request).await? {
            IndexResponse::Punching { addr } if addr.port() != 0 => Ok(addr),
            other => Err(unexpected(other)),
        }
    }

    /// How the index saw our file server at the last `register`.
    pub fn reach(&self) -> Option<Reach> {
        self.reach
    }

    /// Ask the index to have `peer_id` connect out to our file server, opening with
    /// `token` (a reverse connection).
    pub async fn connect_request(&mut self, peer_id: u64, token: &str) -> Result<()> {
        let request = IndexRequest::Connect {
            peer_id,
            token: token.into(),
        };
        match self.request(&request).await? {
            IndexResponse::Connecting {} => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Round-trip time of a ping.
    pub async fn ping(&mut self) -> Result<Duration> {
        let started = Instant::now();
        match self.request(&IndexRequest::Ping {}).await? {
            IndexResponse::Pong {} => Ok(started.elapsed()),
            other => Err(unexpected(other)),
        }
    }

    /// Files whose names match `pattern`, and whether the list was cut at the limit.
    pub async fn search(&mut self, pattern: &str) -> Result<(Vec<Hit>, bool)> {
        self.find(&SearchQuery::pattern(pattern)).await
    }

    /// Files matching every criterion of `query`.
    pub async fn find(&mut self, query: &SearchQuery) -> Result<(Vec<Hit>, bool)> {
        let found = self.find_page(query).await?;
        Ok((found.hits, found.truncated))
    }

    /// The page of files matching `query` from its offset, with the total when the
    /// index counted it.
    pub async fn find_page(&mut self, query: &SearchQuery) -> Result<Found> {
        results(self.request(&IndexRequest::Search(query.clone())).await?)
    }

    /// Every file of one peer, at most `limit` (or the server's limit).
    pub async fn browse(&mut self, peer_id: u64, limit: Option<u32>) -> Result<(Vec<Hit>, bool)> {
        let found = self.browse_page(peer_id, limit, None).await?;
        Ok((found.hits, found.truncated))
    }

    /// A page of one peer's files (by name) from `offset`, with the peer's file count.
    pub async fn browse_page(
        &mut self,
        peer_id: u64,
        limit: Option<u32>,
        offset: Option<u64>,
    ) -> Result<Found> {
        let request = IndexRequest::Browse {
            peer_id,
            limit,
            offset,
        };
        results(self.request(&request).await?)
    }

    /// Files named exactly `name`.
    pub async fn lookup(&mut self, name: &str) -> Result<Vec<Hit>> {
        let request = IndexRequest::Lookup { name: name.into() };
        Ok(results(self.request(&request).await?)?.hits)
    }

    /// Every registered peer.
    pub async fn peers(&mut self) -> Result<Vec<PeerInfo>> {
        match self.request(&IndexRequest::Peers {}).await? {
            IndexResponse::Peers { peers } => {
                for peer in &peers {
                    protocol::check_peer_info(peer).map_err(bad_reply)?;
                }
                Ok(peers)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The one registered peer `wanted` names (Peer ID, nickname or fingerprint prefix),
    /// or why there is none: nobody by that name, or several.
    pub async fn find_peer(&mut self, wanted: &protocol::PeerRef) -> Result<PeerInfo> {
        let peers = self.peers().await?;
        let named = protocol::peer_ref::best(wanted, peers, |p| {
            (p.peer_id, p.fingerprint, p.nickname.clone())
        });
        match <[PeerInfo; 1]>::try_from(named) {
            Ok([peer]) => Ok(peer),
            Err(named) if named.is_empty() => Err(Error::NotFound(match wanted {
                protocol::PeerRef::Id(id) => format!("peer {id} is not registered (see `peers`)"),
                protocol::PeerRef::Word(word) if word.len() < protocol::peer_ref::MIN_PREFIX => {
                    format!(
                        "no registered peer has the nickname {word}, and a fingerprint prefix \
                     needs at least {} characters (see `peers`)",
                        protocol::peer_ref::MIN_PREFIX
                    )
                }
                word => format!(
                    "no registered peer has the nickname or fingerprint {word} (see `peers`)"
                ),
            })),
            Err(named) => Err(Error::Usage(format!(
                "{wanted} names {} peers (Peer IDs {}); give more of the fingerprint, or \
                 the Peer ID",
                named.len(),
                named
                    .iter()
                    .map(|p| p.peer_id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Make this connection the session of a peer serving `files` on `port`; returns
    /// the Peer ID. Files are sent in as many messages as the frame limit needs.
    pub async fn register(&mut self, port: u16, token: &str, files: &[FileEntry]) -> Result<u64> {
        Ok(self.register_as(port, token, files, None, None).await?.0)
    }

    /// [`IndexClient::register`], asking for the nickname `name`, and telling the index
    /// the public port `mapped_port` that this peer's router forwards to `port` (a port
    /// mapping), when there is one. Returns the Peer ID and the nickname the index bound
    /// to this key (`None` when another key holds it).
    pub async fn register_as(
        &mut self,
        port: u16,
        token: &str,
        files: &[FileEntry],
        name: Option<&str>,
        mapped_port: Option<u16>,
    ) -> Result<(u64, Option<String>)> {
        let max_frame = self.conn.limits().max_frame;
        let mut batches = protocol::batches(files, max_frame, protocol::entry_json_bound);
        let first = batches.next().unwrap_or_default().to_vec();
        // Our file server listens where we reach the index from (unless `[peer] host`
        // says otherwise): peers behind the same NAT are offered that address.
        let local = self
            .local_addr()
            .ok()
            .map(|a| SocketAddr::new(a.ip(), port));
        let request = IndexRequest::Register {
            port,
            token: token.into(),
            files: first,
            name: name.map(str::to_owned),
            mapped_port,
            local,
        };
        let (peer_id, nickname) = match self.request(&request).await? {
            IndexResponse::Registered {
                peer_id,
                nickname,
                addr,
                reachable,
                ..
            } => {
                self.reach = Some(Reach { addr, reachable });
                (peer_id, nickname)
            }
            other => return Err(unexpected(other)),
        };
        if let Some(problem) = nickname.as_deref().and_then(protocol::nickname_problem) {
            return Err(bad_reply(format!("nickname {problem}")));
        }
        for files in batches {
            self.add_files(files.to_vec()).await?;
        }
        Ok((peer_id, nickname))
    }

    /// Tell the index what changed in this session's share, in as many messages as the
    /// frame limit needs; returns how many files the peer now shares.
    pub async fn apply(&mut self, changes: &Changes) -> Result<u64> {
        let max_frame = self.conn.limits().max_frame;
        let mut files = 0;
        for batch in protocol::batches(&changes.upsert, max_frame, protocol::entry_json_bound) {
            files = self.add_files(batch.to_vec()).await?;
        }
        for names in protocol::batches(&changes.removed, max_frame, |n| {
            protocol::name_json_bound(n)
        }) {
            files = self.remove_files(names.to_vec()).await?;
        }
        Ok(files)
    }

    /// Add files to this session's peer; returns how many it now shares.
    pub async fn add_files(&mut self, files: Vec<FileEntry>) -> Result<u64> {
        done(self.request(&IndexRequest::AddFiles { files }).await?)
    }

    /// Withdraw files of this session's peer; returns how many it now shares.
    pub async fn remove_files(&mut self, names: Vec<String>) -> Result<u64> {
        done(self.request(&IndexRequest::RemoveFiles { names }).await?)
    }

    /// Withdraw every file of this session's peer.
    pub async fn unregister(&mut self) -> Result<()> {
        done(self.request(&IndexRequest::Unregister {}).await?).map(drop)
    }
}

fn unexpected(response: IndexResponse) -> Error {
    Error::malformed(format!("unexpected answer from the index: {response:?}"))
}

/// A reply with a field nothing may use: the index is broken or hostile.
fn bad_reply(problem: String) -> Error {
    Error::malformed(format!(
        "the index sent an invalid reply: {problem}; nothing of it was used"
    ))
}

/// One answer to a search or a browse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The hits of this page.
    pub hits: Vec<Hit>,
    /// Whether more match after this page.
    pub truncated: bool,
    /// How many match in all, when the index counted them (an older index does not).
    pub total: Option<protocol::Total>,
}

/// Search results, every field of every hit checked before anything uses it.
fn results(response: IndexResponse) -> Result<Found> {
    match response {
        IndexResponse::Results {
            hits,
            truncated,
            total,
        } => {
            for hit in &hits {
                protocol::check_hit(hit).map_err(bad_reply)?;
            }
            Ok(Found {
                hits,
                truncated,
                total,
            })
        }
        other => Err(unexpected(other)),
    }
}

fn done(response: IndexResponse) -> Result<u64> {
    match response {
        IndexResponse::Done { files } => Ok(files),
        other => Err(unexpected(other)),
    }
}
