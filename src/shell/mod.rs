//! The shell: runs commands typed at a `rustyline` prompt or piped on stdin, and owns the
//! background services (index server, sharing, background downloads) of this process.
//!
//! A command is its table entry (`commands`: usage and help) with its variant of the
//! `clap` enum (`args`), its handler (returning a typed [`outcome::Outcome`]) and its
//! README line. One presenter (`present`) turns outcomes into text or JSON records.
//! `app` builds what the handlers use from `napster.toml`; [`repl`] reads lines and
//! prints.

/// Print to stdout; a closed stdout (`napster | head -1`) is not an error worth dying
/// for, so it is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod app;
pub mod cli;
pub mod commands;
pub mod present;
pub mod services;
mod terminal;

pub use terminal::repl;

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
pub use app::parse_addrs;
use commands::outcome::{CommandHelp, Help, Outcome};
use commands::{Command, Format};
use parking_lot::Mutex;
use services::Services;

/// The state behind the prompt.
pub struct Shell {
    config: Config,
    services: Arc<Services>,
    index: Option<Vec<SocketAddr>>,
    client: Option<IndexClient>,
    /// Why the last `connect` failed, until one succeeds: nothing then falls back to
    /// another index.
    connect_failed: Option<String>,
    seen: Arc<Mutex<terminal::editor::Seen>>,
    /// How long work shows its progress.
    pub progress: present::progress::Progress,
    upload: Arc<RateLimit>,
    download: Arc<RateLimit>,
    cache: Option<Arc<Mutex<peer::cache::HashCache>>>,
    /// How results print.
    pub format: Format,
    /// What `more` asks for: the next page of the last `search` or `files`.
    next_page: Option<commands::handlers::NextPage>,
    identity: Mutex<Option<crate::identity::Identity>>,
    /// The key file, locked while this process shares with it: two processes with one
    /// key are one peer, and the second would silently replace the first's files.
    key_lock: Option<std::fs::File>,
    /// The one source of index keys (see `pins`), shared with what runs in the
    /// background.
    known: crate::client::KnownIndexes,
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
        let progress = present::progress::Progress {
            bars: show_progress,
            records: false,
        };
        let (up, down) = config.rate_limits();
        Shell {
            upload: Arc::new(RateLimit::new(up)),
            download: Arc::new(RateLimit::new(down)),
            cache: None,
            identity: Mutex::default(),
            key_lock: None,
            known: crate::client::KnownIndexes::new(&config.peer.known_indexes),
            config,
            services,
            index: None,
            client: None,
            connect_failed: None,
            seen: Arc::default(),
            progress,
            format: Format::default(),
            next_page: None,
        }
    }

    /// File names and Peer IDs of the last results, for completion.
    fn seen(&self) -> Arc<Mutex<terminal::editor::Seen>> {
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

    /// Run one parsed command; returns what it did, for the presenter.
    pub async fn execute(&mut self, command: Command, cancel: Cancel) -> Result<Outcome> {
        Ok(match command {
            Command::Serve(args) => self.serve(args.port, args.database).await?,
            Command::Connect(args) => self.connect(args.addrs()).await?,
            Command::Register(args) => self.register(args.dir, args.port, cancel).await?,
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
            Command::Help(args) => Outcome::Help(help(args.command.as_deref())?),
            Command::Format(args) => {
                if let Some(format) = args.format {
                    self.format = format;
                }
                Outcome::Format(self.format)
            }
            Command::Quit => Outcome::Quit,
        })
    }
}

/// `help`: every command, or the one named (by name or alias).
pub fn help(topic: Option<&str>) -> Result<Help> {
    let about = |c: &'static commands::Spec| CommandHelp {
        name: c.name,
        args: c.args,
        summary: c.summary,
        details: c.details,
        aliases: c.aliases,
    };
    match topic {
        None => Ok(Help::List(commands::COMMANDS.iter().map(about).collect())),
        Some(name) => commands::spec(name)
            .map(about)
            .map(Help::One)
            .ok_or_else(|| {
                crate::error::Error::Usage(format!(
                    "no command {name:?}{}; type `help` for the list",
                    commands::did_you_mean(name)
                ))
            }),
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
