//! The words of each command, as one `clap` derive enum ([`Command`]): a variant per
//! entry of the command table ([`super::COMMANDS`], which adds its usage line and help),
//! its arguments as typed fields. What one value cannot say alone (`search`'s terms,
//! `get`'s last word, `limit`'s first word, `serve`'s URL in place of a port) is settled
//! once, right after parsing, by [`Command::settle`].

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::protocol::PeerRef;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// `serve [port] [database-url]`
    Serve(ServeArgs),
    /// `connect [host:port ...]`
    Connect(ConnectArgs),
    /// `register [dir] [port]`
    Register(RegisterArgs),
    /// `share <dir|file>`
    Share(ShareArgs),
    /// `unshare <dir|file>`
    Unshare(UnshareArgs),
    /// `refresh`
    Refresh,
    /// `unregister`
    Unregister,
    /// `search [-r] [-c] [-n N] [--offset N] <terms>`
    Search(SearchArgs),
    /// `files [-n N] [--offset N] <peer>`
    Files(FilesArgs),
    /// `more`: the next page of the last `search` or `files`
    More,
    /// `get [-b] [-r] <file|sha256:HEX|link>... [peer]`
    Get(GetArgs),
    /// `transfers`
    Transfers,
    /// `cancel N`
    Cancel(Number),
    /// `pause N`
    Pause(Number),
    /// `resume N`
    Resume(Number),
    /// `clear`
    Clear,
    /// `uploads`
    Uploads,
    /// `link <file> [peer]`
    Link(LinkArgs),
    /// `limit [up|down] [rate]`
    Limit(LimitArgs),
    /// `ping <peer>`
    Ping(PeerArg),
    /// `peers`
    Peers,
    /// `status`
    Status,
    /// `format [table|json]`
    Format(FormatArgs),
    /// `help [command]`
    Help(HelpArgs),
    /// `quit`
    Quit,
}

/// How results print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Tables and sentences, for people.
    #[default]
    Table,
    /// JSON Lines, for programs (docs/JSON.md).
    Json,
}

impl Format {
    /// Its name, as `format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
        }
    }
}

/// What `serve` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ServeArgs {
    /// port to listen on (0: any free port)
    #[arg(value_name = "port")]
    first: Option<String>,
    /// postgres:// URL of a shared index
    #[arg(value_name = "database")]
    pub database: Option<String>,
    /// The port, once settled (`serve postgres://…` gives none).
    #[arg(skip)]
    pub port: Option<u16>,
}

/// What `connect` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ConnectArgs {
    /// index server host:port
    #[arg(value_name = "addr", num_args = 0..=8)]
    addrs: Vec<String>,
}

impl ConnectArgs {
    /// The addresses as one list (`None`: the config's `[index] server`).
    pub fn addrs(&self) -> Option<String> {
        (!self.addrs.is_empty()).then(|| self.addrs.join(","))
    }
}

/// What `register` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct RegisterArgs {
    /// folder to share
    #[arg(value_name = "dir", value_parser = path)]
    pub dir: Option<PathBuf>,
    /// port of this peer's file server (0: any free port)
    #[arg(value_name = "port", value_parser = port)]
    pub port: Option<u16>,
}

/// What `share` was asked.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ShareArgs {
    /// folder or file to share
    #[arg(value_name = "dir", value_parser = path)]
    pub dir: PathBuf,
}

/// What `unshare` was asked.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UnshareArgs {
    /// shared folder, file name or path
    #[arg(value_name = "what", value_parser = home_expanded)]
    pub what: String,
}

/// What `search` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct SearchArgs {
    /// ping each peer and show its round-trip time
    #[arg(short = 'r')]
    pub rtt: bool,
    /// one row per distinct contents, with its peer count
    #[arg(short = 'c')]
    pub collapse: bool,
    /// at most N rows
    #[arg(short = 'n', value_name = "N", value_parser = rows)]
    rows: Option<u32>,
    /// skip the first N rows
    #[arg(long, value_name = "N", value_parser = offset)]
    offset: Option<u64>,
    /// name pattern, sha256:HEX, >SIZE, <SIZE, artist:TEXT, title:TEXT, album:TEXT, bitrate>=KBITS, length>3m
    #[arg(value_name = "terms", required = true, num_args = 1..)]
    terms: Vec<String>,
    /// The query for the index, settled from the terms.
    #[arg(skip)]
    pub search: crate::protocol::SearchQuery,
    /// The hash and size filters as typed (`>1GB`), for messages.
    #[arg(skip)]
    pub filters: Vec<String>,
}

/// What `files` was asked.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct FilesArgs {
    /// at most N rows
    #[arg(short = 'n', value_name = "N", value_parser = rows)]
    pub rows: Option<u32>,
    /// skip the first N rows
    #[arg(long, value_name = "N", value_parser = offset, default_value_t = 0)]
    pub offset: u64,
    /// a Peer ID, nickname or fingerprint prefix from `search` or `peers`
    #[arg(value_name = "peer", value_parser = peer_ref)]
    pub peer: PeerRef,
}

/// What `get` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct GetArgs {
    /// add to the download queue (see `transfers`)
    #[arg(short = 'b')]
    pub background: bool,
    /// a folder with everything under it
    #[arg(short = 'r')]
    pub recursive: bool,
    /// file names, wildcards, sha256:HEX or links; a last word that names a peer (Peer ID, nickname or fingerprint prefix) is the peer
    #[arg(value_name = "file", required = true, num_args = 1..)]
    pub names: Vec<String>,
    /// Only from this peer (the last word, when it names one).
    #[arg(skip)]
    pub peer: Option<PeerRef>,
}

/// A download's number in `transfers` (`cancel`, `pause`, `resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct Number {
    /// a download's number in `transfers`
    #[arg(value_name = "number", value_parser = number)]
    pub number: u64,
}

/// What `link` was asked.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LinkArgs {
    /// file name
    #[arg(value_name = "file")]
    pub file: String,
    /// only as this peer shares it (Peer ID, nickname or fingerprint prefix)
    #[arg(value_name = "peer", value_parser = peer_ref)]
    pub peer: Option<PeerRef>,
}

/// What `limit` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct LimitArgs {
    /// up or down (neither: both)
    #[arg(value_name = "direction")]
    first: Option<String>,
    /// bytes per second, like 2MiB/s (0: none)
    #[arg(value_name = "rate", value_parser = rate)]
    pub rate: Option<u64>,
    /// Which limit, settled from the first word (`None`: both).
    #[arg(skip)]
    pub direction: Option<Direction>,
}

/// A peer named by a command (`ping`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PeerArg {
    /// a Peer ID, nickname or fingerprint prefix from `search` or `peers`
    #[arg(value_name = "peer", value_parser = peer_ref)]
    pub peer: PeerRef,
}

/// What `format` was asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct FormatArgs {
    /// table or json
    #[arg(value_name = "format")]
    pub format: Option<Format>,
}

/// What `help` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct HelpArgs {
    /// a command
    #[arg(value_name = "command", value_parser = lowercase)]
    pub command: Option<String>,
}

/// Which way a bandwidth limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// What this peer serves.
    Up,
    /// What this process downloads.
    Down,
}

impl Command {
    /// Settle what one value could not say alone; the error is a usage error.
    pub fn settle(self) -> Result<Self> {
        Ok(match self {
            Command::Serve(args) => Command::Serve(args.settle()?),
            Command::Search(args) => Command::Search(args.settle()?),
            Command::Get(args) => Command::Get(args.settle()),
            Command::Limit(args) => Command::Limit(args.settle()?),
            other => other,
        })
    }
}

impl ServeArgs {
    /// `serve postgres://…` is a database without a port.
    fn settle(mut self) -> Result<Self> {
        match (self.first.take(), &self.database) {
            (Some(one), None) if one.contains("://") => self.database = Some(one),
            (Some(one), _) => self.port = Some(port(&one).map_err(Error::Usage)?),
            (None, _) => {}
        }
        Ok(self)
    }
}

impl GetArgs {
    /// `get a.txt b.txt 2`: a last word that names a peer (a Peer ID, a nickname or a
    /// fingerprint prefix; never a name with a dot, a slash or a wildcard) is the peer.
    fn settle(mut self) -> Self {
        if self.names.len() > 1
            && let Some(peer) = self.names.last().and_then(|w| PeerRef::parse(w).ok())
        {
            self.names.pop();
            self.peer = Some(peer);
        }
        self
    }
}

impl LimitArgs {
    /// `limit up 1MiB/s`, or `limit 1MiB/s`: a rate alone names both.
    fn settle(mut self) -> Result<Self> {
        let Some(first) = self.first.take() else {
            return Ok(self);
        };
        match first.to_lowercase().as_str() {
            "up" | "upload" => self.direction = Some(Direction::Up),
            "down" | "download" => self.direction = Some(Direction::Down),
            other if self.rate.is_none() => match crate::limit::parse_rate(other) {
                Ok(rate) => self.rate = Some(rate),
                Err(e) => {
                    return Err(Error::Usage(format!(
                        "{e} (or up or down, then a rate)\nusage: limit [up|down] [rate]"
                    )));
                }
            },
            _ => {
                return Err(Error::Usage(format!(
                    "{first:?} is neither up nor down\nusage: limit [up|down] [rate]"
                )));
            }
        }
        Ok(self)
    }
}

impl SearchArgs {
    /// Turn the terms into a query: name words, `sha256:` and size terms.
    fn settle(mut self) -> Result<Self> {
        self.search.limit = self.rows;
        self.search.offset = self.offset.filter(|&o| o > 0);
        let terms = std::mem::take(&mut self.terms);
        search_terms(&terms, &mut self)?;
        self.terms = terms;
        Ok(self)
    }
}

/// A path as typed: `~` and `~/…` name the home folder, as in a Unix shell.
pub(super) fn expand_home(text: &str) -> String {
    let home = || std::env::var("HOME").ok().filter(|h| !h.is_empty());
    match (text, home()) {
        ("~", Some(home)) => home,
        (rest, Some(home)) if rest.starts_with("~/") => format!("{home}{}", &rest[1..]),
        _ => text.to_owned(),
    }
}

fn path(text: &str) -> std::result::Result<PathBuf, String> {
    Ok(PathBuf::from(expand_home(text)))
}

fn home_expanded(text: &str) -> std::result::Result<String, String> {
    Ok(expand_home(text))
}

fn lowercase(text: &str) -> std::result::Result<String, String> {
    Ok(text.to_lowercase())
}

fn port(text: &str) -> std::result::Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("{text:?} is not a port (0 to 65535)"))
}

fn peer_ref(text: &str) -> std::result::Result<PeerRef, String> {
    PeerRef::parse(text)
}

fn rows(n: &str) -> std::result::Result<u32, String> {
    n.parse::<u32>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "-n takes a number of rows (1 or more)".to_owned())
}

fn offset(n: &str) -> std::result::Result<u64, String> {
    n.parse::<u64>()
        .map_err(|_| format!("--offset takes a number of rows to skip, not {n:?}"))
}

fn number(n: &str) -> std::result::Result<u64, String> {
    n.trim_start_matches('#')
        .parse::<u64>()
        .map_err(|_| format!("{n:?} is not a download number (see `transfers`)"))
}

fn rate(r: &str) -> std::result::Result<u64, String> {
    crate::limit::parse_rate(r).map_err(|e| e.to_string())
}

/// Turn `search`'s terms into a query: name words, `sha256:` and size terms.
fn search_terms(terms: &[String], parsed: &mut SearchArgs) -> Result<()> {
    let mut words = Vec::new();
    let size = |text: &str| {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| Error::Usage(format!("{text:?} is not a size (like 10MB or 1GiB)")))
    };
    // `> 1GB` is `>1GB`: a comparison alone takes the next word as its size.
    let mut joined: Vec<String> = Vec::new();
    let mut terms = terms.iter();
    while let Some(term) = terms.next() {
        match (term.as_str(), terms.clone().next()) {
            (">" | ">=" | "<" | "<=", Some(size)) => {
                joined.push(format!("{term}{size}"));
                terms.next();
            }
            (">" | ">=" | "<" | "<=", None) => {
                return Err(Error::Usage(format!(
                    "{term:?} needs a size after it (like {term}10MB)"
                )));
            }
            _ => joined.push(term.clone()),
        }
    }
    let mut tags = crate::protocol::TagQuery::default();
    for term in &joined {
        // Tag words (`artist:"Daft Punk"`, `bitrate>=256`, `length>3m`): one parser, in
        // the protocol, for every face of `search`.
        if tags.parse_word(term).map_err(Error::Usage)? {
            parsed.filters.push(term.clone());
            continue;
        }
        if term.starts_with(['<', '>']) || term.to_lowercase().starts_with("sha256:") {
            parsed.filters.push(term.clone());
        }
        match term.as_str() {
            term if term.to_lowercase().starts_with("sha256:") => {
                let hex = term[7..].to_lowercase();
                if let Some(problem) = crate::protocol::sha256_prefix_problem(&hex) {
                    return Err(Error::Usage(problem.into()));
                }
                parsed.search.sha256 = Some(hex);
            }
            term if term.starts_with(">=") => parsed.search.min_size = Some(size(&term[2..])?),
            term if term.starts_with('>') => {
                parsed.search.min_size = Some(size(&term[1..])?.saturating_add(1));
            }
            term if term.starts_with("<=") => parsed.search.max_size = Some(size(&term[2..])?),
            term if term.starts_with('<') => {
                parsed.search.max_size = Some(size(&term[1..])?.saturating_sub(1));
            }
            word => words.push(word.to_owned()),
        }
    }
    parsed.search.pattern = words.join(" ");
    parsed.search.tags = (tags != crate::protocol::TagQuery::default()).then(|| Box::new(tags));
    if parsed.search.pattern.is_empty()
        && parsed.search.sha256.is_none()
        && parsed.search.tags.is_none()
    {
        return Err(Error::Usage(
            "search needs a name pattern, sha256:HEX or a tag (artist:, title:, album:, bitrate>=, length>)\nusage: search [-r] [-c] [-n N] [--offset N] <pattern> [sha256:HEX] [>SIZE] [<SIZE] [artist:TEXT] [title:TEXT] [album:TEXT] [bitrate>=KBITS] [length>3m]".into(),
        ));
    }
    Ok(())
}
