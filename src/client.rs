//! A typed client for the index protocol, used by the shell, the peer's session and the
//! tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::protocol::{
    self, Connection, FileEntry, Hit, IndexRequest, IndexResponse, Limits, PeerInfo,
};

/// A search: a name pattern and optional criteria.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// Substring, or `*`/`?` wildcards; may be empty with `sha256`.
    pub pattern: String,
    /// Lowercase hex prefix of the SHA-256.
    pub sha256: Option<String>,
    /// Smallest size, inclusive.
    pub min_size: Option<u64>,
    /// Largest size, inclusive.
    pub max_size: Option<u64>,
    /// Most results wanted.
    pub limit: Option<u32>,
}

/// A connection to an index server that has said hello.
pub struct IndexClient {
    conn: Connection,
}

impl IndexClient {
    /// Connect to the index at `addr` and exchange versions.
    pub async fn connect(addr: SocketAddr, limits: Limits) -> Result<Self> {
        let mut conn = Connection::connect(addr, limits).await.map_err(|e| {
            Error::msg(format!(
                "cannot reach the index at {addr}: {e}; is `serve` running there?"
            ))
        })?;
        conn.send(&IndexRequest::Hello {
            version: protocol::VERSION,
        })
        .await?;
        match conn.recv_reply().await? {
            IndexResponse::Welcome { version } if version == protocol::VERSION => {}
            IndexResponse::Welcome { version } => {
                return Err(Error::Version {
                    ours: protocol::VERSION,
                    theirs: version,
                });
            }
            IndexResponse::Error { code, message } => {
                return Err(Error::Remote {
                    code,
                    message: protocol::clean_text(&message),
                });
            }
            other => {
                return Err(Error::Malformed(format!(
                    "unexpected answer to hello: {other:?}"
                )));
            }
        }
        Ok(IndexClient { conn })
    }

    /// Connect to the first of `addrs` that answers (trying them in order).
    pub async fn connect_any(addrs: &[SocketAddr], limits: Limits) -> Result<Self> {
        let mut failures = Vec::new();
        for &addr in addrs {
            match IndexClient::connect(addr, limits).await {
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

    /// Our address as the index sees it (modulo NAT).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.conn.local_addr()
    }

    /// Resolves when the index sent something unasked for or closed the connection.
    pub async fn readable(&self) {
        self.conn.readable().await;
    }

    /// Send a request and wait for its answer; error replies become [`Error::Remote`].
    pub async fn request(&mut self, request: &IndexRequest) -> Result<IndexResponse> {
        self.conn.send(request).await?;
        match self.conn.recv_reply().await? {
            IndexResponse::Error { code, message } => Err(Error::Remote {
                code,
                message: protocol::clean_text(&message),
            }),
            response => Ok(response),
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
        self.find(&Search {
            pattern: pattern.into(),
            ..Search::default()
        })
        .await
    }

    /// Files matching every criterion of `search`.
    pub async fn find(&mut self, search: &Search) -> Result<(Vec<Hit>, bool)> {
        let request = IndexRequest::Search {
            pattern: search.pattern.clone(),
            sha256: search.sha256.clone(),
            min_size: search.min_size,
            max_size: search.max_size,
            limit: search.limit,
        };
        results(self.request(&request).await?)
    }

    /// Every file of one peer, at most `limit` (or the server's limit).
    pub async fn browse(&mut self, peer_id: u64, limit: Option<u32>) -> Result<(Vec<Hit>, bool)> {
        results(
            self.request(&IndexRequest::Browse { peer_id, limit })
                .await?,
        )
    }

    /// Files named exactly `name`.
    pub async fn lookup(&mut self, name: &str) -> Result<Vec<Hit>> {
        let request = IndexRequest::Lookup { name: name.into() };
        Ok(results(self.request(&request).await?)?.0)
    }

    /// Every registered peer.
    pub async fn peers(&mut self) -> Result<Vec<PeerInfo>> {
        match self.request(&IndexRequest::Peers {}).await? {
            IndexResponse::Peers { peers } => Ok(peers),
            other => Err(unexpected(other)),
        }
    }

    /// Make this connection the session of a peer serving `files` on `port`; returns
    /// the Peer ID. Files are sent in as many messages as the frame limit needs.
    pub async fn register(&mut self, port: u16, token: &str, files: &[FileEntry]) -> Result<u64> {
        let mut batches = batches(files, self.conn.limits().max_frame as usize);
        let first = batches.next().unwrap_or_default();
        let request = IndexRequest::Register {
            port,
            token: token.into(),
            files: first,
        };
        let peer_id = match self.request(&request).await? {
            IndexResponse::Registered { peer_id, .. } => peer_id,
            other => return Err(unexpected(other)),
        };
        for files in batches {
            self.add_files(files).await?;
        }
        Ok(peer_id)
    }

    /// Tell the index what changed in this session's share, in as many messages as the
    /// frame limit needs; returns how many files the peer now shares.
    pub async fn apply(&mut self, changes: &crate::peer::share::Changes) -> Result<u64> {
        let max_frame = self.conn.limits().max_frame as usize;
        let mut files = 0;
        for batch in batches(&changes.upsert, max_frame) {
            files = self.add_files(batch).await?;
        }
        // Names are at most MAX_NAME bytes: a frame carries a few hundred at least.
        let per_frame = (max_frame / (2 * protocol::MAX_NAME * 6)).max(1);
        for names in changes.removed.chunks(per_frame) {
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
    Error::Malformed(format!("unexpected answer from the index: {response:?}"))
}

fn results(response: IndexResponse) -> Result<(Vec<Hit>, bool)> {
    match response {
        IndexResponse::Results { hits, truncated } => Ok((hits, truncated)),
        other => Err(unexpected(other)),
    }
}

fn done(response: IndexResponse) -> Result<u64> {
    match response {
        IndexResponse::Done { files } => Ok(files),
        other => Err(unexpected(other)),
    }
}

/// Split `files` into batches whose messages stay well inside `max_frame` bytes.
fn batches(files: &[FileEntry], max_frame: usize) -> impl Iterator<Item = Vec<FileEntry>> + '_ {
    let budget = max_frame / 2;
    let mut rest = files;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut used = 0;
        let mut take = 0;
        for file in rest {
            // JSON escaping can at most sextuple a name; the rest of an entry is < 128 bytes.
            let cost = file.name.len() * 6 + 128;
            if take > 0 && used + cost > budget {
                break;
            }
            used += cost;
            take += 1;
        }
        let (batch, tail) = rest.split_at(take);
        rest = tail;
        Some(batch.to_vec())
    })
}
