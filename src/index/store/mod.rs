//! What the index knows, behind one narrow interface ([`Store`]) so that the in-memory
//! store ([`memory`]) and the PostgreSQL one ([`postgres`]) are interchangeable.
//!
//! A peer's files belong to the session (connection) that registered them: only that
//! session may change or withdraw them, and a newer session of the same peer (same token)
//! takes them over, so a stale connection closing late withdraws nothing.

pub mod memory;
pub mod postgres;
mod sql;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::{FileEntry, Fingerprint, Hit, PeerInfo, TagQuery, Total};

pub use memory::MemoryStore;
pub use postgres::PgStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The session no longer owns the peer's files: it registered again elsewhere.
    #[error("this session no longer owns the peer's files (it registered again elsewhere)")]
    NotOwner,
    /// The database failed; the text is for the server's log, not for clients.
    #[error("database: {0}")]
    Database(String),
}

/// What a store operation returns.
pub type Result<T> = std::result::Result<T, StoreError>;

/// How a file's name must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    /// Any name (other criteria decide).
    Any,
    /// Case-insensitive substring; the pattern is lowercase.
    Substring(String),
    /// Case-insensitive `*`/`?` wildcard match of the whole name; lowercase.
    Wildcard(String),
    /// Exactly this name (case-sensitive).
    Exact(String),
}

/// A search compiled for a store: the name criterion parsed once, and the peer whose
/// files are browsed. Built by the index from a checked [`crate::protocol::SearchQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name criterion.
    pub name: NameMatch,
    /// Lowercase hex prefix of the SHA-256.
    pub sha256_prefix: Option<String>,
    /// Smallest size, inclusive.
    pub min_size: Option<u64>,
    /// Largest size, inclusive.
    pub max_size: Option<u64>,
    /// Only this peer's files.
    pub peer: Option<u64>,
    /// Criteria on media tags, their text in lowercase; a file without tags fails them.
    pub tags: Option<TagQuery>,
    /// How many matches to skip (in the store's own stable order) before the first
    /// returned: the page a client asked for.
    pub offset: u64,
}

/// One page of a search: its hits, whether more follow it, and how many match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The hits, at most the limit asked for.
    pub hits: Vec<Hit>,
    /// Whether more match after this page.
    pub truncated: bool,
    /// How many match in all, counted up to the bound asked for.
    pub total: Total,
}

impl Query {
    /// A query on the name alone: wildcards when it has `*` or `?`, else a substring.
    pub fn pattern(pattern: &str) -> Query {
        let lower = pattern.to_lowercase();
        let name = if pattern.is_empty() {
            NameMatch::Any
        } else if pattern.contains(['*', '?']) {
            NameMatch::Wildcard(lower)
        } else {
            NameMatch::Substring(lower)
        };
        Query::by(name)
    }

    /// A query on `name` and nothing else.
    pub fn by(name: NameMatch) -> Query {
        Query {
            name,
            sha256_prefix: None,
            min_size: None,
            max_size: None,
            peer: None,
            tags: None,
            offset: 0,
        }
    }
}

/// Peer IDs are drawn from 1 ..= `ID_SPACE`: at most nine digits to type.
pub const ID_SPACE: u64 = 999_999_999;

/// The Peer ID a key gets: derived from its fingerprint, so the same on every index and
/// after any restart of the peer or of the index (in memory or not). Should two keys
/// ever meet on one ID, the later one takes the next free ID ([`next_id`]).
pub fn peer_id_of(fingerprint: &Fingerprint) -> u64 {
    let head = u64::from_be_bytes(fingerprint.0[..8].try_into().expect("eight bytes"));
    1 + head % ID_SPACE
}

/// The ID probed after `id` when `id` belongs to another key.
pub fn next_id(id: u64) -> u64 {
    id % ID_SPACE + 1
}

/// A peer session registering its files.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The peer's identity as the store keys it, stable across its reconnections and
    /// restarts: the plain form of `fingerprint` (the token the peer sends is not used).
    pub token: String,
    /// The key the peer proved in the TLS handshake of the registering connection.
    pub fingerprint: Fingerprint,
    /// The connection registering, unique for the life of the server.
    pub session: u64,
    /// Where downloaders reach the peer's file server.
    pub addr: SocketAddr,
    /// Whether the index could connect to `addr` (else the peer is behind a NAT).
    pub reachable: bool,
    /// The files.
    pub files: Vec<FileEntry>,
}

/// What the index holds, for its capacity limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Files of every live peer.
    pub files: u64,
    /// Bytes of their names.
    pub name_bytes: u64,
    /// Files of the live peers at the address asked about.
    pub files_from: u64,
    /// Files of the live peer with the token asked about (a registration replaces them).
    pub own_files: u64,
    /// Bytes of their names.
    pub own_name_bytes: u64,
    /// Bytes of their text tags (see [`crate::protocol::MAX_PEER_TAGS`]).
    pub own_tag_bytes: u64,
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
    /// Bind `name` (or nothing) to `peer`'s key, first come first served and regardless
    /// of case: returns the nickname the peer now has, `None` when another key holds it.
    fn bind_nickname(
        &self,
        peer: u64,
        name: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>>> + Send;
    /// Withdraw a peer, if `session` still owns it.
    fn unregister(&self, peer: u64, session: u64) -> impl Future<Output = Result<()>> + Send;
    /// Note that a peer's session is alive.
    fn touch(&self, peer: u64, session: u64) -> impl Future<Output = Result<()>> + Send;
    /// Note that these (peer, session) pairs, the server's open sessions, are alive: a
    /// session is only silent once its connection is gone.
    fn keep_alive(&self, sessions: &[(u64, u64)]) -> impl Future<Output = Result<()>> + Send;
    /// Files matching `query`, at most `limit`; the flag says whether more matched.
    fn search(
        &self,
        query: &Query,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Hit>, bool)>> + Send;
    /// The page of files matching `query` that starts at `query.offset`, at most `limit`
    /// of them, and how many match in all, counted no further than `bound` (beyond it the
    /// total says "more than"). Pages come in a stable order, so that the next offset
    /// continues where this page ended while the index does not change.
    fn page(
        &self,
        query: &Query,
        limit: usize,
        bound: u64,
    ) -> impl Future<Output = Result<Page>> + Send;
    /// What the index holds in all, from `from`, and under `token`.
    fn usage(
        &self,
        from: std::net::IpAddr,
        token: Option<&str>,
    ) -> impl Future<Output = Result<Usage>> + Send;
    /// Whether `peer` is registered now.
    fn is_live(&self, peer: u64) -> impl Future<Output = Result<bool>> + Send;
    /// Every peer.
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerInfo>>> + Send;
    /// Withdraw peers not touched within `ttl`; returns how many.
    fn expire(&self, ttl: Duration) -> impl Future<Output = Result<usize>> + Send;
}
