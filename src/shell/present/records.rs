//! Outcomes as records for programs: `--json` (or `format json`) prints the [`Record`]s
//! of each command's outcome ([`records`]) as JSON Lines instead of text. Errors become
//! `{"error": {"code", "message"}}` with a stable [`error_code`]. The schema of every
//! record is in docs/JSON.md; change both together.

use std::net::SocketAddr;

use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use crate::error::Error;
use crate::protocol::{ErrorCode, Hit, PeerInfo};
use crate::shell::commands::Format;
use crate::shell::commands::outcome::{
    Change, CommandHelp, Fetched, Found, Help, Limits, Link, Outcome, Page, Registered, Status,
    TransferRow, Upload, groups,
};

/// An exit status of the binary.
pub mod exit {
    /// Every command succeeded.
    pub const OK: u8 = 0;
    /// A command failed.
    pub const FAILED: u8 = 1;
    /// A command or option was typed wrong, or the config is invalid.
    pub const USAGE: u8 = 2;
    /// Every command succeeded, but a `search` or `files` found nothing.
    pub const NOTHING_MATCHED: u8 = 3;
    /// Stopped by SIGINT while a one-shot command ran.
    pub const INTERRUPTED: u8 = 130;
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-11-26T11:46:10Z`).
pub fn utc(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map_or_else(String::new, |t| {
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        })
}

/// Where a peer's file server is reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// `host:port` (IPv6 in brackets).
    pub addr: String,
    /// The host alone.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint {
            addr: addr.to_string(),
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

/// One search or browse row: a file shared by one peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRow {
    /// The Peer ID sharing it.
    pub peer_id: u64,
    /// The key that peer proved to the index, in full.
    pub fingerprint: String,
    /// That peer's nickname on this index, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// Where that peer serves.
    #[serde(flatten)]
    pub at: Endpoint,
    /// Whether the index could connect to it (false: behind a NAT, reached by a
    /// reverse connection, hole punching or the index's relay).
    pub reachable: bool,
    /// The shared name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Full SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// When the index first saw this file from this peer, RFC 3339 UTC.
    pub shared_at: String,
    /// An audio file's media tags (the protocol's Tags object), when it has some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<crate::protocol::Tags>,
    /// Round-trip time to the peer in milliseconds (`search -r`; `null` if unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<Option<f64>>,
}

impl FileRow {
    /// The row of `hit`.
    pub fn of(hit: &Hit) -> Self {
        FileRow {
            peer_id: hit.peer_id,
            fingerprint: hit.fingerprint.to_string(),
            nickname: hit.nickname.clone(),
            at: hit.addr.into(),
            reachable: hit.reachable,
            name: hit.file.name.clone(),
            size: hit.file.size,
            sha256: hit.file.sha256.clone(),
            shared_at: utc(hit.shared_at),
            tags: hit.file.tags.clone(),
            rtt_ms: None,
        }
    }
}

/// What a command reports, one JSON object each (`"type"` names the variant).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A `search` row.
    Hit(FileRow),
    /// A `files` row.
    File(FileRow),
    /// A `search -c` row: one distinct contents and the peers sharing it.
    Group(crate::shell::commands::outcome::Group),
    /// More rows matched than were returned.
    Truncated {
        /// Rows returned.
        shown: u64,
    },
    /// After the rows of `search` and `files`, when the index counted the matches.
    Total {
        /// The row number (from 1) of the first row shown.
        first: u64,
        /// Rows shown.
        shown: u64,
        /// How many match in all (with `more_than`: at least this many).
        total: u64,
        /// The index stopped counting: more than `total` match.
        more_than: bool,
    },
    /// A `peers` row.
    Peer {
        /// Its Peer ID.
        peer_id: u64,
        /// The key it proved to the index, in full.
        fingerprint: String,
        /// Its nickname on this index, if it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        nickname: Option<String>,
        /// Where it serves.
        #[serde(flatten)]
        at: Endpoint,
        /// Whether the index could connect to it.
        reachable: bool,
        /// Files it shares.
        files: u64,
        /// Their total size in bytes.
        bytes: u64,
        /// When it registered, RFC 3339 UTC.
        shared_at: String,
    },
    /// `serve` started an index server.
    Serving {
        /// Where it listens.
        #[serde(flatten)]
        at: Endpoint,
        /// `in memory` or `in PostgreSQL`.
        backend: String,
        /// The metrics endpoint, when `[index] metrics` is set.
        #[serde(skip_serializing_if = "Option::is_none")]
        metrics: Option<String>,
    },
    /// `connect` reached an index server.
    Connected {
        /// The server answering.
        #[serde(flatten)]
        at: Endpoint,
        /// Its round-trip time in milliseconds.
        rtt_ms: f64,
        /// The key it proved, in full.
        fingerprint: String,
    },
    /// `register` shares a folder.
    Registered {
        /// The Peer ID the index assigned.
        peer_id: u64,
        /// The nickname the index bound to this key (`[peer] name`), if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        nickname: Option<String>,
        /// The index server.
        index: String,
        /// Where this peer serves.
        #[serde(flatten)]
        at: Endpoint,
        /// Whether the index could connect to it (false: behind a NAT).
        reachable: bool,
        /// The folder.
        dir: String,
        /// Files shared.
        files: u64,
        /// Their total size in bytes.
        bytes: u64,
        /// Files read and hashed now.
        hashed_files: u64,
        /// Bytes read and hashed now.
        hashed_bytes: u64,
        /// Files whose hash came from the cache.
        cached_files: u64,
    },
    /// `refresh`, `share` or `unshare` told the index what changed.
    Refreshed {
        /// Files added or changed.
        changed: u64,
        /// Files withdrawn.
        removed: u64,
        /// Files read and hashed.
        hashed_files: u64,
        /// Bytes read and hashed.
        hashed_bytes: u64,
        /// Files still being written, announced once settled.
        unsettled: u64,
    },
    /// `unregister` withdrew this peer.
    Unregistered {
        /// Its Peer ID.
        peer_id: u64,
    },
    /// A download finished (or there was nothing to do).
    Saved {
        /// The file's name in the index.
        name: String,
        /// Where it is now.
        path: String,
        /// Size in bytes.
        size: u64,
        /// Full SHA-256, checked.
        sha256: String,
        /// Peer IDs it came from.
        peer_ids: Vec<u64>,
        /// Bytes kept from an earlier, interrupted download.
        resumed: u64,
        /// Bytes that failed their check and were fetched again.
        refetched: u64,
        /// Chunks delivered by each path the sources were reached by (`local`,
        /// `direct`, `reverse`, `punched`, `relayed`).
        routes: std::collections::BTreeMap<String, u64>,
        /// Seconds it took.
        seconds: f64,
        /// True when the same contents were already there.
        already_there: bool,
    },
    /// A background download started.
    Started {
        /// Its number in `transfers`.
        transfer: u64,
        /// The file.
        name: String,
    },
    /// A `transfers` row: one download of the queue.
    Transfer {
        /// Its number, for `cancel`, `pause` and `resume`.
        transfer: u64,
        /// The file, with its folder below the downloads folder.
        name: String,
        /// queued, running, waiting, pausing, paused, cancelling, cancelled, done or
        /// failed.
        state: String,
        /// The state in words (where it was saved, why it failed, whose line it waits in).
        detail: String,
        /// Bytes in place.
        done: u64,
        /// Its size in bytes.
        size: u64,
        /// Bytes per second arriving in this run, while running.
        rate: Option<f64>,
        /// Seconds left at that rate.
        eta_seconds: Option<f64>,
        /// Peers sending now.
        peers: u64,
        /// While waiting for an upload slot: the peer whose line it is.
        waiting_at: Option<u64>,
        /// And its position in that line, from 1.
        position: Option<u64>,
    },
    /// `cancel`, `pause` or `resume` changed a download.
    Changed {
        /// Its number.
        transfer: u64,
        /// The file.
        name: String,
        /// cancelled, paused or queued.
        state: Change,
    },
    /// `clear` dropped ended downloads from the list.
    Cleared {
        /// How many.
        count: u64,
    },
    /// An `uploads` row: a downloader of this peer's files.
    Upload {
        /// Its Peer ID, from the key it proved.
        peer_id: u64,
        /// That key, in full.
        fingerprint: String,
        /// Where it connects from.
        #[serde(flatten)]
        at: Endpoint,
        /// The file.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Bytes of it sent to this downloader.
        sent: u64,
        /// Bytes per second since it connected.
        rate: Option<f64>,
        /// Its position in line for an upload slot, while it waits for one.
        position: Option<u64>,
    },
    /// `link`: a link to shared contents.
    Link(Link),
    /// Download progress (`--progress`).
    Progress {
        /// The file.
        name: String,
        /// Bytes arrived so far.
        done: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// `limit`: bandwidth limits in bytes per second (`null`: none).
    Limits(Limits),
    /// `ping` measured a peer.
    Pong {
        /// Its Peer ID.
        peer_id: u64,
        /// Where it serves.
        #[serde(flatten)]
        at: Endpoint,
        /// Round-trip time in milliseconds.
        rtt_ms: f64,
    },
    /// The other side (the index or a peer) refused a command; its error follows on
    /// stderr.
    Refused {
        /// The error code, as on stderr (`refused_busy`, `not_found`, …).
        code: String,
        /// What the other side said.
        message: String,
    },
    /// `status`: what this process serves, shares and talks to, as fields.
    Status(Box<Status>),
    /// A `help` row: one command of the list.
    Command(CommandHelp),
    /// `help <command>`: one command.
    Help(CommandHelp),
    /// `format`: how results print from now on.
    Format {
        /// `table` or `json`.
        format: Format,
    },
    /// `status`: where this napster keeps what makes it itself, and the settings it read.
    Home(crate::shell::commands::outcome::Home),
}

impl Record {
    /// The row of a registered peer.
    pub fn peer(p: &PeerInfo) -> Self {
        Record::Peer {
            peer_id: p.peer_id,
            fingerprint: p.fingerprint.to_string(),
            nickname: p.nickname.clone(),
            at: p.addr.into(),
            reachable: p.reachable,
            files: p.files,
            bytes: p.bytes,
            shared_at: utc(p.shared_at),
        }
    }
}

/// A JSON Line of `record`.
pub fn json_line(record: &Record) -> String {
    let mut line = serde_json::to_string(record).unwrap_or_default();
    line.push('\n');
    line
}

/// The stable code of an error, for scripts to tell failures apart.
pub fn error_code(e: &Error) -> String {
    match e {
        Error::Io { .. } => "io".into(),
        Error::Protocol(crate::protocol::Error::Timeout(..)) => "timeout".into(),
        Error::Protocol(_) => "protocol".into(),
        Error::Refused { code, .. } => match code {
            ErrorCode::NotFound => "not_found".into(),
            other => format!("refused_{}", refused_name(*other)),
        },
        Error::ChangedWhileReading(_) => "changed_while_reading".into(),
        Error::Config(_) => "config".into(),
        Error::Usage(_) => "usage".into(),
        Error::ChecksumMismatch { .. } => "checksum_mismatch".into(),
        Error::WrongKey { .. } => "wrong_key".into(),
        Error::Cancelled => "cancelled".into(),
        Error::NotFound(_) => "not_found".into(),
        Error::Other(_) => "failed".into(),
    }
}

/// The wire name of a refusal (`busy`, `not_registered`…).
fn refused_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".into())
}

/// `{"error": {"code", "message"}}` for stderr.
pub fn json_error(code: &str, message: &str, line: Option<usize>) -> String {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(line) = line {
        error["line"] = line.into();
    }
    serde_json::json!({ "error": error }).to_string()
}

/// The records of `outcome`, for `--json` (none for a `quit`, or a listing of nothing).
pub fn records(outcome: &Outcome) -> Vec<Record> {
    match outcome {
        Outcome::Serving(s) => vec![Record::Serving {
            at: s.addr.into(),
            backend: s.backend.to_owned(),
            metrics: s.metrics.clone(),
        }],
        Outcome::Connected(c) => vec![Record::Connected {
            at: c.addr.into(),
            rtt_ms: c.rtt_ms,
            fingerprint: c.fingerprint.clone(),
        }],
        Outcome::Registered(r) => vec![registered(r)],
        Outcome::Refreshed(r) => vec![Record::Refreshed {
            changed: r.changed,
            removed: r.removed,
            hashed_files: r.hashed_files,
            hashed_bytes: r.hashed_bytes,
            unsettled: r.unsettled,
        }],
        Outcome::Unregistered { peer_id } => vec![Record::Unregistered { peer_id: *peer_id }],
        Outcome::Found(found) => self::found(found),
        Outcome::Browsed(b) => {
            let mut rows: Vec<Record> = b
                .hits
                .iter()
                .map(|h| Record::File(FileRow::of(h)))
                .collect();
            if !b.hits.is_empty() {
                rows.extend(page(&b.page, b.hits.len() as u64));
            }
            rows
        }
        Outcome::Got(got) => got.files.iter().map(fetched).collect(),
        Outcome::Transfers(t) => t.rows.iter().map(transfer).collect(),
        Outcome::Changed(c) => vec![Record::Changed {
            transfer: c.transfer,
            name: c.name.clone(),
            state: c.state,
        }],
        Outcome::Cleared { count } => vec![Record::Cleared { count: *count }],
        Outcome::Uploads(rows) => rows.iter().flatten().map(upload).collect(),
        Outcome::Link(link) => vec![Record::Link(link.clone())],
        Outcome::Limits(limits) => vec![Record::Limits(*limits)],
        Outcome::Pong(p) => vec![Record::Pong {
            peer_id: p.peer_id,
            at: p.addr.into(),
            rtt_ms: p.rtt_ms,
        }],
        Outcome::Peers(peers) => peers.iter().map(Record::peer).collect(),
        Outcome::Status(status) => {
            let home = status.home.clone().map(Record::Home);
            std::iter::once(Record::Status(status.clone()))
                .chain(home)
                .collect()
        }
        Outcome::Help(Help::List(commands)) => {
            commands.iter().cloned().map(Record::Command).collect()
        }
        Outcome::Help(Help::One(command)) => vec![Record::Help(command.clone())],
        Outcome::Format(format) => vec![Record::Format { format: *format }],
        Outcome::Quit => Vec::new(),
    }
}

fn registered(r: &Registered) -> Record {
    Record::Registered {
        peer_id: r.peer_id,
        nickname: r.nickname.clone(),
        index: r.index.to_string(),
        at: r.addr.into(),
        reachable: r.reach.reachable,
        dir: r.dir.clone(),
        files: r.files,
        bytes: r.bytes,
        hashed_files: r.hashed_files,
        hashed_bytes: r.hashed_bytes,
        cached_files: r.cached_files,
    }
}

/// `search`'s rows (or `search -c`'s groups), then where they sit.
fn found(found: &Found) -> Vec<Record> {
    let mut rows: Vec<Record> = if found.collapse {
        groups(&found.hits).into_iter().map(Record::Group).collect()
    } else {
        found
            .hits
            .iter()
            .map(|hit| {
                let mut row = FileRow::of(hit);
                if let Some(rtts) = &found.rtts {
                    row.rtt_ms = Some(rtts.get(&hit.peer_id).copied().flatten());
                }
                Record::Hit(row)
            })
            .collect()
    };
    if !found.hits.is_empty() {
        rows.extend(page(&found.page, found.hits.len() as u64));
    }
    rows
}

fn fetched(fetched: &Fetched) -> Record {
    match fetched {
        Fetched::Saved(s) => Record::Saved {
            name: s.name.clone(),
            path: s.path.clone(),
            size: s.size,
            sha256: s.sha256.clone(),
            peer_ids: s.peer_ids.clone(),
            resumed: s.resumed,
            refetched: s.refetched,
            routes: s.routes.clone(),
            seconds: s.seconds,
            already_there: s.already_there,
        },
        Fetched::Queued { transfer, name } => Record::Started {
            transfer: *transfer,
            name: name.clone(),
        },
    }
}

fn upload(u: &Upload) -> Record {
    Record::Upload {
        peer_id: u.peer_id,
        fingerprint: u.fingerprint.to_string(),
        at: u.from.into(),
        name: u.name.clone(),
        size: u.size,
        sent: u.sent,
        rate: u.rate,
        position: u.position,
    }
}

/// The records after a page's rows: that more follow, and where they sit in the total.
fn page(page: &Page, shown: u64) -> Vec<Record> {
    let mut records = Vec::new();
    if page.truncated {
        records.push(Record::Truncated { shown });
    }
    if let Some(total) = page.total.filter(|_| page.truncated || page.start > 0) {
        records.push(Record::Total {
            first: page.start + 1,
            shown,
            total: total.count,
            more_than: total.more,
        });
    }
    records
}

fn transfer(r: &TransferRow) -> Record {
    Record::Transfer {
        transfer: r.number,
        name: r.name.clone(),
        state: r.stage.to_owned(),
        detail: r.state.clone(),
        done: r.done,
        size: r.size,
        rate: r.rate,
        eta_seconds: r.eta_seconds,
        peers: r.peers as u64,
        waiting_at: r.waiting.map(|w| w.0),
        position: r.waiting.map(|w| w.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_stable_codes_and_times_are_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(error_code(&Error::Usage("x".into())), "usage");
        let busy = Error::refused(ErrorCode::Busy, "busy");
        assert_eq!(error_code(&busy), "refused_busy");
        let line = json_error("usage", "bad", Some(3));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["error"]["line"], 3);
        assert_eq!(parsed["error"]["message"], "bad");
    }
}
