//! The shell: runs commands typed at a `rustyline` prompt or piped on stdin, and owns the
//! background services (index server, sharing, background downloads) of this process.
//!
//! A command is its table entry (`commands`: parsing, `help`, completion), its handler
//! (`handlers`, returning the text to print) and its README line. `app` builds
//! what the handlers use from `napster.toml`; [`repl`] reads lines and prints.

/// Append a line to a handler's output.
macro_rules! put {
    ($out:ident, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Print to stdout; a closed stdout (`napster | head -1`) is not an error worth dying
/// for, so it is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod app;
mod args;
pub mod cli;
pub mod commands;
mod editor;
mod finding;
mod getting;
mod handlers;
mod link;
pub mod output;
mod peers;
mod progress;
mod queue;
mod render;
pub mod repl;
pub mod services;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::client::IndexClient;
use crate::config::Config;
use crate::download::Cancel;
use crate::error::Result;
use crate::limit::RateLimit;
use crate::peer;
pub use app::{parse_addr, parse_addrs};
use commands::{Command, Format};
use output::Record;
use parking_lot::Mutex;
use services::Services;

/// Whether the shell goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave.
    Quit,
}

/// What a command gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The text for stdout.
    pub text: String,
    /// Whether the shell goes on.
    pub flow: Flow,
    /// What the command reports, for `--json`.
    pub records: Vec<Record>,
    /// The records are rows: print them (even none) instead of the text.
    pub rows: bool,
    /// A `search` or `files` that found nothing.
    pub nothing_matched: bool,
}

/// The state behind the prompt.
pub struct Shell {
    config: Config,
    services: Arc<Services>,
    index: Option<Vec<SocketAddr>>,
    client: Option<IndexClient>,
    /// Why the last `connect` failed, until one succeeds: nothing then falls back to
    /// another index.
    connect_failed: Option<String>,
    seen: Arc<Mutex<editor::Seen>>,
    show_progress: bool,
    upload: Arc<RateLimit>,
    download: Arc<RateLimit>,
    cache: Option<Arc<Mutex<peer::cache::HashCache>>>,
    /// How results print.
    pub format: Format,
    /// Whether downloads report progress records (`--progress`).
    pub progress_records: bool,
    records: Vec<Record>,
    /// Whether the records are the whole answer (rows, even none), not a summary.
    rows: bool,
    nothing_matched: bool,
    /// What `more` asks for: the next page of the last `search` or `files`.
    next_page: Option<finding::NextPage>,
    identity: Mutex<Option<crate::identity::Identity>>,
    /// The key file, locked while this process shares with it: two processes with one
    /// key are one peer, and the second would silently replace the first's files.
    key_lock: Option<std::fs::File>,
    /// Keys given with `connect host:port#FINGERPRINT`.
    pins: crate::client::Pins,
}

/// What `refresh`, `share` and `unshare` ask of the share.
enum Refresh {
    All,
    Share(PathBuf),
    Unshare(String),
}

impl Shell {
    /// A shell with `config`; `show_progress` draws progress bars on stderr.
    pub fn new(config: Config, services: Arc<Services>, show_progress: bool) -> Self {
        let (up, down) = config.rate_limits();
        Shell {
            upload: Arc::new(RateLimit::new(up)),
            download: Arc::new(RateLimit::new(down)),
            cache: None,
            identity: Mutex::default(),
            key_lock: None,
            pins: Default::default(),
            config,
            services,
            index: None,
            client: None,
            connect_failed: None,
            seen: Arc::default(),
            show_progress,
            format: Format::default(),
            progress_records: false,
            records: Vec::new(),
            rows: false,
            nothing_matched: false,
            next_page: None,
        }
    }

    /// File names and Peer IDs of the last results, for completion.
    fn seen(&self) -> Arc<Mutex<editor::Seen>> {
        self.seen.clone()
    }

    /// Remember what results showed, for completion.
    fn saw(&self, hits: &[crate::protocol::Hit]) {
        let mut seen = self.seen.lock();
        seen.names = hits.iter().map(|h| h.file.name.clone()).collect();
        seen.peers = hits.iter().map(|h| h.peer_id).collect();
        seen.peers.sort_unstable();
        seen.peers.dedup();
    }

    /// Note a record of the running command.
    fn emit(&mut self, record: Record) {
        self.records.push(record);
    }

    /// Run one parsed command; returns what it prints.
    pub async fn execute(&mut self, command: Command, cancel: Cancel) -> Result<Reply> {
        self.records.clear();
        self.rows = false;
        self.nothing_matched = false;
        let text = match command {
            Command::Serve(args) => self.serve(args.port, args.database).await?,
            Command::Connect(args) => self.connect(args.addrs()).await?,
            Command::Register(args) => self.register(args.dir, args.port, cancel.clone()).await?,
            Command::Unregister => self.unregister().await?,
            Command::Refresh => self.refresh(Refresh::All).await?,
            Command::Share(args) => self.refresh(Refresh::Share(args.dir)).await?,
            Command::Unshare(args) => self.refresh(Refresh::Unshare(args.what)).await?,
            Command::Search(args) => self.search(args).await?,
            Command::Files(args) => self.files(args).await?,
            Command::More => self.more().await?,
            Command::Get(args) => self.get_command(args, cancel).await?,
            Command::Transfers => self.transfers()?,
            Command::Cancel(n) => self.cancel(n.number).await?,
            Command::Pause(n) => self.pause(n.number).await?,
            Command::Resume(n) => self.resume(n.number)?,
            Command::Clear => self.clear()?,
            Command::Uploads => self.uploads()?,
            Command::Link(args) => self.link(&args.file, args.peer).await?,
            Command::Limit(args) => self.limit(args.direction, args.rate),
            Command::Ping(args) => self.ping(args.peer).await?,
            Command::Peers => self.peers().await?,
            Command::Status => self.status().await?,
            Command::Help(args) => format!("{}\n", commands::help(args.command.as_deref())?),
            Command::Format(args) => {
                if let Some(format) = args.format {
                    self.format = format;
                }
                format!("format: {}\n", self.format.name())
            }
            Command::Quit => {
                return Ok(Reply {
                    text: String::new(),
                    flow: Flow::Quit,
                    records: Vec::new(),
                    rows: false,
                    nothing_matched: false,
                });
            }
        };
        Ok(Reply {
            text,
            flow: Flow::Continue,
            records: std::mem::take(&mut self.records),
            rows: self.rows,
            nothing_matched: self.nothing_matched,
        })
    }
}

/// A shell for unit tests: everything it writes (keys, pins, downloads) lives in `dir`,
/// which also holds `shared/song.ogg` to share; no watching, no hash cache file.
#[cfg(test)]
pub(crate) fn test_shell(dir: &std::path::Path) -> (Shell, Arc<Services>) {
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("song.ogg"), b"la la la").unwrap();
    let mut config = Config::default();
    config.index.key = dir.join("index-key");
    config.peer.key = dir.join("peer-key");
    config.peer.known_indexes = dir.join("known-indexes");
    config.peer.downloads = dir.join("downloads");
    config.peer.hash_cache = Default::default();
    config.peer.watch = false;
    let services = Arc::new(Services::default());
    (Shell::new(config, services.clone(), false), services)
}
