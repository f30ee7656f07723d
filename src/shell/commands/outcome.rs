//! What each command's handler returns: plain data (serde `Serialize`), with no terminal,
//! no wording and no record in it. The presenter (`shell::present`) turns an
//! [`Outcome`] into text for people or into the JSON records of docs/JSON.md; an HTTP
//! handler can serve the same values.

use std::collections::BTreeMap;

use serde::Serialize;

use super::args::Format;
use crate::protocol::{Hit, PeerInfo, Total};

pub use crate::download::queue::Row as TransferRow;

/// What one command did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "command", content = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `serve` started an index server.
    Serving(Serving),
    /// `connect` reached an index server.
    Connected(Connected),
    /// `register` shares a folder.
    Registered(Registered),
    /// `refresh`, `share` or `unshare` told the index what changed.
    Refreshed(Refreshed),
    /// `unregister` withdrew this peer.
    Unregistered {
        /// Its Peer ID.
        peer_id: u64,
    },
    /// `search`: the rows found.
    Found(Found),
    /// `files`: a page of one peer's files.
    Browsed(Browsed),
    /// `get`: what was fetched or queued, and what was not.
    Got(Got),
    /// `transfers`: the download queue.
    Transfers(Transfers),
    /// `cancel`, `pause` or `resume` changed a download.
    Changed(Changed),
    /// `clear` dropped this many ended downloads.
    Cleared {
        /// How many.
        count: u64,
    },
    /// `uploads`: who downloads from this peer (`None`: not sharing).
    Uploads(Option<Vec<Upload>>),
    /// `link`: a link to shared contents.
    Link(Link),
    /// `limit`: bandwidth limits in bytes per second (`None`: none).
    Limits(Limits),
    /// `ping` measured a peer.
    Pong(Pong),
    /// `peers`: the peers registered with the index.
    Peers(Vec<PeerInfo>),
    /// `status`: what this process serves, shares and talks to.
    Status(Box<Status>),
    /// `help`: the command list, or one command.
    Help(Help),
    /// `format`: how results print from now on.
    Format(Format),
    /// `quit`.
    Quit,
}

impl Outcome {
    /// Whether it is a `search` or `files` that found nothing (a one-shot exits 3).
    pub fn nothing_matched(&self) -> bool {
        match self {
            Outcome::Found(found) => found.hits.is_empty(),
            Outcome::Browsed(browsed) => browsed.hits.is_empty(),
            _ => false,
        }
    }
}

/// Where a listing's page sits among all its rows.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Page {
    /// Rows skipped before the first one shown.
    pub start: u64,
    /// More rows follow (`more` shows them).
    pub truncated: bool,
    /// How many match in all, when the index counted.
    pub total: Option<Total>,
}

/// `serve`.
#[derive(Debug, Clone, Serialize)]
pub struct Serving {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// `in memory` or `in PostgreSQL`.
    pub backend: &'static str,
    /// The PostgreSQL schema's version, when the index is kept there.
    pub schema_version: Option<i64>,
    /// The metrics endpoint, when `[index] metrics` is set.
    pub metrics: Option<String>,
    /// The index this shell used before, which it no longer does.
    pub replaced: Option<std::net::SocketAddr>,
}

/// A key the known-indexes file now pins.
#[derive(Debug, Clone, Serialize)]
pub struct Pinned {
    /// The index.
    pub addr: std::net::SocketAddr,
    /// Its key.
    pub fingerprint: String,
    /// The known-indexes file.
    pub file: String,
    /// Whether another key was pinned for it before.
    pub replaced: bool,
}

/// `connect`.
#[derive(Debug, Clone, Serialize)]
pub struct Connected {
    /// The server answering.
    pub addr: std::net::SocketAddr,
    /// Its round-trip time in milliseconds.
    pub rtt_ms: f64,
    /// The key it proved.
    pub fingerprint: String,
    /// The others given, tried when it goes away.
    pub fails_over: Vec<std::net::SocketAddr>,
    /// Its key, when this connection pinned it.
    pub pinned: Option<Pinned>,
}

/// `register`.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    /// The Peer ID the index assigned.
    pub peer_id: u64,
    /// The nickname the index bound to this key, if any.
    pub nickname: Option<String>,
    /// The nickname asked for (`[peer] name`) when another key holds it.
    pub nickname_taken: Option<String>,
    /// The index server.
    pub index: std::net::SocketAddr,
    /// Where this peer serves.
    pub addr: std::net::SocketAddr,
    /// How the index sees it.
    pub reach: Reach,
    /// The folder.
    pub dir: String,
    /// Files shared.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Files read and hashed now.
    pub hashed_files: u64,
    /// Bytes read and hashed now.
    pub hashed_bytes: u64,
    /// Files whose hash came from the cache.
    pub cached_files: u64,
}

/// How the index sees this peer's file server.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Reach {
    /// The address the index tried (`None`: not known yet).
    pub checked: Option<std::net::SocketAddr>,
    /// Whether it could connect there.
    pub reachable: bool,
}

impl From<Option<crate::client::Reach>> for Reach {
    fn from(reach: Option<crate::client::Reach>) -> Self {
        Reach {
            checked: reach.map(|r| r.addr),
            reachable: reach.is_none_or(|r| r.reachable),
        }
    }
}

/// `refresh`, `share`, `unshare`.
#[derive(Debug, Clone, Serialize)]
pub struct Refreshed {
    /// This peer.
    pub peer_id: u64,
    /// Its nickname, if any.
    pub nickname: Option<String>,
    /// Files it shares now.
    pub shared: u64,
    /// Files added or changed.
    pub changed: u64,
    /// Files withdrawn.
    pub removed: u64,
    /// Files read and hashed.
    pub hashed_files: u64,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Files still being written, announced once settled.
    pub unsettled: u64,
}

/// `search`.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The name pattern asked for.
    pub pattern: String,
    /// The hash and size filters as typed (`>1GB`).
    pub filters: Vec<String>,
    /// The rows.
    pub hits: Vec<Hit>,
    /// With `-r`: each peer's round-trip time in milliseconds (`None`: no answer).
    pub rtts: Option<BTreeMap<u64, Option<f64>>>,
    /// With `-c`: one row per distinct contents.
    pub collapse: bool,
    /// Where the page sits.
    pub page: Page,
}

impl Found {
    /// The peers sharing a match.
    pub fn peers(&self) -> usize {
        let peers: std::collections::BTreeSet<u64> = self.hits.iter().map(|h| h.peer_id).collect();
        peers.len()
    }
}

/// One distinct contents of `search -c`, and the peers sharing it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// A name it is shared under: the first in order, when peers name it differently.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Full SHA-256.
    pub sha256: String,
    /// The Peer IDs sharing it, under any name.
    pub peer_ids: Vec<u64>,
}

/// `search -c`'s rows: one per distinct contents (the same bytes under two names are one
/// row), in the order of their names.
pub fn groups(hits: &[Hit]) -> Vec<Group> {
    let mut by_contents: BTreeMap<(&str, u64), Group> = BTreeMap::new();
    for hit in hits {
        let file = &hit.file;
        let group = by_contents
            .entry((file.sha256.as_str(), file.size))
            .or_insert_with(|| Group {
                name: file.name.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
                peer_ids: Vec::new(),
            });
        if file.name < group.name {
            group.name.clone_from(&file.name);
        }
        if !group.peer_ids.contains(&hit.peer_id) {
            group.peer_ids.push(hit.peer_id);
        }
    }
    let mut groups: Vec<Group> = by_contents.into_values().collect();
    groups.sort_by(|a, b| (&a.name, &a.sha256).cmp(&(&b.name, &b.sha256)));
    groups
}

/// `files`.
#[derive(Debug, Clone, Serialize)]
pub struct Browsed {
    /// Whose files.
    pub peer_id: u64,
    /// The rows.
    pub hits: Vec<Hit>,
    /// How many files the peer shares, and their bytes.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Where the page sits.
    pub page: Page,
}

/// `get`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Got {
    /// Each file, in order: saved now, or added to the queue.
    pub files: Vec<Fetched>,
    /// The files not fetched, and why.
    pub problems: Vec<String>,
}

/// One file of a `get`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fetched {
    /// Downloaded now (or already there).
    Saved(Saved),
    /// Added to the download queue as this number.
    Queued {
        /// Its number in `transfers`.
        transfer: u64,
        /// The file, with its folder.
        name: String,
    },
}

/// A download that finished.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    /// The file's name in the index.
    pub name: String,
    /// Where it is now.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Full SHA-256, checked.
    pub sha256: String,
    /// Peer IDs it came from.
    pub peer_ids: Vec<u64>,
    /// Bytes kept from an earlier, interrupted download.
    pub resumed: u64,
    /// Bytes that failed their check and were fetched again.
    pub refetched: u64,
    /// Chunks delivered by each path the sources were reached by.
    pub routes: BTreeMap<String, u64>,
    /// Sources it came from (one per peer that sent something).
    pub sources: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// True when the same contents were already there.
    pub already_there: bool,
    /// This napster's own Peer ID, when it was the only one sharing the file.
    pub only_from_myself: Option<u64>,
}

/// `transfers`.
#[derive(Debug, Clone, Serialize)]
pub struct Transfers {
    /// Why the queue is not kept across restarts, when it is not.
    pub unkept: Option<String>,
    /// The downloads.
    pub rows: Vec<TransferRow>,
}

/// What `cancel`, `pause` and `resume` do to a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// `cancel`: stopped, what arrived removed.
    Cancelled,
    /// `pause`: stopped, what arrived kept.
    Paused,
    /// `resume`: back in the queue.
    Queued,
}

/// `cancel`, `pause`, `resume`.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// Its number.
    pub transfer: u64,
    /// The file.
    pub name: String,
    /// What happened to it.
    pub state: Change,
}

/// A row of `uploads`.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    /// The downloader's Peer ID, from its key.
    pub peer_id: u64,
    /// That key.
    pub fingerprint: crate::protocol::Fingerprint,
    /// Where it connects from.
    pub from: std::net::SocketAddr,
    /// The file.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes sent to this downloader.
    pub sent: u64,
    /// Bytes per second since it connected, while sending.
    pub rate: Option<f64>,
    /// Its position in line for an upload slot, while it waits.
    pub position: Option<u64>,
}

/// `link`.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// The link.
    pub link: String,
    /// The name it saves as.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Full SHA-256.
    pub sha256: String,
}

/// `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Upload limit in bytes per second.
    pub upload: Option<u64>,
    /// Download limit in bytes per second.
    pub download: Option<u64>,
}

/// `ping`.
#[derive(Debug, Clone, Serialize)]
pub struct Pong {
    /// Its Peer ID.
    pub peer_id: u64,
    /// Where it serves.
    pub addr: std::net::SocketAddr,
    /// Round-trip time in milliseconds.
    pub rtt_ms: f64,
}

/// `status`: each part of the process, as fields (others may add theirs).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The index server in this process, if it runs.
    pub index_server: Option<IndexServer>,
    /// The index this shell talks to.
    pub index: Option<IndexLink>,
    /// Why it cannot be reached, when it cannot.
    pub index_error: Option<String>,
    /// The share, if this peer shares.
    pub sharing: Option<Sharing>,
    /// The router's port mapping of the file server, while sharing.
    pub port_mapping: Option<String>,
    /// The downloads folder, as configured.
    pub downloads: String,
    /// Bandwidth limits.
    pub limits: Limits,
    /// Running, queued and paused downloads of the queue.
    pub transfers: QueueCounts,
    /// Uploads sending and waiting, while sharing.
    pub uploads: Option<UploadCounts>,
    /// This peer's key fingerprint.
    pub identity: Option<String>,
    /// Why the key cannot be used, when it cannot.
    pub identity_error: Option<String>,
    /// Where this napster lives (`None` for a configuration made in code).
    pub home: Option<Home>,
}

/// Where this napster keeps what makes it itself, and the settings it read.
#[derive(Debug, Clone, Serialize)]
pub struct Home {
    /// The home folder.
    pub home: String,
    /// Why it is the home: `option` (`--home`), `env` (`NAPSTER_HOME`), `legacy` (a key
    /// file was already in the current folder) or `data_dir`.
    pub chosen_by: crate::config::HomeFrom,
    /// This peer's key file.
    pub key: String,
    /// The index server's key file.
    pub index_key: String,
    /// The config files read, in the order they apply.
    pub config_files: Vec<String>,
}

/// The index server of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// `in memory` or `in PostgreSQL`.
    pub backend: &'static str,
    /// Peers registered.
    pub peers: u64,
    /// Files they share.
    pub files: u64,
}

/// The index of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexLink {
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// Round-trip time in milliseconds.
    pub rtt_ms: f64,
    /// Its key.
    pub fingerprint: String,
}

/// The share of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Sharing {
    /// The shared folders and files.
    pub roots: Vec<String>,
    /// This peer's Peer ID.
    pub peer_id: u64,
    /// Its nickname, if any.
    pub nickname: Option<String>,
    /// Files shared.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Where the file server listens.
    pub addr: std::net::SocketAddr,
    /// The index it registered with.
    pub index: std::net::SocketAddr,
    /// Whether its session with the index is up.
    pub connected: bool,
    /// How the index sees it.
    pub reach: Reach,
}

/// The download queue of `status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueCounts {
    /// Downloads running.
    pub running: u64,
    /// Waiting their turn.
    pub queued: u64,
    /// Paused.
    pub paused: u64,
    /// Most at once (`[peer] max_downloads`).
    pub max: u64,
}

/// Uploads of `status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UploadCounts {
    /// Sending now.
    pub sending: u64,
    /// Waiting for a slot.
    pub waiting: u64,
}

/// `help`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Help {
    /// Every command, in the table's order.
    List(Vec<CommandHelp>),
    /// One command.
    One(CommandHelp),
}

/// One command as `help` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CommandHelp {
    /// Its name.
    pub name: &'static str,
    /// Its arguments.
    pub args: &'static str,
    /// One line.
    pub summary: &'static str,
    /// The rest.
    pub details: &'static str,
    /// Other names it answers to.
    pub aliases: &'static [&'static str],
}
