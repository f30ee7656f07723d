//! The words of each command: what `clap` parses them into ([`Command`]), the `clap`
//! arguments each table entry in [`super::commands`] declares, and the conversion.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, value_parser};

use crate::error::{Error, Result};
use crate::protocol::PeerRef;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `serve [port] [database-url]`
    Serve(Option<u16>, Option<String>),
    /// `connect [host:port]`
    Connect(Option<String>),
    /// `register [dir] [port]`
    Register(Option<PathBuf>, Option<u16>),
    /// `unregister`
    Unregister,
    /// `refresh`
    Refresh,
    /// `share <dir>`
    Share(PathBuf),
    /// `unshare <dir|file>`
    Unshare(String),
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
    Cancel(u64),
    /// `pause N`
    Pause(u64),
    /// `resume N`
    Resume(u64),
    /// `clear`
    Clear,
    /// `uploads`
    Uploads,
    /// `link <file> [peer]`
    Link(String, Option<PeerRef>),
    /// `limit [up|down] [rate]`
    Limit(Option<Direction>, Option<u64>),
    /// `ping <peer>`
    Ping(PeerRef),
    /// `peers`
    Peers,
    /// `status`
    Status,
    /// `format [table|json]`
    Format(Option<Format>),
    /// `help [command]`
    Help(Option<String>),
    /// `quit`
    Quit,
}

/// How results print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Tables and sentences, for people.
    #[default]
    Table,
    /// JSON Lines, for programs (docs/JSON.md).
    Json,
}

/// What `search` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchArgs {
    /// The query for the index.
    pub search: crate::protocol::SearchQuery,
    /// Ping each peer.
    pub rtt: bool,
    /// One row per distinct contents.
    pub collapse: bool,
    /// The hash and size filters as typed (`>1GB`), for messages.
    pub filters: Vec<String>,
}

/// What `files` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesArgs {
    /// Whose files.
    pub peer: PeerRef,
    /// At most this many rows (paging through the index's cap); one index page without.
    pub rows: Option<u32>,
    /// Rows to skip first.
    pub offset: u64,
}

/// What `get` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetArgs {
    /// File names, wildcards, `sha256:` prefixes, links or (with `-r`) folders.
    pub names: Vec<String>,
    /// Only from this peer.
    pub peer: Option<PeerRef>,
    /// Into the queue (`-b`).
    pub background: bool,
    /// Folders with everything under them (`-r`).
    pub recursive: bool,
}

/// Which way a bandwidth limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What this peer serves.
    Up,
    /// What this process downloads.
    Down,
}

fn positional(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name).help(help)
}

pub(super) fn no_params() -> Vec<Arg> {
    Vec::new()
}

pub(super) fn serve_params() -> Vec<Arg> {
    vec![
        positional("port", "port to listen on (0: any free port)"),
        positional("database", "postgres:// URL of a shared index"),
    ]
}

pub(super) fn connect_params() -> Vec<Arg> {
    vec![
        positional("addr", "index server host:port")
            .num_args(0..=8)
            .action(ArgAction::Append),
    ]
}

pub(super) fn register_params() -> Vec<Arg> {
    vec![
        positional("dir", "folder to share").value_parser(path),
        positional("port", "port of this peer's file server (0: any free port)").value_parser(port),
    ]
}

pub(super) fn share_params() -> Vec<Arg> {
    vec![
        positional("dir", "folder or file to share")
            .required(true)
            .value_parser(path),
    ]
}

pub(super) fn unshare_params() -> Vec<Arg> {
    vec![positional("what", "shared folder, file name or path").required(true)]
}

pub(super) fn search_params() -> Vec<Arg> {
    vec![
        Arg::new("rtt")
            .short('r')
            .action(ArgAction::SetTrue)
            .help("ping each peer and show its round-trip time"),
        Arg::new("collapse")
            .short('c')
            .action(ArgAction::SetTrue)
            .help("one row per distinct contents, with its peer count"),
        Arg::new("rows")
            .short('n')
            .value_name("N")
            .value_parser(|n: &str| {
                n.parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("-n takes a number of rows (1 or more)")
            })
            .help("at most N rows"),
        offset_param(),
        Arg::new("terms")
            .help("name pattern, sha256:HEX, >SIZE, <SIZE, artist:TEXT, title:TEXT, album:TEXT, bitrate>=KBITS, length>3m")
            .num_args(1..)
            .required(true),
    ]
}

/// `--offset N`: rows to skip.
fn offset_param() -> Arg {
    Arg::new("offset")
        .long("offset")
        .value_name("N")
        .value_parser(|n: &str| {
            n.parse::<u64>()
                .map_err(|_| format!("--offset takes a number of rows to skip, not {n:?}"))
        })
        .help("skip the first N rows")
}

pub(super) fn files_params() -> Vec<Arg> {
    let mut params = search_params();
    params.retain(|a| a.get_id() == "rows" || a.get_id() == "offset");
    params.extend(peer_params());
    params
}

pub(super) fn peer_params() -> Vec<Arg> {
    vec![
        positional(
            "peer",
            "a Peer ID, nickname or fingerprint prefix from `search` or `peers`",
        )
        .required(true)
        .value_parser(peer_ref),
    ]
}

pub(super) fn get_params() -> Vec<Arg> {
    vec![
        Arg::new("background")
            .short('b')
            .action(ArgAction::SetTrue)
            .help("add to the download queue (see `transfers`)"),
        Arg::new("recursive")
            .short('r')
            .action(ArgAction::SetTrue)
            .help("a folder with everything under it"),
        Arg::new("file")
            .help("file names, wildcards, sha256:HEX or links; a last word that names a peer (Peer ID, nickname or fingerprint prefix) is the peer")
            .num_args(1..)
            .required(true),
    ]
}

pub(super) fn number_params() -> Vec<Arg> {
    vec![
        positional("number", "a download's number in `transfers`")
            .required(true)
            .value_parser(|n: &str| {
                n.trim_start_matches('#')
                    .parse::<u64>()
                    .map_err(|_| format!("{n:?} is not a download number (see `transfers`)"))
            }),
    ]
}

pub(super) fn link_params() -> Vec<Arg> {
    vec![
        Arg::new("file").help("file name").required(true),
        Arg::new("peer")
            .help("only as this peer shares it (Peer ID, nickname or fingerprint prefix)")
            .value_parser(peer_ref),
    ]
}

pub(super) fn limit_params() -> Vec<Arg> {
    vec![
        Arg::new("direction").help("up or down (neither: both)"),
        Arg::new("rate")
            .help("bytes per second, like 2MiB/s (0: none)")
            .value_parser(|r: &str| crate::limit::parse_rate(r).map_err(|e| e.to_string())),
    ]
}

pub(super) fn format_params() -> Vec<Arg> {
    vec![Arg::new("format").value_parser(value_parser!(Format))]
}

pub(super) fn help_params() -> Vec<Arg> {
    vec![Arg::new("command").help("a command")]
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

fn port(text: &str) -> std::result::Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("{text:?} is not a port (0 to 65535)"))
}

fn peer_ref(text: &str) -> std::result::Result<PeerRef, String> {
    PeerRef::parse(text)
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
            "search needs a name pattern, sha256:HEX or a tag (artist:, title:, album:, bitrate>=, length>)\nusage: search [-r] [-c] [-n N] <pattern> [sha256:HEX] [>SIZE] [<SIZE] [artist:TEXT] [title:TEXT] [album:TEXT] [bitrate>=KBITS] [length>3m]".into(),
        ));
    }
    Ok(())
}

/// The command `name` (a table name) with its parsed arguments.
pub fn from_matches(name: &str, m: &ArgMatches) -> Result<Command> {
    let text = |id: &str| m.get_one::<String>(id).cloned();
    let command = match name {
        "serve" => {
            let (port_arg, database) = match (text("port"), text("database")) {
                (Some(one), None) if one.contains("://") => (None, Some(one)),
                (one, two) => (one, two),
            };
            let port = port_arg
                .map(|p| port(&p).map_err(Error::Usage))
                .transpose()?;
            Command::Serve(port, database)
        }
        "connect" => {
            let addrs: Vec<String> = m
                .get_many::<String>("addr")
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            Command::Connect((!addrs.is_empty()).then(|| addrs.join(",")))
        }
        "register" => Command::Register(
            m.get_one::<PathBuf>("dir").cloned(),
            m.get_one::<u16>("port").copied(),
        ),
        "refresh" => Command::Refresh,
        "share" => Command::Share(m.get_one::<PathBuf>("dir").cloned().unwrap_or_default()),
        "unshare" => Command::Unshare(expand_home(&text("what").unwrap_or_default())),
        "unregister" => Command::Unregister,
        "search" => {
            let mut parsed = SearchArgs {
                rtt: m.get_flag("rtt"),
                collapse: m.get_flag("collapse"),
                ..SearchArgs::default()
            };
            parsed.search.limit = m.get_one::<u32>("rows").copied();
            parsed.search.offset = m.get_one::<u64>("offset").copied().filter(|&o| o > 0);
            let terms: Vec<String> = m
                .get_many::<String>("terms")
                .map(|t| t.cloned().collect())
                .unwrap_or_default();
            search_terms(&terms, &mut parsed)?;
            Command::Search(parsed)
        }
        "files" => Command::Files(FilesArgs {
            peer: m.get_one::<PeerRef>("peer").expect("required").clone(),
            rows: m.get_one::<u32>("rows").copied(),
            offset: m.get_one::<u64>("offset").copied().unwrap_or(0),
        }),
        "more" => Command::More,
        "get" => {
            let mut names: Vec<String> = m
                .get_many::<String>("file")
                .map(|t| t.cloned().collect())
                .unwrap_or_default();
            // `get a.txt b.txt 2`: a last word that names a peer (a Peer ID, a
            // nickname or a fingerprint prefix; never a name with a dot, a slash or a
            // wildcard) is the peer.
            let peer = match names.as_slice() {
                [_, .., last] => PeerRef::parse(last).ok(),
                _ => None,
            };
            if peer.is_some() {
                names.pop();
            }
            Command::Get(GetArgs {
                names,
                peer,
                background: m.get_flag("background"),
                recursive: m.get_flag("recursive"),
            })
        }
        "transfers" => Command::Transfers,
        "cancel" => Command::Cancel(*m.get_one::<u64>("number").expect("required")),
        "pause" => Command::Pause(*m.get_one::<u64>("number").expect("required")),
        "resume" => Command::Resume(*m.get_one::<u64>("number").expect("required")),
        "clear" => Command::Clear,
        "uploads" => Command::Uploads,
        "link" => Command::Link(
            text("file").unwrap_or_default(),
            m.get_one::<PeerRef>("peer").cloned(),
        ),
        "limit" => {
            let rate = m.get_one::<u64>("rate").copied();
            match text("direction").map(|d| d.to_lowercase()).as_deref() {
                Some("up" | "upload") => Command::Limit(Some(Direction::Up), rate),
                Some("down" | "download") => Command::Limit(Some(Direction::Down), rate),
                None => Command::Limit(None, rate),
                // `limit 1MiB/s`: no direction names both.
                Some(other) if rate.is_none() => match crate::limit::parse_rate(other) {
                    Ok(rate) => Command::Limit(None, Some(rate)),
                    Err(e) => {
                        return Err(Error::Usage(format!(
                            "{e} (or up or down, then a rate)\nusage: limit [up|down] [rate]"
                        )));
                    }
                },
                Some(other) => {
                    return Err(Error::Usage(format!(
                        "{other:?} is neither up nor down\nusage: limit [up|down] [rate]"
                    )));
                }
            }
        }
        "ping" => Command::Ping(m.get_one::<PeerRef>("peer").expect("required").clone()),
        "peers" => Command::Peers,
        "status" => Command::Status,
        "format" => Command::Format(m.get_one::<Format>("format").copied()),
        "help" => Command::Help(text("command").map(|c| c.to_lowercase())),
        "quit" => Command::Quit,
        other => return Err(Error::Usage(format!("unknown command {other:?}"))),
    };
    Ok(command)
}
