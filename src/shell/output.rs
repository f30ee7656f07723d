//! Output for programs: each handler emits typed [`Record`]s next to the text it prints,
//! and `--json` (or `format json`) prints those records as JSON Lines instead of the text.
//! Errors become `{"error": {"code", "message"}}` with a stable [`error_code`]. The schema
//! of every record is in docs/JSON.md; change both together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeZone, Utc};
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::HomeFrom;
use crate::error::Error;
use crate::protocol::{ErrorCode, FileEntry, Hit, PeerInfo};

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
    /// reverse connection).
    pub reachable: bool,
    /// The shared name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Full SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// When the index first saw this file from this peer, RFC 3339 UTC.
    pub shared_at: String,
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
            rtt_ms: None,
        }
    }
}

/// What a command reports, one JSON object each (`"type"` names the variant).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A `search` row.
    Hit(FileRow),
    /// A `files` row.
    File(FileRow),
    /// A `search -c` row: one distinct contents and the peers sharing it.
    Group {
        /// The shared name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Full SHA-256.
        sha256: String,
        /// The Peer IDs sharing it.
        peer_ids: Vec<u64>,
    },
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
        /// Chunks delivered by each path the sources were reached by (`direct`,
        /// `reverse`).
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
        state: String,
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
    Link {
        /// The link.
        link: String,
        /// The name it saves as.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Full SHA-256.
        sha256: String,
    },
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
    Limits {
        /// Upload limit.
        upload: Option<u64>,
        /// Download limit.
        download: Option<u64>,
    },
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
    /// `status`: where this napster keeps what makes it itself, and the settings it read.
    Home {
        /// The home folder.
        home: String,
        /// Why it is the home: `option` (`--home`), `env` (`NAPSTER_HOME`), `legacy` (a
        /// key file was already in the current folder) or `data_dir`.
        chosen_by: HomeFrom,
        /// This peer's key file.
        key: String,
        /// The index server's key file.
        index_key: String,
        /// The config files read, in the order they apply.
        config_files: Vec<String>,
    },
    /// Any other line a command prints (`status`, `help`, `transfers`, `format`).
    Message {
        /// The line.
        text: String,
    },
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

/// `search -c` rows: one per distinct name and contents, with the peers sharing it.
pub fn collapsed(hits: &[Hit]) -> Vec<Record> {
    let mut groups: BTreeMap<(&str, &str), (u64, Vec<u64>)> = BTreeMap::new();
    for hit in hits {
        groups
            .entry((hit.file.name.as_str(), hit.file.sha256.as_str()))
            .or_insert((hit.file.size, Vec::new()))
            .1
            .push(hit.peer_id);
    }
    groups
        .into_iter()
        .map(|((name, sha256), (size, peer_ids))| Record::Group {
            name: name.to_owned(),
            size,
            sha256: sha256.to_owned(),
            peer_ids,
        })
        .collect()
}

/// Least time between two progress records of one download.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// A download's progress callback that also prints a progress record on stdout at most
/// every [`PROGRESS_EVERY`], and when the last byte arrives.
pub fn progress(
    file: &FileEntry,
    inner: Arc<dyn Fn(u64) + Send + Sync>,
) -> Arc<dyn Fn(u64) + Send + Sync> {
    let (name, size) = (file.name.clone(), file.size);
    let state = Mutex::new((0u64, None::<Instant>));
    Arc::new(move |n: u64| {
        inner(n);
        let mut state = state.lock();
        state.0 += n;
        let due = state.1.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due || state.0 >= size {
            state.1 = Some(Instant::now());
            let record = Record::Progress {
                name: name.clone(),
                done: state.0.min(size),
                size,
            };
            say!("{}", json_line(&record));
        }
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::download::Cancel;

    use crate::shell::{Reply, Shell, commands};

    fn run(shell: &mut Shell, line: &str) -> Reply {
        let command = commands::parse(line).unwrap().expect("a command");
        smol::block_on(shell.execute(command, Cancel::default())).unwrap()
    }

    /// Handlers return typed records next to their text: full hashes, bytes, UTC times.
    #[test]
    fn handlers_return_records_for_programs() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut shell, services) = crate::shell::test_shell(tmp.path());
        let shared = tmp.path().join("shared");

        let served = run(&mut shell, "serve 0");
        assert!(
            matches!(&served.records[..], [Record::Serving { backend, metrics: None, .. }] if backend == "in memory"),
            "{served:?}"
        );
        run(&mut shell, &format!("register {} 0", shared.display()));
        let found = run(&mut shell, "search song");
        let [Record::Hit(hit)] = &found.records[..] else {
            panic!("{found:?}");
        };
        assert_eq!(hit.sha256, crate::digest::digest_bytes(b"la la la").sha256);
        assert_eq!((hit.size, hit.name.as_str()), (8, "song.ogg"));
        assert!(hit.peer_id > 0 && hit.fingerprint.len() > 50, "{hit:?}");
        assert!(hit.shared_at.ends_with('Z'), "{}", hit.shared_at);
        assert!(found.rows && !found.nothing_matched);
        let none = run(&mut shell, "search nothing");
        assert!(none.records.is_empty() && none.rows && none.nothing_matched);
        let saved = run(&mut shell, "get song.ogg");
        assert!(
            matches!(
                &saved.records[..],
                [Record::Saved {
                    size: 8,
                    already_there: false,
                    ..
                }]
            ),
            "{saved:?}"
        );
        smol::block_on(services.shutdown());
    }

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
