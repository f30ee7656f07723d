//! The command table: the one source of truth for parsing, `help`, completion and hints.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// One command of the shell.
#[derive(Debug)]
pub struct Spec {
    /// What the user types.
    pub name: &'static str,
    /// Its arguments, as shown in usage lines and hints.
    pub args: &'static str,
    /// One line for the `help` listing.
    pub summary: &'static str,
    /// The rest of `help <command>`.
    pub details: &'static str,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "serve",
        args: "[port] [postgres://…]",
        summary: "start the index server in this process",
        details: "Binds [index] host from napster.toml on the given port (default [index] port; \
                  0 takes any free port and prints it). This shell then uses it as its index. \
                  The index lives in memory, or in PostgreSQL when a database URL is given (or \
                  [index] database is set): then any number of index servers share one index.",
    },
    Spec {
        name: "connect",
        args: "[host:port ...]",
        summary: "choose the index server(s) and check that one answers",
        details: "Without an address, uses [index] server from napster.toml. \
                  IPv6 addresses go in brackets: connect [::1]:45000. With several index \
                  servers sharing one database, give them all: a peer moves to the next when \
                  its server goes away, and registers again there by itself.",
    },
    Spec {
        name: "register",
        args: "[dir] [port]",
        summary: "share a folder: hash it, serve it, register it with the index",
        details: "Defaults: [peer] dir and [peer] port from napster.toml; port 0 takes any free \
                  port. Prints the Peer ID the index assigned. The files stay in the index while \
                  this process runs.",
    },
    Spec {
        name: "share",
        args: "<dir>",
        summary: "share another folder too",
        details: "Its files appear with names relative to it. Shared folders are watched: added, \
                  changed, renamed and deleted files reach the index by themselves.",
    },
    Spec {
        name: "unshare",
        args: "<dir|file>",
        summary: "withdraw a shared folder, or one file (by its shared name or path)",
        details: "",
    },
    Spec {
        name: "refresh",
        args: "",
        summary: "scan the shared folders now and tell the index what changed",
        details: "Shares follow their folders by themselves (notifications, and a rescan every \
                  [peer] rescan seconds); refresh forces it. Only new or changed files are read; \
                  the rest come from the hash cache.",
    },
    Spec {
        name: "unregister",
        args: "",
        summary: "withdraw this peer's files and stop serving them",
        details: "",
    },
    Spec {
        name: "search",
        args: "[-r] [-c] [-n N] <pattern> [sha256:HEX] [>SIZE] [<SIZE]",
        summary: "find files by name (substring, or * and ? wildcards), hash and size",
        details: "Case-insensitive; the pattern needs at least 2 characters besides * and ?. \
                  sha256:HEX matches a hash prefix (then the pattern may be left out); >10MB, \
                  >=1GiB, <700MB, <=2MiB filter by size. Every peer sharing a match gets a row \
                  with its Peer ID, which `get` takes. -c collapses rows of the same contents \
                  into one with its peer count; -n N asks for at most N rows (default \
                  [shell] results, capped by the index's [index] max_results); -r pings each \
                  peer and shows its round-trip time.",
    },
    Spec {
        name: "files",
        args: "<peer>",
        summary: "list every file a peer shares (browse)",
        details: "The peer is a Peer ID from `search` or `peers`.",
    },
    Spec {
        name: "get",
        args: "[-b] <file> [peer]",
        summary: "download a file from every peer that has it, verified by SHA-256",
        details: "Without a peer, chunks come from all peers sharing the same contents at once, \
                  each chunk checked as it arrives; with a peer, only from that one. Saved in \
                  [peer] downloads; a different file already there is never overwritten (the new \
                  one becomes `name (1).ext`). Ctrl-C stops it and keeps what arrived: `get` \
                  again resumes. -b runs it in the background (see `transfers`).",
    },
    Spec {
        name: "transfers",
        args: "",
        summary: "list background downloads",
        details: "",
    },
    Spec {
        name: "limit",
        args: "[up|down] [rate]",
        summary: "show or set bandwidth limits (e.g. limit up 2MiB/s; 0 = none)",
        details: "Rates are bytes per second: 500kB/s, 2MiB/s, 1000000. The upload limit is shared \
                  by everything this peer serves, the download limit by all downloads. \
                  Defaults: [peer] upload_limit and download_limit.",
    },
    Spec {
        name: "ping",
        args: "<peer>",
        summary: "round-trip time to a peer's file server",
        details: "The peer is a Peer ID from `search` or `peers`.",
    },
    Spec {
        name: "peers",
        args: "",
        summary: "list the peers registered with the index",
        details: "",
    },
    Spec {
        name: "status",
        args: "",
        summary: "what this process serves, shares and talks to",
        details: "",
    },
    Spec {
        name: "help",
        args: "[command]",
        summary: "list the commands, or explain one",
        details: "",
    },
    Spec {
        name: "quit",
        args: "",
        summary: "withdraw shared files, stop serving and leave (also: exit)",
        details: "",
    },
];

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
    /// `search [-r] [-c] [-n N] <terms>`
    Search(SearchArgs),
    /// `files <peer>`
    Files(u64),
    /// `get [-b] <file> [peer]`
    Get(String, Option<u64>, bool),
    /// `transfers`
    Transfers,
    /// `limit [up|down] [rate]`
    Limit(Option<Direction>, Option<u64>),
    /// `ping <peer>`
    Ping(u64),
    /// `peers`
    Peers,
    /// `status`
    Status,
    /// `help [command]`
    Help(Option<String>),
    /// `quit`
    Quit,
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
}

/// Parse `search`'s words: flags first, then name words, `sha256:` and size terms.
fn search_args(args: &[String]) -> Result<SearchArgs> {
    let mut parsed = SearchArgs::default();
    let mut words = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let size = |text: &str| {
            text.trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|_| Error::Usage(format!("{text:?} is not a size (like 10MB or 1GiB)")))
        };
        match arg.as_str() {
            "-r" if words.is_empty() => parsed.rtt = true,
            "-c" if words.is_empty() => parsed.collapse = true,
            "-n" if words.is_empty() => {
                let n = args
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|&n| n > 0);
                parsed.search.limit =
                    Some(n.ok_or_else(|| Error::Usage("-n takes a number of rows".into()))?);
            }
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
    if parsed.search.pattern.is_empty() && parsed.search.sha256.is_none() {
        return Err(usage("search"));
    }
    Ok(parsed)
}

/// Which way a bandwidth limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What this peer serves.
    Up,
    /// What this process downloads.
    Down,
}

fn peer_id(text: &str) -> Result<u64> {
    text.parse::<u64>()
        .map_err(|_| Error::Usage(format!("{text:?} is not a Peer ID (see `search`)")))
}

/// The table entry for `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn usage(name: &str) -> Error {
    let spec = spec(name).expect("usage of a known command");
    Error::Usage(
        format!("usage: {} {}", spec.name, spec.args)
            .trim_end()
            .to_owned(),
    )
}

/// Parse one line; `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Command>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let words = shlex::split(line)
        .ok_or_else(|| Error::Usage("unbalanced quotes in the command line".into()))?;
    let Some((name, args)) = words.split_first() else {
        return Ok(None);
    };
    let name = name.to_lowercase();
    let arity = |min: usize, max: usize| {
        if args.len() < min || args.len() > max {
            Err(usage(&name))
        } else {
            Ok(())
        }
    };
    let port = |text: &str| {
        text.parse::<u16>()
            .map_err(|_| Error::Usage(format!("{text:?} is not a port (0 to 65535)")))
    };
    let command = match name.as_str() {
        "serve" => {
            arity(0, 2)?;
            let (port_arg, database) = match args {
                [] => (None, None),
                [one] if one.contains("://") => (None, Some(one.clone())),
                [one] => (Some(one), None),
                [one, two] => (Some(one), Some(two.clone())),
                _ => return Err(usage(&name)),
            };
            Command::Serve(port_arg.map(|p| port(p)).transpose()?, database)
        }
        "connect" => {
            arity(0, 8)?;
            Command::Connect((!args.is_empty()).then(|| args.join(",")))
        }
        "register" => {
            arity(0, 2)?;
            Command::Register(
                args.first().map(PathBuf::from),
                args.get(1).map(|p| port(p)).transpose()?,
            )
        }
        "refresh" | "rescan" => {
            arity(0, 0)?;
            Command::Refresh
        }
        "share" => {
            arity(1, 1)?;
            Command::Share(PathBuf::from(&args[0]))
        }
        "unshare" => {
            arity(1, 1)?;
            Command::Unshare(args[0].clone())
        }
        "unregister" => {
            arity(0, 0)?;
            Command::Unregister
        }
        "search" => Command::Search(search_args(args)?),
        "files" | "browse" => {
            arity(1, 1)?;
            Command::Files(peer_id(&args[0])?)
        }
        "get" => {
            let (background, args) = flag(args, "-b");
            if args.is_empty() || args.len() > 2 {
                return Err(usage(&name));
            }
            let peer = args.get(1).map(|p| peer_id(p)).transpose()?;
            Command::Get(args[0].clone(), peer, background)
        }
        "transfers" => {
            arity(0, 0)?;
            Command::Transfers
        }
        "limit" => {
            arity(0, 2)?;
            let direction = match args.first().map(|a| a.to_lowercase()).as_deref() {
                None => None,
                Some("up" | "upload") => Some(Direction::Up),
                Some("down" | "download") => Some(Direction::Down),
                Some(_) => return Err(usage(&name)),
            };
            let rate = args
                .get(1)
                .map(|r| crate::limit::parse_rate(r).map_err(|e| Error::Usage(e.to_string())))
                .transpose()?;
            Command::Limit(direction, rate)
        }
        "ping" => {
            arity(1, 1)?;
            Command::Ping(peer_id(&args[0])?)
        }
        "peers" => {
            arity(0, 0)?;
            Command::Peers
        }
        "status" => {
            arity(0, 0)?;
            Command::Status
        }
        "help" | "?" => {
            arity(0, 1)?;
            Command::Help(args.first().map(|a| a.to_lowercase()))
        }
        "quit" | "exit" => {
            arity(0, 0)?;
            Command::Quit
        }
        other => {
            return Err(Error::Usage(format!(
                "unknown command {:?}; type `help` for the list",
                crate::protocol::truncate(other)
            )));
        }
    };
    Ok(Some(command))
}

/// Whether `flag` leads the arguments, and the arguments without it.
fn flag<'a>(args: &'a [String], flag: &str) -> (bool, &'a [String]) {
    match args.split_first() {
        Some((first, rest)) if first == flag => (true, rest),
        _ => (false, args),
    }
}

/// The text of `help` or `help <command>`.
pub fn help(command: Option<&str>) -> Result<String> {
    match command {
        None => {
            // Heads longer than the column get their summary on the next line.
            const COLUMN: usize = 28;
            let mut text = String::from("commands:\n");
            for c in COMMANDS {
                let head = format!("{} {}", c.name, c.args);
                if head.chars().count() > COLUMN {
                    text.push_str(&format!("  {head}\n  {:COLUMN$} {}\n", "", c.summary));
                } else {
                    text.push_str(&format!("  {head:<COLUMN$} {}\n", c.summary));
                }
            }
            text.push_str("type `help <command>` for more");
            Ok(text)
        }
        Some(name) => {
            let name = if name == "exit" { "quit" } else { name };
            let c = spec(name).ok_or_else(|| {
                Error::Usage(format!("no command {name:?}; type `help` for the list"))
            })?;
            let mut text = format!("usage: {} {}\n{}", c.name, c.args, c.summary);
            if !c.details.is_empty() {
                text.push_str(".\n");
                text.push_str(c.details);
            }
            Ok(text)
        }
    }
}
