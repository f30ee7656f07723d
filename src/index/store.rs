//! What the index knows, behind one narrow interface ([`Store`]) so that the in-memory
//! store here and a database-backed one are interchangeable.
//!
//! A peer's files belong to the session (connection) that registered them: only that
//! session may change or withdraw them, and a newer session of the same peer (same token)
//! takes them over, so a stale connection closing late withdraws nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wildmatch::WildMatch;

use crate::error::{Error, Result};
use crate::protocol::{ErrorCode, FileEntry, Hit, PeerInfo};

/// A search pattern, parsed once.
#[derive(Debug, Clone)]
pub enum Query {
    /// Case-insensitive substring of the name.
    Substring(String),
    /// Case-insensitive `*`/`?` wildcard match of the whole name.
    Wildcard(String),
    /// Exactly this name.
    Exact(String),
}

impl Query {
    /// Parse a user's pattern: wildcards when it has `*` or `?`, else a substring.
    pub fn pattern(pattern: &str) -> Query {
        if pattern.contains(['*', '?']) {
            Query::Wildcard(pattern.to_lowercase())
        } else {
            Query::Substring(pattern.to_lowercase())
        }
    }

    fn matcher(&self) -> impl Fn(&str, &str) -> bool + '_ {
        let wild = match self {
            Query::Wildcard(p) => Some(WildMatch::new(p)),
            _ => None,
        };
        move |name: &str, lower: &str| match self {
            Query::Substring(s) => lower.contains(s.as_str()),
            Query::Wildcard(_) => wild.as_ref().is_some_and(|w| w.matches(lower)),
            Query::Exact(s) => name == s,
        }
    }
}

/// A peer session registering its files.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The peer's secret, stable across its reconnections.
    pub token: String,
    /// The connection registering, unique for the life of the server.
    pub session: u64,
    /// Where downloaders reach the peer's file server.
    pub addr: SocketAddr,
    /// The files.
    pub files: Vec<FileEntry>,
}

/// The index's storage. Every method is one atomic step.
pub trait Store: Send + Sync + 'static {
    /// Register a peer (or re-register it), replacing its files; returns its Peer ID.
    fn register(&self, registration: Registration) -> impl Future<Output = Result<u64>> + Send;
    /// Add or replace files of a peer; returns how many it now shares.
    fn add_files(
        &self,
        peer: u64,
        session: u64,
        files: Vec<FileEntry>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Withdraw files of a peer by name; returns how many it now shares.
    fn remove_files(
        &self,
        peer: u64,
        session: u64,
        names: Vec<String>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Withdraw a peer, if `session` still owns it.
    fn unregister(&self, peer: u64, session: u64) -> impl Future<Output = Result<()>> + Send;
    /// Note that a peer's session is alive.
    fn touch(&self, peer: u64, session: u64) -> impl Future<Output = Result<()>> + Send;
    /// Files matching `query`, at most `limit`; the flag says whether more matched.
    fn search(
        &self,
        query: &Query,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Hit>, bool)>> + Send;
    /// Every peer.
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerInfo>>> + Send;
    /// Withdraw peers not touched within `ttl`; returns how many.
    fn expire(&self, ttl: Duration) -> impl Future<Output = Result<usize>> + Send;
}

/// How many departed peers' tokens are remembered so that they get their ID back.
const REMEMBERED_TOKENS: usize = 100_000;

#[derive(Debug)]
struct PeerEntry {
    token: String,
    session: u64,
    addr: SocketAddr,
    shared_at: i64,
    last_seen: Instant,
    /// By name: the entry and its lowercase form for matching.
    files: BTreeMap<String, (FileEntry, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    peers: BTreeMap<u64, PeerEntry>,
    tokens: HashMap<String, u64>,
    departed: VecDeque<String>,
}

/// The index in memory: the default store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

fn not_owner() -> Error {
    Error::Remote {
        code: ErrorCode::NotRegistered,
        message: "this session no longer owns the peer's files (it registered again elsewhere)"
            .into(),
    }
}

impl Inner {
    fn owned(&mut self, peer: u64, session: u64) -> Result<&mut PeerEntry> {
        match self.peers.get_mut(&peer) {
            Some(entry) if entry.session == session => Ok(entry),
            _ => Err(not_owner()),
        }
    }

    fn remove_peer(&mut self, peer: u64) {
        let Some(entry) = self.peers.remove(&peer) else {
            return;
        };
        self.departed.push_back(entry.token);
        while self.departed.len() > REMEMBERED_TOKENS {
            let Some(old) = self.departed.pop_front() else {
                break;
            };
            if let Some(id) = self.tokens.get(&old)
                && !self.peers.contains_key(id)
            {
                self.tokens.remove(&old);
            }
        }
    }
}

fn insert_files(entry: &mut PeerEntry, files: Vec<FileEntry>) {
    for file in files {
        let lower = file.name.to_lowercase();
        entry.files.insert(file.name.clone(), (file, lower));
    }
}

impl MemoryStore {
    /// An empty index.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters more than losing the index, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    async fn register(&self, registration: Registration) -> Result<u64> {
        let mut inner = self.lock();
        let id = match inner.tokens.get(&registration.token) {
            Some(&id) => id,
            None => {
                inner.next_id += 1;
                let id = inner.next_id;
                inner.tokens.insert(registration.token.clone(), id);
                id
            }
        };
        let mut entry = PeerEntry {
            token: registration.token,
            session: registration.session,
            addr: registration.addr,
            shared_at: chrono::Utc::now().timestamp(),
            last_seen: Instant::now(),
            files: BTreeMap::new(),
        };
        insert_files(&mut entry, registration.files);
        inner.peers.insert(id, entry);
        Ok(id)
    }

    async fn add_files(&self, peer: u64, session: u64, files: Vec<FileEntry>) -> Result<u64> {
        let mut inner = self.lock();
        let entry = inner.owned(peer, session)?;
        insert_files(entry, files);
        entry.last_seen = Instant::now();
        Ok(entry.files.len() as u64)
    }

    async fn remove_files(&self, peer: u64, session: u64, names: Vec<String>) -> Result<u64> {
        let mut inner = self.lock();
        let entry = inner.owned(peer, session)?;
        for name in names {
            entry.files.remove(&name);
        }
        entry.last_seen = Instant::now();
        Ok(entry.files.len() as u64)
    }

    async fn unregister(&self, peer: u64, session: u64) -> Result<()> {
        let mut inner = self.lock();
        if inner.owned(peer, session).is_ok() {
            inner.remove_peer(peer);
        }
        Ok(())
    }

    async fn touch(&self, peer: u64, session: u64) -> Result<()> {
        let mut inner = self.lock();
        inner.owned(peer, session)?.last_seen = Instant::now();
        Ok(())
    }

    async fn search(&self, query: &Query, limit: usize) -> Result<(Vec<Hit>, bool)> {
        let inner = self.lock();
        let matches = query.matcher();
        let mut hits = Vec::new();
        for (&peer_id, peer) in &inner.peers {
            for (name, (file, lower)) in &peer.files {
                if matches(name, lower) {
                    if hits.len() == limit {
                        return Ok((hits, true));
                    }
                    hits.push(Hit {
                        peer_id,
                        addr: peer.addr,
                        file: file.clone(),
                        shared_at: peer.shared_at,
                    });
                }
            }
        }
        Ok((hits, false))
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>> {
        let inner = self.lock();
        Ok(inner
            .peers
            .iter()
            .map(|(&peer_id, peer)| PeerInfo {
                peer_id,
                addr: peer.addr,
                files: peer.files.len() as u64,
                bytes: peer.files.values().map(|(f, _)| f.size).sum(),
                shared_at: peer.shared_at,
            })
            .collect())
    }

    async fn expire(&self, ttl: Duration) -> Result<usize> {
        let mut inner = self.lock();
        let now = Instant::now();
        let stale: Vec<u64> = inner
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_seen) > ttl)
            .map(|(&id, _)| id)
            .collect();
        for &id in &stale {
            inner.remove_peer(id);
        }
        Ok(stale.len())
    }
}
